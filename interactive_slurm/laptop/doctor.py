"""``doctor`` on the laptop: ssh's side of the path, the login hop, then the cluster's own doctor.

In the order a connection takes: the ssh client; the managed block in the ssh config and whether
ssh really takes its values for the host (``ssh -G``: an earlier ``Host *`` or ``Host slurm-*``
of the user's that sets ``ProxyCommand`` or ``HostKeyAlias`` wins over the block, the classic
trap); the key the block names; the managed known_hosts file; the shared login connection's
socket folder and path length; the files the tool trusts; VS Code's settings; then the login
hop itself (the block's own ProxyCommand hop with ``BatchMode``: never a prompt), the
install there, its CA line against the laptop's, and the cluster-side checks
(``interactive-slurm doctor --json`` run there, see ``login/doctor.py``).

Every check is a function of injected inputs (the runner, file text, the platform) returning
:class:`~interactive_slurm.base.checks.Check` values. Nothing here imports asyncssh.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from interactive_slurm import __version__
from interactive_slurm.base import checks, defaults, sshhosts
from interactive_slurm.base.checks import Check, fail, ok, warn
from interactive_slurm.base.errors import CommandError
from interactive_slurm.base.runner import Runner
from interactive_slurm.laptop import jsonc, sshconfig, vscode
from interactive_slurm.laptop.clusters import Cluster

#: ``sizeof(sun_path)``: the longest socket path + 1 (macOS and the BSDs 104, Linux 108).
SUN_PATH = {"Darwin": 104, "Linux": 108}
#: What ``%C`` expands to (a SHA-1 in hex) and the temporary suffix ssh adds while it makes the
#: socket (``.`` and 16 random characters), both counted against ``sun_path``.
CONTROL_HASH_LEN = 40
CONTROL_TEMP_SUFFIX = 17
#: ``-G`` and the ``%C`` token (6.7/6.8); ``-J`` needs 7.3.
MIN_SSH = (6, 8)
MIN_SSH_JUMP = (7, 3)
#: The options whose first value must be the block's: compared with what ``ssh -G`` says.
COMPARED = ("proxycommand", "hostkeyalias", "userknownhostsfile")
HOP_TIMEOUT = 120.0
#: ssh's own exit status when it fails (anything else is the remote command's).
SSH_FAILED = 255
_SSH_VERSION = re.compile(r"OpenSSH_(?:for_Windows_)?(\d+)\.(\d+)")


# --- reading the ssh config ----------------------------------------------------------------------

@dataclass(frozen=True)
class BlockView:
    """What the managed block says for each of its hosts, and the line it starts on (0-based)."""

    start: int
    hosts: dict[str, dict[str, str]]  # alias -> lower-case key -> value (first one wins)


def _key_value(line: str) -> tuple[str, str] | None:
    """``Key value`` or ``Key=value`` of one config line (None for blank lines and comments)."""
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    words = re.split(r"\s*=\s*|\s+", line, maxsplit=1)
    return words[0].lower(), (words[1].strip() if len(words) > 1 else "")


def read_block(text: str, name: str) -> BlockView | None:
    """The managed block NAME in an ssh config's text, or None when there is none."""
    lines = text.splitlines()
    begin, end = sshconfig.begin_marker(name), sshconfig.end_marker(name)
    start = next((i for i, line in enumerate(lines)
                  if line == begin or line.startswith(begin + " ")), None)
    if start is None:
        return None
    hosts: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in lines[start + 1:]:
        if line.strip() == end:
            break
        kv = _key_value(line)
        if kv is None:
            continue
        key, value = kv
        if key == "host":
            current = None if value == "*" else hosts.setdefault(value, {})
        elif current is not None:
            current.setdefault(key, value)
    return BlockView(start, hosts)


