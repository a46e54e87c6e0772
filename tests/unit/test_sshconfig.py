"""laptop/sshconfig.py: the managed block, its place in the file, quoting on Unix and Windows."""

from __future__ import annotations

import shlex
import subprocess

import pytest

from interactive_slurm.base import sshhosts
from interactive_slurm.base.errors import ConfigError
from interactive_slurm.laptop import sshconfig
from interactive_slurm.laptop.sshconfig import Block


def block(**kw: object) -> Block:
    values: dict[str, object] = dict(
        name="slurm", login="login.example.org", user="alice", port=22, jump=None,
        identity="/home/alice/.ssh/id_ed25519",
        tool="/home/alice/.local/share/interactive-slurm/current/bin/interactive-slurm",
        known_hosts="/home/alice/.config/interactive-slurm/known_hosts-slurm",
        control_dir="/home/alice/.ssh/interactive-slurm-cm",
        hosts=sshconfig.default_hosts("slurm"),
    )
    values.update(kw)
    return Block(**values)  # type: ignore[arg-type]


def test_block_text_is_exact() -> None:
    text = sshconfig.render(block(hosts=(("slurm-cpu", "cpu"),)))
    entry, _, twin = text.partition("Host slurm-cpu-tmux\n")
    twin, _, tail = twin.partition("Match originalhost")
    # The -tmux twin: the same entry, with a shell in the job that outlives the connection.
    assert twin == (entry.split("Host slurm-cpu\n", 1)[1] + "  RequestTTY force\n"
                    f"  RemoteCommand {sshhosts.PERSISTENT_COMMAND}\n")
    # Masters persist when ssh runs on a terminal (the proxy's stderr then goes there).
    match, _, tail = tail.partition("# (the line below")
    assert match == (' slurm-cpu,slurm-cpu-tmux exec "test -t 2"\n'
                     "  ControlPersist 10m\n")
    text = entry + "# (the line below" + tail
    assert text == (
        "# BEGIN interactive-slurm slurm (written by `interactive-slurm setup`; changes here are replaced)\n"
        "Host slurm-cpu\n"
        "  ProxyCommand sh -c 'if [ /dev/stderr -ef /dev/null ] && (: >/dev/tty) 2>/dev/null; "
        "then exec \"$@\" 2>/dev/tty; fi; exec \"$@\"' sh ssh -o ControlMaster=auto"
        " -o ControlPath=/home/alice/.ssh/interactive-slurm-cm/%%C -o ControlPersist=30m"
        " -o ServerAliveInterval=30 -o ConnectTimeout=30 -i /home/alice/.ssh/id_ed25519 -p 22 -l alice"
        " -T -- login.example.org"
        " '/home/alice/.local/share/interactive-slurm/current/bin/interactive-slurm proxy cpu'\n"
        "  User alice\n"
        "  IdentityFile /home/alice/.ssh/id_ed25519\n"
        "  HostKeyAlias cpu.interactive-slurm\n"
        "  UserKnownHostsFile /home/alice/.config/interactive-slurm/known_hosts-slurm\n"
        "  StrictHostKeyChecking yes\n"
        "  CheckHostIP no\n"
        "  ServerAliveInterval 30\n"
        "  ConnectTimeout 1860\n"
        "  ControlMaster auto\n"
        "  ControlPath /home/alice/.ssh/interactive-slurm-cm/%C\n"
        "# (the line below ends these hosts: what follows applies to every host, as before)\n"
        "Host *\n"
        "# END interactive-slurm slurm\n"
    )


def test_profile_jump_and_port_reach_the_proxy_command() -> None:
    argv = sshconfig.proxy_argv(block(profile="big", jump="bob@gw.example.org:2200", port=2222), "gpu")
    assert argv[argv.index("-J") + 1] == "bob@gw.example.org:2200"
    assert argv[argv.index("-p") + 1] == "2222"
    assert shlex.split(argv[-1]) == [block().tool, "proxy", "gpu", "--profile", "big"]


def test_paths_with_spaces_survive_both_shells() -> None:
    """The ProxyCommand goes through sh -c locally, the remote command through the login shell."""
    b = block(identity="/home/a b/.ssh/id", tool="/opt/my tools/bin/interactive-slurm")
    command = sshconfig.proxy_command(b, "cpu")
    # What `sh -c` makes of the command: the real shell prints each word it passes on.
    words = subprocess.run(["sh", "-c", "printf '%s\\n' " + command], capture_output=True,
                           text=True, check=True).stdout.splitlines()
    assert words[words.index("-i") + 1] == "/home/a b/.ssh/id"
    assert shlex.split(words[-1]) == ["/opt/my tools/bin/interactive-slurm", "proxy", "cpu"]


