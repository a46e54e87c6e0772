"""``interactive-slurm setup``: from nothing on a laptop to ``ssh slurm-cpu`` and VS Code.

Steps, each skipped when already done (running setup again upgrades in place and changes
nothing else)::

    connect  asyncssh to the login node: key, password, keyboard-interactive (2FA) on the terminal
    key      use ~/.ssh/id_ed25519 (or --identity), or make an ed25519 key (once logged in)
    probe    one round trip (probe.py): the cluster's Python 3.9+ (found by itself: python3,
             python3.13 ... python3.9, module load), the home directory's free space and inodes
             (a scratch folder for VS Code's server when they are tight), the key, the install
    access   append the public key to the cluster's authorized_keys once
    install  wheels rebuilt here -> SFTP -> a venv on the login node made with that Python
             (installs.py; --no-index)
    trust    the cluster's @cert-authority line, read over this verified connection
    files    the managed block in ~/.ssh/config, the cluster's known_hosts, VS Code settings
             (with serverInstallPath when VS Code's server goes elsewhere than home), the
             [clusters.NAME] table in config.toml (each: backup, atomic write, 0600)

``--dry-run`` connects and looks, changes nothing on either side, and prints every local change
as a diff. ``uninstall`` removes exactly what setup added.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import platform
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interactive_slurm import __version__
from interactive_slurm.base import defaults, folders, fsutil, sshhosts
from interactive_slurm.base.errors import ConfigError
from interactive_slurm.base.runner import Runner
from interactive_slurm.install import installs
from interactive_slurm.laptop import (
    changes,
    clusters,
    jsonc,
    probe,
    remote_scripts,
    sshconfig,
    vscode,
    wheels,
)
from interactive_slurm.laptop.clusters import Cluster
from interactive_slurm.laptop.connection import Login, Target, Terminal
from interactive_slurm.laptop.probe import Probe as Probe  # what setup learns, for its callers
from interactive_slurm.laptop.probe import SetupError, check_path, printable
from interactive_slurm.laptop.probe import check_probe as check_probe
from interactive_slurm.login import profiles

DEFAULT_INSTALL = "~/.local/share/interactive-slurm"
DEFAULT_NAME = "slurm"
VSCODE_CONNECT_TIMEOUT = defaults.WAIT_TIMEOUT  # the proxy's default wait for a queued job
_CA_LINE = re.compile(rf"^{re.escape(sshhosts.CA_MARKER)} {re.escape(sshhosts.CA_PATTERN)} "
                      r"(ssh-ed25519|ecdsa-sha2-nistp\d+|ssh-rsa) ([A-Za-z0-9+/]+={0,3})"
                      r"( [\x20-\x7e]{0,200})?$")  # a comment: printable ASCII only


@dataclass(frozen=True)
class Request:
    login: str
    user: str
    identity: Path
    port: int = 22
    jump: str | None = None
    name: str = DEFAULT_NAME
    hosts: tuple[tuple[str, str], ...] | None = None
    profile: str | None = None
    install_dir: str = DEFAULT_INSTALL
    python: str | None = None  # None: the probe looks for Python 3.9+ itself
    vscode_server_dir: str | None = None  # on the cluster; "~": VS Code's default (home)
    ssh_config: Path = field(default_factory=lambda: Path.home() / ".ssh" / "config")
    vscode: bool = True
    dry_run: bool = False
    ask_passphrase: bool = True  # for a new key, on a terminal (else the key has none)
    system: str = field(default_factory=platform.system)

    def __post_init__(self) -> None:
        clusters.check_login(self.name, self.login, self.user, self.port, self.jump)
        if not re.match(r"^[~/][\w./~+-]*$", self.install_dir):
            raise ConfigError(f"--install-dir {self.install_dir!r}: expected an absolute or ~/ path")
        if self.python is not None and not re.match(r"^[\w./+][\w./+-]*$", self.python):
            raise ConfigError(f"--python {self.python!r}: expected a command name or path")
        if self.vscode_server_dir is not None:
            if not self.vscode:
                raise ConfigError("--vscode-server-dir goes with VS Code's settings, not with --no-vscode")
            if self.vscode_server_dir != "~":
                try:
                    check_path(self.vscode_server_dir, "--vscode-server-dir", "the command line")
                except SetupError:
                    raise ConfigError(
                        f"--vscode-server-dir {printable(repr(self.vscode_server_dir))}: expected an "
                        "absolute path on the cluster (letters, digits and ._+@,/-, no '..'), "
                        "or ~ for your home there") from None


@dataclass
class Report:
    """What setup did (or, with --dry-run, would do)."""

    lines: list[str] = field(default_factory=list)
    diffs: list[str] = field(default_factory=list)
    manual: list[str] = field(default_factory=list)
    hosts: tuple[str, ...] = ()

    def add(self, line: str) -> None:
        self.lines.append(line)


# --- the key ----------------------------------------------------------------------------------

def public_key_line(identity: Path) -> str:
    pub = identity.with_name(identity.name + ".pub")
    try:
        text = pub.read_text().strip()
    except FileNotFoundError as exc:
        raise SetupError(f"{pub}: missing (the public half of {identity})") from exc
    parts = text.split()
    if len(parts) < 2:
        raise SetupError(f"{pub}: not an OpenSSH public key")
    try:
        base64.b64decode(parts[1], validate=True)
    except ValueError as exc:
        raise SetupError(f"{pub}: not an OpenSSH public key") from exc
    return text


def make_key(identity: Path, passphrase: str | None) -> None:
    """An ed25519 key pair at ``identity`` (0600) and ``.pub`` (0644), ~/.ssh made 0700."""
    import getpass
    import socket

    import asyncssh

    changes.private_dir(identity.parent)
    key = asyncssh.generate_private_key(
        "ssh-ed25519", comment=f"{getpass.getuser()}@{socket.gethostname()} (interactive-slurm)"
    )
    try:  # both exported before a file is made: a failure leaves no empty key file behind
        private = key.export_private_key("openssh", passphrase or None)
        public = key.export_public_key("openssh")
    except (asyncssh.KeyExportError, ValueError) as exc:
        raise SetupError(f"cannot write the new key {identity}: {exc}"
                         + ("; install it with pip install 'asyncssh[bcrypt]'"
                            if "bcrypt" in str(exc) else "")) from exc
    fd = os.open(identity, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private)
    os.chmod(identity, 0o600)
    identity.with_name(identity.name + ".pub").write_bytes(public)


# --- local paths --------------------------------------------------------------------------------

def known_hosts_file(name: str) -> Path:
    return Path(folders.config_dir()) / f"known_hosts-{name}"


def control_dir() -> Path:
    return Path.home() / ".ssh" / "interactive-slurm-cm"


def check_ca_line(text: str, where: str) -> str:
    line = text.strip()
    if not _CA_LINE.match(line):
        raise SetupError(f"{where}: `interactive-slurm trust` printed {line[:120]!r}, not a CA line")
    return line


# --- planning the local files -------------------------------------------------------------------

def _hosts_for(req: Request, set_up: tuple[Cluster, ...]) -> tuple[tuple[str, str], ...]:
    if req.hosts:
        return req.hosts
    existing = clusters.named(set_up, req.name)
    if existing and existing.hosts:
        return tuple(zip(existing.hosts, sshconfig.KINDS))
    return sshconfig.default_hosts(req.name)


def plan_files(req: Request, set_up: tuple[Cluster, ...], *, tool: str, install_root: str,
               ca_line: str | None, report: Report, python: str = "",
               server_dir: str | None = None) -> list[changes.Change]:
    """The local files after setting up ``req``; ``set_up``: the clusters set up before;
    ``python``: the install's interpreter on the cluster; ``server_dir``: the folder for VS
    Code's server there (Remote-SSH's ``serverInstallPath``; None: VS Code's default)."""
    hosts = _hosts_for(req, set_up)
    old = clusters.named(set_up, req.name)
    previous_server = old.vscode_server if old else ""
    report.hosts = tuple(h for h, _ in hosts)
    known = known_hosts_file(req.name)
    block = sshconfig.Block(
        name=req.name, login=req.login, user=req.user, port=req.port, jump=req.jump,
        identity=str(req.identity), tool=tool, known_hosts=str(known),
        control_dir=str(control_dir()), hosts=hosts, profile=req.profile,
        windows=req.system == "Windows",
    )
    out: list[changes.Change] = []
    # The managed known_hosts: exactly the cluster's CA line (ours alone, like StrictModes).
    fsutil.check_secure_if_exists(known)
    ca_text = f"{ca_line}\n" if ca_line else "<the @cert-authority line read from the cluster>\n"
    out.append(changes.Change(known, changes.read(known), ca_text, backup=False))
    # ~/.ssh/config
    before = changes.read(req.ssh_config)
    text = before or ""
    clash = sshconfig.clashes(text, req.name, [name for h, _ in hosts
                                               for name in (h, h + sshhosts.PERSISTENT_SUFFIX)])
    if clash:
        raise SetupError(
            f"{req.ssh_config}: Host {', '.join(clash)} is already defined outside setup's block; "
            "pick other names with --hosts or --name, or remove those entries"
        )
    after = sshconfig.put(text, sshconfig.render(block), req.name)
    out.append(changes.Change(req.ssh_config, before, after))
    # VS Code
    vscode_files: list[str] = []
    vscode_globals: list[str] = []
    vscode_before: dict[str, dict[str, Any]] = {}
    if req.vscode:
        for product, settings in vscode.settings_files(req.system, Path.home(), os.environ):
            current = changes.read(settings)
            names = [h for h, _ in hosts]
            try:
                new = vscode.plan(current or "", names, VSCODE_CONNECT_TIMEOUT,
                                  server_dir=server_dir, previous_server_dir=previous_server or None)
            except vscode.VSCodeSettingsError as exc:
                snippet = vscode.manual_snippet(names, VSCODE_CONNECT_TIMEOUT, server_dir=server_dir)
                report.manual.append(
                    f"{product}: {settings} could not be edited safely ({exc}); left as it is. "
                    f"Add by hand:\n{snippet}"
                )
                continue
            for host, value in vscode.own_server_paths(current or "", names, server_dir,
                                                      previous_server or None).items():
                report.manual.append(
                    f"{product}: {settings} sets {vscode.SERVER_INSTALL_PATH} for {host} to "
                    f"{value!r} already; left as it is (remove it there to let setup set it)")
            vscode_files.append(str(settings))
            if jsonc.get(current or "", [vscode.SHOW_LOGIN_TERMINAL]) is jsonc.MISSING:
                vscode_globals.append(str(settings))
            replaced = vscode.replaced(current or "", VSCODE_CONNECT_TIMEOUT)
            if replaced:
                vscode_before[str(settings)] = replaced
            out.append(changes.Change(settings, current, new))
    # config.toml: what was set up
    entry: dict[str, Any] = {
        "login": req.login, "user": req.user, "port": req.port, "jump": req.jump or "",
        "identity": str(req.identity), "install": install_root,
        "hosts": [h for h, _ in hosts], "profile": req.profile or "",
        "ssh_config": str(req.ssh_config), "known_hosts": str(known),
        "vscode": sorted(set(vscode_files) | set(old.vscode if old else ())),
        "vscode_globals": sorted(set(vscode_globals) | set(old.vscode_globals if old else ())),
    }
    if python:
        entry["python"] = python
    if server_dir and req.vscode:
        entry["vscode_server"] = server_dir
    elif previous_server and not req.vscode:  # --no-vscode: what an earlier run wrote stays
        entry["vscode_server"] = previous_server
    before_all = {**vscode_before, **{k: dict(v) for k, v in (old.vscode_before if old else {}).items()}}
    if before_all:  # the first value seen stays: later runs see setup's own
        entry["vscode_before"] = before_all
    out.append(config_change(lambda data: data.setdefault("clusters", {}).__setitem__(req.name, entry)))
    return out