def host_matches(alias: str, patterns: Iterable[str]) -> bool:
    """ssh's ``Host`` matching: any pattern matches and no negated one does (case-insensitive)."""
    alias = alias.lower()
    matched = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if fnmatch.fnmatchcase(alias, pattern.lstrip("!").lower()):
            if negated:
                return False
            matched = True
    return matched


def shadowing(text: str, before: int, alias: str, key: str) -> list[str]:
    """The lines above line ``before`` that set ``key`` for ``alias`` first (``line N: ...``):
    top-level lines and ``Host`` entries that match it (a ``Match`` entry may: it is listed)."""
    found = []
    applies, header = True, ""
    for number, line in enumerate(text.splitlines()[:before], start=1):
        kv = _key_value(line)
        if kv is None:
            continue
        word, value = kv
        if word == "host":
            applies, header = host_matches(alias, value.split()), f"line {number}: Host {value}"
        elif word == "match":
            applies, header = True, f"line {number}: Match {value}"
        elif word == key and applies:
            found.append(f"{header}, line {number}: {line.strip()}" if header else
                         f"line {number}: {line.strip()}")
    return found


def parse_ssh_g(output: str) -> dict[str, str]:
    """``ssh -G`` output: lower-case key -> its first value."""
    values: dict[str, str] = {}
    for line in output.splitlines():
        key, _, value = line.partition(" ")
        if key:
            values.setdefault(key.lower(), value.strip())
    return values


def _unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def control_dir_of(proxy_command: str) -> str | None:
    """The folder of ``ControlPath=DIR/%C`` in the block's ProxyCommand (None: no sharing)."""
    try:
        words = shlex.split(proxy_command.replace("%%", "%"))
    except ValueError:
        return None
    for word in words:
        if word.startswith("ControlPath="):
            return os.path.dirname(word.split("=", 1)[1])
    return None


def hop_argv(proxy_command: str, *args: str) -> list[str] | None:
    """The block's ProxyCommand hop running ``<tool> ARGS`` on the login node instead of the
    proxy, with ``BatchMode=yes`` (never a prompt). None when the command is not the block's."""
    try:
        words = shlex.split(proxy_command.replace("%%", "%"))
    except ValueError:
        return None
    # The hop's own ssh (a wrapper such as ``sh -c '...' sh ssh ...`` in front is left out: doctor
    # reads the hop's stderr itself).
    start = next((i for i, w in enumerate(words)
                  if os.path.basename(w.replace("\\", "/")).lower() in ("ssh", "ssh.exe")), None)
    if start is None:
        return None
    words = words[start:]
    if len(words) < 3 or "--" not in words or not words[-1].strip():
        return None
    try:
        remote = shlex.split(words[-1])
    except ValueError:
        return None
    if len(remote) < 2 or remote[1] != "proxy":
        return None
    return [words[0], "-o", "BatchMode=yes", *words[1:-1], shlex.join([remote[0], *args])]


# --- the checks ----------------------------------------------------------------------------------

def ssh_client(runner: Runner, jump: bool) -> list[Check]:
    """The ssh client answers ``-V`` with a version new enough for the block."""
    name = "ssh client"
    try:
        result = runner.run(["ssh", "-V"], check=False, timeout=30)
    except CommandError as exc:
        return [fail(name, str(exc), "install OpenSSH's client (Debian/Ubuntu: apt install "
                                     "openssh-client; Windows: Settings > Optional features > "
                                     "OpenSSH Client)")]
    text = (result.stderr + result.stdout).strip()
    found = _SSH_VERSION.search(text)
    if not found:
        return [warn(name, f"not OpenSSH? `ssh -V` said {text[:120]!r}",
                     "interactive-slurm writes OpenSSH's config: use OpenSSH's ssh")]
    version = (int(found.group(1)), int(found.group(2)))
    need = MIN_SSH_JUMP if jump else MIN_SSH
    if version < need:
        return [fail(name, f"{text.splitlines()[0]} is older than OpenSSH {need[0]}.{need[1]}",
                     "update OpenSSH's client")]
    return [ok(name, text.splitlines()[0])]


