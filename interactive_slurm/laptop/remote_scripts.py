"""Small programs ``setup`` runs on the login node with its ``python3`` (3.9+, stdlib only).

Each is sent as ``python3 -c PROGRAM ARGS...`` over the verified connection and prints one JSON
line. They are plain text here so the tests can run them locally as well.
"""

from __future__ import annotations

# argv: install root (may start with ~), public key line
PROBE = r"""
import json, os, sys
root = os.path.abspath(os.path.expanduser(sys.argv[1]))
blob = sys.argv[2].split()[1]
ak = os.path.expanduser("~/.ssh/authorized_keys")
try:
    with open(ak) as fh:
        authorized = any(blob in line.split() for line in fh)
except FileNotFoundError:
    authorized = False
cur = os.path.join(root, "current")
print(json.dumps({
    "python": list(sys.version_info[:2]),
    "home": os.path.expanduser("~"),
    "root": root,
    "authorized": authorized,
    "current": os.path.basename(os.readlink(cur)) if os.path.islink(cur) else None,
}))
"""

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