def config_change(edit: Callable[[dict[str, Any]], None]) -> changes.Change:
    """config.toml after ``edit``; a file left with no settings at all is removed."""
    path, before, after = clusters.render_update(edit)
    return changes.Change(path, before, after or None)


def apply_all(planned: list[changes.Change], report: Report) -> None:
    for change in planned:
        backup = change.apply()
        if change.changed:
            verb = "removed" if change.after is None else "wrote"
            report.add(f"{verb} {change.path}" + (f" (backup: {backup.name})" if backup else ""))


# --- the cluster side ---------------------------------------------------------------------------

async def _json(login: Login, argv: list[str], *, input: str | None = None) -> dict[str, Any]:
    result = await login.run(argv, input=input, check=False)
    out = str(result.stdout or "").strip().splitlines()
    try:
        data: dict[str, Any] = json.loads(out[-1]) if out else {}
    except ValueError:
        data = {}
    if result.exit_status != 0 or not data or "error" in data:
        detail = data.get("error") or str(result.stderr or result.stdout or "no output").strip()
        last = detail.splitlines()[-1] if detail else "failed"
        raise SetupError(f"on {login.target.host}: {printable(last)}")
    return data


async def install(login: Login, python: str, root: str, vid: str, wheel_files: list[Path]) -> None:
    """Upload the wheels and install them with ``python`` (the probe's choice): its venv is the
    install, so the launcher, the proxy and every session run with that interpreter."""
    remote_wheels = f"{root}/wheels/{vid}"
    await login.upload(wheel_files, remote_wheels)
    source = Path(installs.__file__).read_text()
    await _json(login, [python, "-", "install", root, remote_wheels, vid], input=source)