def managed_block(block: BlockView | None, config_path: str, cluster: str, alias: str) -> list[Check]:
    """The managed block is in the ssh config and has an entry for the host."""
    name = "ssh config block"
    again = f"interactive-slurm setup --name {cluster}"
    if block is None:
        return [fail(name, f"no managed block `{sshconfig.begin_marker(cluster)}` in {config_path}",
                     f"{again} (writes it again)")]
    if alias not in block.hosts:
        return [fail(name, f"the block {cluster} in {config_path} has no Host {alias} "
                           f"(hosts: {', '.join(block.hosts) or 'none'})",
                     f"{again} (writes it again), or use one of its hosts")]
    return [ok(name, f"{config_path} line {block.start + 1}: Host {alias}")]


def first_match(runner: Runner, text: str, block: BlockView | None, config_path: str | None,
                alias: str) -> list[Check]:
    """``ssh -G HOST`` takes the block's ProxyCommand, HostKeyAlias and known_hosts file."""
    name = "ssh first match"
    if block is None or alias not in block.hosts:
        return [warn(name, "not checked: no managed entry for the host (see above)",
                     "fix the ssh config block first")]
    argv = ["ssh", *(["-F", config_path] if config_path else []), "-G", alias]
    try:
        result = runner.run(argv, check=False, timeout=30)
    except CommandError as exc:
        return [warn(name, f"not checked: {exc}", "use OpenSSH 6.8 or newer (ssh -G)")]
    if result.returncode != 0:
        return [fail(name, f"`{shlex.join(argv)}` failed: {(result.stderr or result.stdout).strip()}",
                     f"fix the ssh config it names ({config_path or '~/.ssh/config'})")]
    takes = parse_ssh_g(result.stdout)
    ours = block.hosts[alias]
    wrong = []
    for key in COMPARED:
        want = _unquote(ours.get(key, ""))
        got = takes.get(key, "")
        if key == "userknownhostsfile":
            got = got.split()[0] if got.split() else ""
            if " " in want:
                continue
        if want and got != want:
            lines = shadowing(text, block.start, alias, key)
            where = f" (set first by {'; '.join(lines)})" if lines else ""
            wrong.append(f"{key} {got or '(none)'!r} instead of the block's{where}")
    if wrong:
        return [fail(name, f"ssh takes for {alias}: {'; '.join(wrong)}",
                     f"an entry above the managed block matches {alias} first: move the whole "
                     f"block (its BEGIN to END lines) to the top of {config_path or '~/.ssh/config'}, "
                     f"or exclude the host from that entry (e.g. `Host * !{alias}`)")]
    return [ok(name, f"ssh takes the block's ProxyCommand and HostKeyAlias "
                     f"{takes.get('hostkeyalias', '?')} for {alias}")]


def identity_file(path: str | None, windows: bool) -> list[Check]:
    """The key the block names exists, and is private (ssh ignores a key others can read)."""
    name = "identity file"
    if not path:
        return [warn(name, "the block names no IdentityFile", "interactive-slurm setup (writes it)")]
    path = os.path.expanduser(_unquote(path))
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return [fail(name, f"{path} does not exist",
                     f"make it (ssh-keygen -t ed25519 -f {path}), then `interactive-slurm setup` "
                     "adds it on the login node")]
    if not windows and st.st_mode & 0o077:
        return [fail(name, f"{path} is readable by others (mode {stat.S_IMODE(st.st_mode):04o}): "
                           "ssh refuses such a key", f"chmod 600 {path}")]
    return [ok(name, path)]


