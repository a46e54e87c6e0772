"""Small programs ``setup`` runs on the login node (stdlib only), over the verified connection.

:data:`PROBE_SH` (POSIX sh, on stdin) finds the cluster's Python 3.9+ and runs :data:`PROBE` with
it; the others are sent as ``PYTHON -c PROGRAM ARGS...`` with the interpreter the probe found.
Each prints one JSON line last. They are plain text here so the tests can run them locally too.
"""

from __future__ import annotations

# argv (sys.argv[1:]): the interpreter's path as the shell ran it, install root (may start
# with ~), public key line, the --vscode-server-dir asked for ("" for none), and the home
# directory's thresholds (free bytes, free inodes) below which it looks for a scratch folder.
# Runs only on the Python 3.9+ PROBE_SH picked, but stays Python 3.6 syntax all the same.
PROBE = r"""
import json, os, stat, subprocess, sys
py, root, pub, vsdir, min_bytes, min_inodes = sys.argv[1:7]
root = os.path.abspath(os.path.expanduser(root))
blob = pub.split()[1]
ak = os.path.expanduser("~/.ssh/authorized_keys")
try:
    with open(ak) as fh:
        authorized = any(blob in line.split() for line in fh)
except FileNotFoundError:
    authorized = False
cur = os.path.join(root, "current")
home = os.path.expanduser("~")


def space(path):
    # What the user may still write there: statvfs shows a quota where the filesystem reports
    # it (many NFS servers, GPFS filesets, Lustre with quota-aware df); else the free space.
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return {"free": st.f_bavail * st.f_frsize, "inodes": st.f_favail if st.f_files else None}


def folder(name, path):
    out = {"name": name, "path": path, "exists": False}
    try:
        st = os.stat(path)
    except OSError:
        return out
    out.update(exists=True, dir=stat.S_ISDIR(st.st_mode), mine=st.st_uid == os.getuid(),
               shared=bool(st.st_mode & 0o022), space=space(path))
    return out


def login_env(names):
    # The variables as the login shell sets them (sites set $SCRATCH in /etc/profile.d).
    shell = os.environ.get("SHELL", "")
    if not (os.path.isabs(shell) and os.path.basename(shell) in
            ("bash", "zsh", "ksh", "ksh93", "mksh", "sh", "dash", "ash")):
        return {}
    script = "printf 'interactive-slurm-env\\0'; printf '%s\\0' " + " ".join(
        '"${%s-}"' % n for n in names)
    try:
        out = subprocess.run([shell, "-l", "-c", script], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    values = out.split(b"interactive-slurm-env\0")[-1].split(b"\0")
    return {n: v.decode("utf-8", "replace") for n, v in zip(names, values)}


home_space = space(home)
folders = []
if vsdir and vsdir != "~":
    folders.append(folder("--vscode-server-dir", vsdir))
elif home_space is not None and (home_space["free"] < int(min_bytes) or (
        home_space["inodes"] is not None and home_space["inodes"] < int(min_inodes))):
    names = ("SCRATCH", "WORK")
    env = {n: os.environ.get(n, "") for n in names}
    if not any(env.values()):
        env = login_env(names)
    for n in names:
        if env.get(n, "").startswith("/"):
            folders.append(folder("$" + n, env[n]))
print(json.dumps({
    "python": list(sys.version_info[:2]),
    "executable": py,
    "home": home,
    "root": root,
    "authorized": authorized,
    "current": os.path.basename(os.readlink(cur)) if os.path.islink(cur) else None,
    "space": home_space,
    "folders": folders,
}))
"""

#: The names ``setup`` looks for on the login node's PATH when ``--python`` is not given: the
#: plain ``python3`` first (what the site calls its Python 3), then the newest versioned one.
PATH_CANDIDATES = ("python3", "python3.13", "python3.12", "python3.11", "python3.10", "python3.9")
#: What ``module load`` is tried with, in order, when none of those is 3.9 or newer.
MODULE_CANDIDATES = ("python3", "python")
#: All each candidate is asked: one line ``MAJOR.MINOR.MICRO``. It runs on any Python from 2.7
#: on, so an old interpreter answers instead of failing with a SyntaxError.
VERSION_CHECK = 'import sys; print(".".join(map(str, sys.version_info[:3])))'
#: The first field of every line PROBE_SH reports; nothing else on stdout (a login shell's
#: greeting, say) is read.
MARK = "interactive-slurm-probe"