def test_windows_uses_ssh_exe_forward_slashes_and_no_control_master() -> None:
    b = block(windows=True, identity="C:\\Users\\Ann Lee\\.ssh\\id_ed25519",
              known_hosts="C:\\Users\\Ann Lee\\AppData\\Roaming\\interactive-slurm\\known_hosts-slurm")
    text = sshconfig.render(b)
    command = next(line for line in text.splitlines() if "ProxyCommand" in line)
    assert command.startswith("  ProxyCommand C:/Windows/System32/OpenSSH/ssh.exe ")
    assert "ControlMaster" not in command and "ControlPath" not in command
    assert '-i "C:/Users/Ann Lee/.ssh/id_ed25519"' in command
    assert command.endswith(
        '"/home/alice/.local/share/interactive-slurm/current/bin/interactive-slurm proxy cpu"')
    assert '  IdentityFile "C:/Users/Ann Lee/.ssh/id_ed25519"' in text
    known = "C:/Users/Ann Lee/AppData/Roaming/interactive-slurm/known_hosts-slurm"
    assert f'  UserKnownHostsFile "{known}"' in text
    assert "\\" not in text


def test_percent_is_doubled_for_ssh_tokens() -> None:
    assert "/%C " in sshconfig.proxy_command(block(), "cpu")  # as the shell runs it ...
    assert "/%%C " in sshconfig.render(block())  # ... and as ssh_config says it
    assert "/x/100%%/bin/" in sshconfig.render(block(tool="/x/100%/bin/interactive-slurm"))


USER_CONFIG = """\
# my settings
ServerAliveInterval 60
Include ~/.ssh/config.d/*

Host *
  User bob
  ForwardAgent no

Host work
  HostName work.example.org
"""


def test_put_inserts_at_the_top_and_remove_restores_byte_for_byte() -> None:
    text = sshconfig.render(block())
    combined = sshconfig.put(USER_CONFIG, text, "slurm")
    assert combined == text + USER_CONFIG
    assert sshconfig.remove(combined, "slurm") == USER_CONFIG


def test_put_replaces_in_place_and_is_idempotent() -> None:
    once = sshconfig.put(USER_CONFIG, sshconfig.render(block()), "slurm")
    assert sshconfig.put(once, sshconfig.render(block()), "slurm") == once
    changed = sshconfig.put(once, sshconfig.render(block(user="carol")), "slurm")
    assert changed.endswith(USER_CONFIG) and "User carol" in changed and "User alice" not in changed


def test_two_clusters_have_their_own_blocks() -> None:
    first = sshconfig.put(USER_CONFIG, sshconfig.render(block()), "slurm")
    other = block(name="other", login="login.other.org", hosts=sshconfig.default_hosts("other"))
    both = sshconfig.put(first, sshconfig.render(other), "other")
    assert both.index("# BEGIN interactive-slurm other") < both.index("# BEGIN interactive-slurm slurm")
    assert "Host other-cpu" in both and "Host slurm-cpu" in both
    assert sshconfig.remove(sshconfig.remove(both, "other"), "slurm") == USER_CONFIG


def test_a_begin_without_end_is_an_error_and_nothing_is_changed() -> None:
    broken = "# BEGIN interactive-slurm slurm\nHost slurm-cpu\n"
    with pytest.raises(ConfigError, match="no `# END interactive-slurm slurm` line"):
        sshconfig.put(broken, sshconfig.render(block()), "slurm")


def test_clashes_only_outside_the_own_block() -> None:
    mine = sshconfig.put("Host slurm-gpu\n  HostName x\n", sshconfig.render(block()), "slurm")
    assert sshconfig.clashes(mine, "slurm", ["slurm-cpu", "slurm-gpu"]) == ["slurm-gpu"]
    assert sshconfig.clashes(sshconfig.render(block()), "slurm", ["slurm-cpu"]) == []