def known_hosts(path: str | None, cluster: str) -> list[Check]:
    """The managed known_hosts file holds the sessions' ``@cert-authority`` line."""
    name = "known hosts"
    again = f"interactive-slurm setup --name {cluster} (reads the line from the login node again)"
    if not path:
        return [fail(name, "the block names no UserKnownHostsFile", again)]
    path = os.path.expanduser(_unquote(path))
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return [fail(name, f"{path} does not exist: ssh says `Host key verification failed`", again)]
    lines = [line for line in text.splitlines()
             if line.startswith(f"{sshhosts.CA_MARKER} {sshhosts.CA_PATTERN} ")]
    if not lines:
        return [fail(name, f"{path} has no `{sshhosts.CA_MARKER} {sshhosts.CA_PATTERN}` line", again)]
    return [ok(name, f"{path}: {lines[0][:60]}...")]


def shared_connection(proxy_command: str | None, system: str) -> list[Check]:
    """The folder of the shared login connection's socket exists and is writable, and the socket
    path fits ``sun_path`` (else every connect logs in anew: 2FA each time)."""
    name = "shared login connection"
    if system == "Windows":
        return [ok(name, "not used: OpenSSH for Windows has no ControlMaster")]
    folder = control_dir_of(proxy_command or "")
    if folder is None:
        return [ok(name, "not used: the ProxyCommand sets no ControlPath")]
    folder = os.path.expanduser(folder)
    if not os.path.isdir(folder):
        return [warn(name, f"{folder} does not exist: every connect logs in anew",
                     f"mkdir -m 700 {folder}")]
    if not os.access(folder, os.W_OK | os.X_OK):
        return [warn(name, f"{folder} is not writable: every connect logs in anew",
                     f"chmod u+rwx {folder}")]
    limit = SUN_PATH.get(system, 104)
    length = len(os.fsencode(folder)) + 1 + CONTROL_HASH_LEN + CONTROL_TEMP_SUFFIX
    if length >= limit:
        return [warn(name, f"the socket path in {folder} takes {length} bytes, over the {limit - 1} "
                           f"{system} allows: ssh cannot share the login connection",
                     f"use a folder at most {limit - 1 - CONTROL_HASH_LEN - CONTROL_TEMP_SUFFIX - 1} "
                     "characters long: edit ControlPath in the block (setup writes it again) or "
                     "shorten the home folder's path")]
    return [ok(name, f"{folder}/%C ({length} of {limit - 1} bytes)")]


def vscode_settings(files: Sequence[tuple[str, Path]], alias: str,
                    minimum: int = defaults.WAIT_TIMEOUT) -> list[Check]:
    """Each editor's settings: ``remote.SSH.connectTimeout`` at least the proxy's wait (a queued
    job takes that long), and the host's platform set."""
    out = []
    for product, path in files:
        name = f"vscode {product}"
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = ""
        except (OSError, UnicodeDecodeError) as exc:
            out.append(warn(name, f"{path}: cannot read it: {exc}", f"check {path}"))
            continue
        try:
            settings = {} if jsonc.is_empty(text) else jsonc.loads(text)
        except jsonc.JsoncError as exc:
            out.append(warn(name, f"{path}: not valid JSON with comments: {exc}",
                            f"fix {path} (VS Code shows where)"))
            continue
        if not isinstance(settings, dict):
            out.append(warn(name, f"{path}: the top-level value is not an object", f"fix {path}"))
            continue
        timeout = settings.get(vscode.CONNECT_TIMEOUT)
        seconds = timeout if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) else 0
        if seconds < minimum:
            saw = (f"{path}: {vscode.CONNECT_TIMEOUT} is {timeout!r}" if timeout is not None else
                   f"{path}: no {vscode.CONNECT_TIMEOUT} (VS Code's default: 15 s)")
            out.append(fail(name, f"{saw}: VS Code gives up while the job waits in the queue",
                            f"set \"{vscode.CONNECT_TIMEOUT}\": {minimum} in {path} "
                            "(or run interactive-slurm setup again)"))
            continue
        platforms = settings.get(vscode.REMOTE_PLATFORM)
        platform = platforms.get(alias) if isinstance(platforms, dict) else None
        if platform != vscode.PLATFORM:
            out.append(warn(name, f"{path}: {vscode.REMOTE_PLATFORM} for {alias} is {platform!r}: "
                                  "VS Code asks (or guesses) on every connect",
                            f"set \"{vscode.REMOTE_PLATFORM}\": {{\"{alias}\": \"linux\"}} in {path}"))
            continue
        out.append(ok(name, f"{path}: {vscode.CONNECT_TIMEOUT} {seconds:g}, {alias}: linux"))
    return out