def build_wheels(runner: Runner, dest: Path, py: tuple[int, int]) -> tuple[str, list[Path]]:
    built = wheels.build_all(runner, dest, py)
    files = [b.path for b in built]
    return installs.version_id(__version__, files), files


def run(req: Request, term: Terminal, runner: Runner) -> Report:
    return asyncio.run(_run(req, term, runner))


async def _run(req: Request, term: Terminal, runner: Runner) -> Report:
    report = Report()
    set_up = clusters.load()
    with tempfile.TemporaryDirectory(prefix="interactive-slurm-wheels-") as tmp:
        login = await Login.open(Target(req.login, req.port, req.user, req.identity, req.jump), term,
                                 dry_run=req.dry_run)
        try:
            # A new key only once the login node is verified and we are in: a refused host or
            # a failed login leaves the laptop as it was.
            if not req.identity.exists():
                if req.dry_run:
                    report.add(f"would make an ed25519 key {req.identity}")
                else:
                    passphrase = None
                    if term.interactive and req.ask_passphrase:
                        passphrase = term.ask(
                            f"Passphrase for the new key {req.identity} (empty for none): ", secret=True)
                    make_key(req.identity, passphrase)
                    report.add(f"made an ed25519 key {req.identity}")
            pub = public_key_line(req.identity) if req.identity.exists() else "x AAAA"
            found = await probe.run(login, where=req.login, install_dir=req.install_dir, pub=pub,
                                    python=req.python, vscode_dir=req.vscode_server_dir)
            term.say(probe.choice(found))  # now: a later step that fails is explained by it
            server = probe.ServerDir(None)
            if req.vscode:
                earlier = clusters.named(set_up, req.name)
                server = probe.server_dir(found, req.vscode_server_dir,
                                          earlier.vscode_server if earlier else "", req.login)
                report.lines += server.said
                report.manual += server.warnings
            # The wheels depend on the cluster's Python; their digest names the install.
            vid, wheel_files = build_wheels(runner, Path(tmp), found.python)
            tool = str(Path(found.root) / "current" / "bin" / "interactive-slurm")
            if req.dry_run:
                if not found.authorized:
                    report.add(f"would add {req.identity}.pub to {req.login}:~/.ssh/authorized_keys")
                if found.current != vid:  # current only ever names a complete install
                    report.add(f"would install interactive-slurm {vid} into {req.login}:{found.root}")
                if req.profile and found.current:  # the cluster's profiles, as the real run
                    await login.run([tool, "profiles", req.profile])
                elif req.profile and req.profile not in (shipped := sorted(
                        p.stem for p in profiles.SHIPPED_DIR.glob("*.toml"))):
                    raise SetupError(f"--profile {req.profile}: no such profile (shipped: "
                                     f"{', '.join(shipped)}; a profile of your own on the "
                                     "cluster is found once it is installed)")
                ca_line = None
            else:
                if not found.authorized:
                    await _json(login, [found.executable, "-c", remote_scripts.AUTHORIZE, pub])
                    report.add(f"added your key to {req.login}:~/.ssh/authorized_keys")
                if found.current != vid:  # current only ever names a complete install
                    await install(login, found.executable, found.root, vid, wheel_files)
                    report.add(f"installed interactive-slurm {vid} in {req.login}:{found.root}")
                else:
                    report.add(f"interactive-slurm {vid} already installed in {req.login}:{found.root}")
                if req.profile:
                    await login.run([tool, "profiles", req.profile])  # names the valid ones if not
                trust = await login.run([tool, "trust"])
                ca_line = check_ca_line(str(trust.stdout), f"{req.login}:{tool}")
        finally:
            await login.close()
    planned = plan_files(req, set_up, tool=tool, install_root=found.root, ca_line=ca_line,
                         report=report, python=found.executable, server_dir=server.path)
    if req.dry_run:
        report.diffs += [c.diff() for c in planned if c.changed]
        return report
    changes.private_dir(control_dir())
    apply_all(planned, report)
    return report