def test_real_ssh_reads_the_block_with_a_users_host_star(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """ssh -G shows what ssh would use: the block wins for its hosts; Host * still adds the rest."""
    cfg = tmp_path / "config"
    cfg.write_text(sshconfig.put(USER_CONFIG.replace("Include ~/.ssh/config.d/*\n", ""),
                                 sshconfig.render(block()), "slurm"))
    out = subprocess.run(["ssh", "-G", "-F", str(cfg), "slurm-cpu"], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert "user alice" in out
    assert "stricthostkeychecking true" in out
    assert "hostkeyalias cpu.interactive-slurm" in out
    assert "forwardagent no" in out  # from the user's Host *
    assert "serveraliveinterval 30" in out  # the block's value comes first
    other = subprocess.run(["ssh", "-G", "-F", str(cfg), "work"], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    assert "user bob" in other and "serveraliveinterval 60" in other


@pytest.mark.parametrize(("value", "expected"), [
    ("a", (("a", "cpu"),)),
    ("a,b", (("a", "cpu"), ("b", "gpu"))),
])
def test_parse_hosts(value: str, expected: tuple[tuple[str, str], ...]) -> None:
    assert sshconfig.parse_hosts(value) == expected


@pytest.mark.parametrize("value", ["", "a,a", "a,b,c", "a b", "a;rm"])
def test_parse_hosts_rejects(value: str) -> None:
    with pytest.raises(ConfigError, match=r"--hosts|host alias"):
        sshconfig.parse_hosts(value)


@pytest.mark.parametrize(("field", "value"), [
    ("login", "-oProxyCommand=x"), ("user", "a b"), ("jump", "x;y"), ("name", "a/b"), ("port", 0),
    ("hosts", (("a;b", "cpu"),)), ("hosts", (("a", "tpu"),)),
])
def test_block_validates_what_goes_into_the_file(field: str, value: object) -> None:
    with pytest.raises(ConfigError):
        block(**{field: value})


def test_a_users_host_star_connect_timeout_does_not_cut_a_queued_connect(tmp_path: object) -> None:
    """Issue 20, item 7: ``Host *`` with ``ConnectTimeout 5`` after the block (or before it, in
    an Include) must not apply to the session hosts: their wait includes Slurm's queue."""
    import pathlib

    folder = pathlib.Path(str(tmp_path))
    config = folder / "config"
    config.write_text(sshconfig.put("Host *\n  ConnectTimeout 5\n", sshconfig.render(block()), "slurm"))
    seen = subprocess.run(["ssh", "-F", str(config), "-G", "slurm-cpu"], capture_output=True,
                          text=True, check=True).stdout.splitlines()
    assert "connecttimeout 1860" in seen
    other = subprocess.run(["ssh", "-F", str(config), "-G", "elsewhere"], capture_output=True,
                           text=True, check=True).stdout.splitlines()
    assert "connecttimeout 5" in other  # the user's own hosts keep theirs


def test_the_hops_stderr_goes_to_the_terminal_only_when_ssh_gave_it_dev_null(tmp_path: object) -> None:
    """A persisting master gives the ProxyCommand /dev/null as stderr (OpenSSH): the proxy's
    progress and errors then go to the terminal, if there is one; otherwise stderr is kept."""
    import pathlib

    out = pathlib.Path(str(tmp_path)) / "err"
    script = [sshhosts.TTY_STDERR, "sh", "sh", "-c", "echo to-stderr >&2"]
    with open(out, "w") as err:  # a real stderr: kept, whether or not there is a terminal
        subprocess.run(["sh", "-c", *script], stderr=err, check=True, start_new_session=True)
    assert out.read_text() == "to-stderr\n"
    # /dev/null and no terminal (a new session has none): still runs, output goes nowhere.
    done = subprocess.run(["sh", "-c", *script], stderr=subprocess.DEVNULL, start_new_session=True)
    assert done.returncode == 0


def test_masters_persist_only_when_ssh_runs_on_a_terminal(tmp_path: object) -> None:
    """A persisting master's ProxyCommand gets /dev/null as stderr (OpenSSH): without a
    terminal (VS Code, scripts) the first ssh stays the master and its stderr stays with it."""
    import os
    import pathlib
    import pty

    config = pathlib.Path(str(tmp_path)) / "config"
    config.write_text(sshconfig.render(block()))

    def persist(stderr: object) -> str:
        out = subprocess.run(["ssh", "-F", str(config), "-G", "slurm-cpu"], stderr=stderr,
                             stdout=subprocess.PIPE, text=True, check=True).stdout
        return next(line for line in out.splitlines() if line.startswith("controlpersist "))

    assert persist(subprocess.DEVNULL) == "controlpersist no"
    leader, follower = pty.openpty()
    try:
        assert persist(follower) == "controlpersist 600"
    finally:
        os.close(leader)
        os.close(follower)