def _hop_failure(name: str, stderr: str, login: str) -> Check:
    last = (stderr.strip().splitlines() or ["no output"])[-1]
    if "Permission denied" in stderr:
        return warn(name, f"{login} wants a password or second factor (checked without prompts): "
                          f"{last}",
                    "connect once in a terminal (ssh HOST true): the shared login connection then "
                    "stays open for 30 minutes and doctor checks the cluster through it")
    if "Host key verification failed" in stderr or "REMOTE HOST IDENTIFICATION" in stderr:
        return fail(name, f"{login}'s host key is unknown or changed: {last}",
                    f"compare the key with your cluster's documentation, then `ssh-keygen -R {login}` "
                    f"and `ssh {login}` once by hand")
    return fail(name, f"{login}: {last}",
                "check the login node's name, your network or VPN, and the jump host if any")


def login_hop(runner: Runner, proxy_command: str | None, cluster: Cluster, *, profile: str | None,
              job: bool) -> list[Check]:
    """The hop of the block's ProxyCommand: reachable without a prompt, its install's version,
    its CA line against the laptop's known_hosts, then its own ``doctor --json``."""
    name = "login hop"
    argv = hop_argv(proxy_command or "", "--version")
    if argv is None:
        return [warn(name, "not checked: the block's ProxyCommand is not setup's",
                     f"interactive-slurm setup --name {cluster.name}")]
    try:
        result = runner.run(argv, check=False, timeout=HOP_TIMEOUT)
    except CommandError as exc:
        return [fail(name, str(exc), "check that ssh runs")]
    if result.returncode == SSH_FAILED:
        return [_hop_failure(name, result.stderr, cluster.login)]
    if result.returncode != 0:  # the login node's shell: 127 not found, 126 not executable
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return [fail(name, f"{cluster.login}: the install does not run (exit {result.returncode}): "
                           f"{last}",
                     f"interactive-slurm setup --name {cluster.name} (installs it again)")]
    there = result.stdout.strip().rsplit(" ", 1)[-1]
    out: list[Check] = []
    if there != __version__:
        out.append(warn(name, f"reached {cluster.user}@{cluster.login}: it runs interactive-slurm "
                              f"{there}, this laptop {__version__}",
                        f"interactive-slurm setup --name {cluster.name} (installs this version "
                        "there), or `remote update` on the login node"))
    else:
        out.append(ok(name, f"reached {cluster.user}@{cluster.login} without a prompt; "
                            f"interactive-slurm {there} there too"))
    out += _trust(runner, proxy_command or "", cluster)
    out += _remote_doctor(runner, proxy_command or "", cluster, profile=profile, job=job)
    return out