# --- uninstall and listing ----------------------------------------------------------------------

def plan_uninstall(name: str) -> tuple[Cluster, list[changes.Change]]:
    set_up = clusters.load()
    cluster = clusters.named(set_up, name)
    if cluster is None:
        known = ", ".join(c.name for c in set_up) or "none"
        raise SetupError(f"no cluster {name!r} was set up here (set up: {known})")
    out: list[changes.Change] = []
    if cluster.ssh_config:
        path = Path(cluster.ssh_config)
        before = changes.read(path)
        if before is not None:
            after: str | None = sshconfig.remove(before, name)
            out.append(changes.Change(path, before, after if after else None))
    if cluster.known_hosts:
        path = Path(cluster.known_hosts)
        out.append(changes.Change(path, changes.read(path), None, backup=False))
    others = [c for c in set_up if c.name != name]
    handed: dict[str, dict[str, dict[str, Any]]] = {c.name: {} for c in others}
    for settings in cluster.vscode:
        path = Path(settings)
        before = changes.read(path)
        if before is None:
            continue
        shared = [c for c in others if settings in c.vscode]
        restore = cluster.vscode_before.get(settings, {})
        remove_globals = (settings in cluster.vscode_globals or bool(restore)) and not shared
        if shared and restore:  # still needed by another cluster: it puts them back later
            handed[shared[0].name][settings] = dict(restore)
        try:
            new = vscode.unplan(before, list(cluster.hosts), remove_globals=remove_globals,
                                connect_timeout=VSCODE_CONNECT_TIMEOUT, restore=restore,
                                server_dir=cluster.vscode_server or None)
        except vscode.VSCodeSettingsError:
            continue  # a file the user broke since: left alone, said by the caller
        out.append(changes.Change(path, before, new))

    def drop(data: dict[str, Any]) -> None:
        tables = data.get("clusters", {})
        tables.pop(name, None)
        for other, files in handed.items():
            if files and other in tables:
                before = tables[other].setdefault("vscode_before", {})
                for path, values in files.items():
                    before.setdefault(path, values)
        if not data.get("clusters"):
            data.pop("clusters", None)

    out.append(config_change(drop))
    return cluster, out