# setup's one round trip to look at the login node: ``/bin/sh -s -- ROOT PUBKEY PYTHON VSCODE_DIR
# MIN_BYTES MIN_INODES`` with this script on stdin (POSIX sh, since the login node may have no
# usable Python at all; on stdin, since a csh login shell cannot pass a program of many lines in
# an argument). PYTHON is the user's --python, or empty: then it looks for Python 3.9+ itself,
# PATH_CANDIDATES in order, then, if none is, ``module load`` each of MODULE_CANDIDATES in the
# login shell (where Lmod and Environment Modules define ``module``). Each interpreter it looks
# at is one line
#     MARK <TAB> python <TAB> HOW <TAB> NAME <TAB> PATH <TAB> VERSION
# (HOW: explicit, path or module; PATH empty when NAME is not there, VERSION empty when it did
# not answer VERSION_CHECK outside the module's environment), the module command one line
#     MARK <TAB> module <TAB> STATE              (STATE: found, none, or noshell)
# and the first 3.9+ one runs PROBE, whose JSON line comes last. Nothing it finds is trusted:
# the laptop checks every field (laptop/probe.py).
PROBE_SH = r"""
root=$1 pub=$2 want=$3 vsdir=$4 min_bytes=$5 min_inodes=$6
tab=$(printf '\t')
nl='
'
check='@VERSION_CHECK@'
short= long=
if command -v timeout >/dev/null 2>&1; then short='timeout 30' long='timeout 120'; fi
say() { printf '@MARK@\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5"; }
usable() {  # usable VERSION: 3.9 or newer
    case $1 in ''|*[!0-9.]*) return 1 ;; esac
    major=${1%%.*} rest=${1#*.}
    minor=${rest%%.*}
    case $major$minor in ''|*[!0-9]*) return 1 ;; esac
    [ "${#major}" -lt 4 ] && [ "${#minor}" -lt 4 ] || return 1
    [ "$major" -gt 3 ] || { [ "$major" -eq 3 ] && [ "$minor" -ge 9 ]; }
}
py= how=
consider() {  # consider HOW NAME PATH: report it; the first usable one is taken
    v=
    case $3 in
        /*) case $3 in *"$tab"*|*"$nl"*) set -- "$1" "$2" "" ;; esac ;;
        *) set -- "$1" "$2" "" ;;
    esac
    if [ -n "$3" ]; then
        v=$($short "$3" -c "$check" </dev/null 2>/dev/null)
        case $v in ''|*[!0-9.]*) v= ;; esac
    fi
    say python "$1" "$2" "$3" "$v"
    if [ -z "$py" ] && usable "$v"; then py=$3 how=$1; fi
}
modules() {
    shell=${SHELL:-}
    case $shell in /*) ;; *) shell= ;; esac
    case ${shell##*/} in bash|zsh|ksh|ksh93|mksh|sh|dash|ash) ;; *) shell= ;; esac
    if [ -z "$shell" ] || [ ! -x "$shell" ]; then say module noshell "" "" ""; return; fi
    out=$($long "$shell" -l -c '
        if ! type module >/dev/null 2>&1; then echo "@MARK@-module none"; exit 0; fi
        echo "@MARK@-module found"
        b3=$(command -v python3 2>/dev/null); b=$(command -v python 2>/dev/null)
        for m in @MODULE_CANDIDATES@; do
            (
                module load "$m" >/dev/null 2>&1
                p3=$(command -v python3 2>/dev/null); p=$(command -v python 2>/dev/null)
                if [ -n "$p3" ] && [ "$p3" != "$b3" ]; then echo "@MARK@-module $m $p3"
                elif [ -n "$p" ] && [ "$p" != "$b" ]; then echo "@MARK@-module $m $p"
                else echo "@MARK@-module $m"
                fi
            )
        done' </dev/null 2>/dev/null)
    state=none
    while IFS= read -r line; do
        case $line in
            "@MARK@-module found") state=found ;;
            "@MARK@-module none") ;;
            "@MARK@-module "*" "*)
                rest=${line#"@MARK@-module "}
                consider module "${rest%% *}" "${rest#* }" ;;
            "@MARK@-module "*) consider module "${line#"@MARK@-module "}" "" ;;
        esac
    done <<INTERACTIVE_SLURM_MODULES
$out
INTERACTIVE_SLURM_MODULES
    say module "$state" "" "" ""
}
if [ -n "$want" ]; then
    consider explicit "$want" "$(command -v "$want" 2>/dev/null)"
else
    for name in @PATH_CANDIDATES@; do
        consider path "$name" "$(command -v "$name" 2>/dev/null)"
        [ -n "$py" ] && break
    done
    [ -n "$py" ] || modules
fi
[ -n "$py" ] || exit 0
exec "$py" - "$py" "$root" "$pub" "$vsdir" "$min_bytes" "$min_inodes" <<'INTERACTIVE_SLURM_PROBE'
@PROBE@
INTERACTIVE_SLURM_PROBE
"""
for _key, _value in (("@VERSION_CHECK@", VERSION_CHECK), ("@MARK@", MARK),
                     ("@MODULE_CANDIDATES@", " ".join(MODULE_CANDIDATES)),
                     ("@PATH_CANDIDATES@", " ".join(PATH_CANDIDATES)), ("@PROBE@", PROBE.strip())):
    PROBE_SH = PROBE_SH.replace(_key, _value)