def _trust(runner: Runner, proxy_command: str, cluster: Cluster) -> list[Check]:
    """The login node's ``trust`` line equals the laptop's managed known_hosts line."""
    name = "session CA"
    argv = hop_argv(proxy_command, "trust")
    assert argv is not None  # the same command gave --version
    result = runner.run(argv, check=False, timeout=HOP_TIMEOUT)
    line = result.stdout.strip()
    if result.returncode != 0 or not line:
        return [fail(name, f"`interactive-slurm trust` on {cluster.login} failed: "
                           f"{(result.stderr.strip().splitlines() or ['no output'])[-1]}",
                     "run it on the login node to see why")]
    path = os.path.expanduser(cluster.known_hosts) if cluster.known_hosts else ""
    try:
        mine = Path(path).read_text(encoding="utf-8", errors="replace").split("\n") if path else []
    except FileNotFoundError:
        mine = []
    if line not in (m.strip() for m in mine):
        return [fail(name, f"{path or 'the managed known_hosts file'} does not hold the CA line "
                           f"{cluster.login} prints now: sessions fail `Host key verification`",
                     f"interactive-slurm setup --name {cluster.name} (writes the line again)")]
    return [ok(name, f"{path} trusts the host CA of {cluster.login}")]


def _remote_doctor(runner: Runner, proxy_command: str, cluster: Cluster, *, profile: str | None,
                   job: bool) -> list[Check]:
    """The cluster-side checks, run by the login node's own install (names prefixed ``cluster``)."""
    args = ["doctor", "--json", *(["--profile", profile] if profile else []),
            *(["--job"] if job else [])]
    argv = hop_argv(proxy_command, *args)
    assert argv is not None
    # --job waits for a job, then runs a step in it: the wait and a margin for the rest.
    timeout = HOP_TIMEOUT + (defaults.DOCTOR_JOB_WAIT + HOP_TIMEOUT if job else 0)
    result = runner.run(argv, check=False, timeout=timeout)
    try:
        found = checks.from_json(result.stdout)
    except ValueError:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return [warn("cluster", f"the login node's doctor gave no report: {last}",
                     "update the cluster's install (`remote update` on the login node, or "
                     f"interactive-slurm setup --name {cluster.name}), then run doctor again")]
    return [checks.Check(f"cluster {c.name}", c.status, c.saw, c.fix) for c in found]


# --- all of them ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Inputs:
    """Everything the laptop checks read from outside (tests inject their own)."""

    runner: Runner
    cluster: Cluster
    alias: str
    system: str
    home: Path
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    job: bool = False
    #: The profile the connections use (None: the cluster's, as setup wrote it).
    profile: str | None = None
    #: The file ssh reads without ``-F`` (None: ``~/.ssh/config`` under ``home``).
    default_ssh_config: Path | None = None


def run(inputs: Inputs) -> list[Check]:
    """Every laptop check, then the login hop and the cluster's; none stops the others."""
    out: list[Check] = []
    c, alias = inputs.cluster, inputs.alias
    default_config = inputs.default_ssh_config or inputs.home / ".ssh" / "config"
    config_path = Path(c.ssh_config) if c.ssh_config else default_config
    explicit = None if config_path == default_config else str(config_path)
    try:
        text = config_path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        text = ""
    block = read_block(text, c.name)
    entry = block.hosts.get(alias, {}) if block else {}
    proxy_command = entry.get("proxycommand")
    windows = inputs.system == "Windows"

    def add(name: str, run_one: Callable[[], Iterable[Check]]) -> None:
        out.extend(checks.guarded(name, run_one))

    add("ssh client", lambda: ssh_client(inputs.runner, bool(c.jump)))
    add("ssh config block", lambda: managed_block(block, str(config_path), c.name, alias))
    add("ssh first match", lambda: first_match(inputs.runner, text, block, explicit, alias))
    add("identity file", lambda: identity_file(entry.get("identityfile") or c.identity, windows))
    add("known hosts", lambda: known_hosts(entry.get("userknownhostsfile") or c.known_hosts, c.name))
    add("shared login connection", lambda: shared_connection(proxy_command, inputs.system))
    add("trusted folders", checks.trusted_folders)
    add("vscode", lambda: vscode_settings(vscode.settings_files(inputs.system, inputs.home, inputs.env),
                                          alias))
    profile = inputs.profile or c.profile or None
    add("login hop", lambda: login_hop(inputs.runner, proxy_command, c, profile=profile, job=inputs.job))
    return out