def stop_shared_login(runner: Runner, cluster: Cluster) -> bool:
    """Close the cluster's shared login connection (ControlMaster), if one is open."""
    argv = ["ssh", "-o", f"ControlPath={control_dir()}/%C", "-p", str(cluster.port), "-l", cluster.user]
    if cluster.jump:
        argv += ["-J", cluster.jump]
    result = runner.run([*argv, "-O", "exit", cluster.login], check=False, timeout=30)
    return result.returncode == 0


def stop_session_masters(runner: Runner, cluster: Cluster) -> list[str]:
    """Close the master connections of the cluster's session hosts (while its block still says
    where their sockets are); returns the hosts that had one."""
    if not cluster.ssh_config or not Path(cluster.ssh_config).exists():
        return []
    closed = []
    for host in cluster.hosts:
        result = runner.run(["ssh", "-F", cluster.ssh_config, "-O", "exit", host], check=False,
                            timeout=30)
        if result.returncode == 0:
            closed.append(host)
    return closed


def uninstall(name: str, term: Terminal, runner: Runner, *, remove_install: bool,
              dry_run: bool) -> Report:
    report = Report()
    cluster, planned = plan_uninstall(name)
    report.hosts = cluster.hosts
    if dry_run:
        report.diffs += [c.diff() for c in planned if c.changed]
        if remove_install:
            report.add(f"would remove {cluster.login}:{cluster.install}")
        return report
    if remove_install:
        asyncio.run(_remove_install(cluster, term))
        report.add(f"removed {cluster.login}:{cluster.install}")
    login = f"{cluster.user}@{cluster.login} port {cluster.port}" + (
        f" via {cluster.jump}" if cluster.jump else "")
    sharing = [c.name for c in clusters.load() if c.name != name and _same_login(c, cluster)]
    if sharing:
        report.add(f"kept the shared login connection to {login}: cluster "
                   f"{', '.join(sharing)} uses it too")
    elif platform.system() != "Windows" and stop_shared_login(runner, cluster):
        report.add(f"closed the shared login connection to {login}")
    if platform.system() != "Windows":
        closed = stop_session_masters(runner, cluster)
        if closed:
            report.add(f"closed the shared connection of {', '.join(closed)}")
    apply_all(planned, report)
    if not clusters.load():  # the last cluster: setup's backups go with it
        removed = [p for c in planned for p in changes.prune_backups(
            c.path.resolve() if c.path.is_symlink() else c.path, keep=0)]
        if removed:
            report.add(f"removed {len(removed)} backup(s) setup had made")
    return report


def _same_login(a: Cluster, b: Cluster) -> bool:
    """Whether two clusters share one login connection (ssh's ``%C``: host, port, user, jump)."""
    return (a.login, a.port, a.user, a.jump or "") == (b.login, b.port, b.user, b.jump or "")


async def _remove_install(cluster: Cluster, term: Terminal) -> None:
    target = Target(cluster.login, cluster.port, cluster.user, Path(cluster.identity), cluster.jump or None)
    login = await Login.open(target, term)
    try:
        await _json(login, [cluster.python or "python3", "-c", remote_scripts.UNINSTALL,
                            cluster.install])
    finally:
        await login.close()


def describe(cluster: Cluster) -> dict[str, Any]:
    return {
        "name": cluster.name, "login": cluster.login, "user": cluster.user, "port": cluster.port,
        "jump": cluster.jump, "hosts": list(cluster.hosts), "profile": cluster.profile,
        "install": cluster.install, "ssh_config": cluster.ssh_config,
        "python": cluster.python, "vscode_server": cluster.vscode_server,
    }