del _key, _value

# argv: public key line. Appends it to ~/.ssh/authorized_keys unless the key is there already;
# makes ~/.ssh 0700 and the file 0600 when it creates them, and drops group/other write bits
# (sshd's StrictModes would refuse the file) otherwise.
AUTHORIZE = r"""
import json, os, stat, sys
line = sys.argv[1].strip()
blob = line.split()[1]
d = os.path.expanduser("~/.ssh")
if not os.path.isdir(d):
    os.mkdir(d, 0o700)
    os.chmod(d, 0o700)
ak = os.path.join(d, "authorized_keys")
try:
    with open(ak) as fh:
        text = fh.read()
except FileNotFoundError:
    text = None
added = False
if text is None or not any(blob in l.split() for l in text.splitlines()):
    fd = os.open(ak, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        sep = "\n" if text and not text.endswith("\n") else ""
        os.write(fd, (sep + line + "\n").encode())
    finally:
        os.close(fd)
    added = True
for path in (d, ak):
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o022:
        os.chmod(path, mode & ~0o022)
if text is None:
    os.chmod(ak, 0o600)
print(json.dumps({"added": added, "file": ak}))
"""

# argv: install root (absolute). Removes an install made by setup: only a folder that has the
# layout of interactive_slurm.install.installs (versions/ and a current link), nothing else, and
# only while none of the user's sessions runs (a session runs from its install: removed under
# it, it could be neither reached nor cancelled with `remote cancel`).
UNINSTALL = r"""
import json, os, shutil, subprocess, sys
root = sys.argv[1]
tool = os.path.join(root, "current", "bin", "interactive-slurm")
if not (os.path.isdir(os.path.join(root, "versions")) and os.path.islink(os.path.join(root, "current"))):
    print(json.dumps({"error": root + " does not look like an interactive-slurm install; left alone"}))
    sys.exit(1)
try:
    out = subprocess.run(["squeue", "--me", "--noheader", "--format=%i %j"], capture_output=True,
                         text=True, timeout=60)
except (OSError, subprocess.TimeoutExpired) as exc:
    print(json.dumps({"error": "cannot ask Slurm whether sessions still run (" + str(exc) +
                      "); the install was left in place"}))
    sys.exit(1)
if out.returncode != 0:
    print(json.dumps({"error": "squeue failed (" + (out.stderr.strip() or "no output") +
                      "); the install was left in place"}))
    sys.exit(1)
jobs = [line.split()[0] for line in out.stdout.splitlines()
        if len(line.split()) == 2 and line.split()[1].startswith("vscode-remote-")]
if jobs:
    print(json.dumps({"error": "sessions still run from " + root + " (job " + ", ".join(jobs) +
                      "); end them first with `" + tool + " remote cancel --all --yes`, then "
                      "run this again"}))
    sys.exit(1)
shutil.rmtree(root)
print(json.dumps({"removed": root}))
"""
