"""The rendezvous record a session publishes and the proxy reads.

``<state>/jobs/<jobid>/endpoint.json``, mode 0600, written atomically once the session listens.
It holds the session's keyhole secret (see :mod:`keyhole`), so only its owner can prove it. The
session renews the record's mtime every :data:`RENEW_SECONDS` (its lease); a record not renewed
for :data:`LEASE_SECONDS` is stale. The proxy's fast path reads only these files: no Slurm query
when a session is reusable. Imported by the fast path: no dataclasses or typing here.
"""

from __future__ import annotations

import os
import time

from interactive_slurm.base import folders
from interactive_slurm.base.errors import CorruptRecordError, EndpointError, UnsafePathError
from interactive_slurm.base.fsutil import read_private, unlink_if_present
from interactive_slurm.connect.fastjson import loads

TYPE_CHECKING = False  # not typing's
if TYPE_CHECKING:
    from pathlib import Path

    from interactive_slurm.base.fsutil import StrPath

#: 2: the keyhole secret and the session pid (no long-running sshd any more).
FORMAT_VERSION = 2
RENEW_SECONDS = 15.0
LEASE_SECONDS = 60.0
#: The note a session leaves in its job folder when its job ends (the reason, one line).
ENDED_NOTE = "ended"

_FIELDS: dict[str, type] = {
    "job_id": str, "kind": str, "profile": str, "host": str, "port": int,
    "session_pid": int, "started_at": float, "container": str, "secret": str, "version": int,
    "ends_at": float, "node": str, "partition": str, "cluster": str, "socket": str,
    "transport": str,
}
#: Written for the readers of earlier releases (an install the updater keeps), which require
#: them; read by nobody: the host key is trusted through its certificate, not through this file.
_FOR_OLDER_READERS: dict[str, object] = {"host_key": ""}
#: Fields a record of this version may lack (added later without a version bump): their default.
_OPTIONAL: dict[str, object] = {"container": "", "ends_at": 0.0, "node": "", "partition": "",
                                 "cluster": "", "socket": "", "transport": ""}
#: The values ``transport`` may take (a profile's setting; "": config.toml's applies).
TRANSPORTS = ("", "tcp", "srun", "auto")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


class Endpoint:
    """One published session (immutable by convention; compared by value)."""

    __slots__ = (
        "cluster",
        "container",
        "ends_at",
        "host",
        "identity",
        "job_id",
        "kind",
        "node",
        "partition",
        "port",
        "profile",
        "secret",
        "session_pid",
        "socket",
        "started_at",
        "transport",
        "version",
    )

    def __init__(
        self, *, job_id: str, kind: str, profile: str, host: str, port: int, session_pid: int,
        started_at: float, secret: str, container: str = "", version: int = FORMAT_VERSION,
        identity: tuple[int, int, float] | None = None, ends_at: float = 0.0, node: str = "",
        partition: str = "", cluster: str = "", socket: str = "", transport: str = "",
    ) -> None:
        self.job_id, self.kind, self.profile, self.host = job_id, kind, profile, host
        #: The session's process on its node (for admins and tests: ``kill``, ``pgrep -P``).
        self.port, self.session_pid = port, session_pid
        self.started_at, self.container, self.secret = started_at, container, secret
        self.version = version
        #: When the job reaches its time limit (epoch seconds; 0.0: unknown).
        self.ends_at = ends_at
        #: (st_dev, st_ino, st_mtime) of the file it was read from; None if not read from one.
        self.identity = identity
        #: Slurm's name of the session's node, its partition and cluster ("" in older records):
        #: the ``srun`` transport's ``--nodelist`` and the key of a remembered transport choice.
        self.node, self.partition, self.cluster = node, partition, cluster
        #: The session's unix socket on its node (in its 0700 temp folder; "": none), which the
        #: ``srun`` transport's bridge connects to; and the profile's ``transport`` ("": unset).
        self.socket, self.transport = socket, transport

    def as_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in _FIELDS}

    def to_json(self) -> str:
        import json  # only the session writes records

        return json.dumps({**_FOR_OLDER_READERS, **self.as_dict()}, indent=2, sort_keys=True) + "\n"

    def replace(self, **changes: object) -> Endpoint:
        return Endpoint(**{**self.as_dict(), **changes})  # type: ignore[arg-type]

    def secret_bytes(self) -> bytes:
        return bytes.fromhex(self.secret)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Endpoint) and self.as_dict() == other.as_dict()

    def __hash__(self) -> int:
        return hash(self.to_json())

    def __repr__(self) -> str:
        return f"Endpoint(job_id={self.job_id!r}, host={self.host!r}, port={self.port!r})"


def from_json(text: str, source: StrPath) -> Endpoint:
    try:
        data = loads(text)
    except ValueError as exc:
        raise CorruptRecordError(f"{source}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CorruptRecordError(f"{source}: expected a JSON object")
    if data.get("version") != FORMAT_VERSION:
        raise CorruptRecordError(f"{source}: version {data.get('version')!r} is not {FORMAT_VERSION}")
    values: dict[str, object] = {}
    for key, typ in _FIELDS.items():
        value = data.get(key, _OPTIONAL.get(key))
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, typ) or isinstance(value, bool):
            raise CorruptRecordError(f"{source}: {key} = {value!r}: expected {typ.__name__}")
        values[key] = value
    port, secret, job_id = data["port"], data["secret"], data["job_id"]
    if not 0 < port < 65536:
        raise CorruptRecordError(f"{source}: port = {port!r}: out of range")
    if len(secret) != 64 or not all(c in "0123456789abcdef" for c in secret):
        raise CorruptRecordError(f"{source}: secret: expected 64 hex digits")
    if not is_job_id(job_id) or os.path.basename(os.path.dirname(source)) != job_id:
        raise CorruptRecordError(f"{source}: job_id = {job_id!r}: does not match its folder")
    for key in ("node", "partition", "cluster"):  # srun's --nodelist, a file's key: plain names
        name = values[key]
        assert isinstance(name, str)
        if name and not is_plain_name(name):
            raise CorruptRecordError(f"{source}: {key} = {name!r}: not a plain name")
    sock_path = values["socket"]
    assert isinstance(sock_path, str)
    if sock_path and (not sock_path.startswith("/") or "\0" in sock_path or len(sock_path) > 107):
        raise CorruptRecordError(f"{source}: socket = {sock_path!r}: not an absolute socket path")
    if values["transport"] not in TRANSPORTS:
        raise CorruptRecordError(f"{source}: transport = {values['transport']!r}: not one of "
                                 "tcp, srun, auto")
    return Endpoint(**values)  # type: ignore[arg-type]


def is_plain_name(text: str) -> bool:
    """A node, partition or cluster name a record may carry (it reaches srun's argv and a
    file's key): ASCII letters, digits and ``._-``, not starting with ``-``, at most 200."""
    return 0 < len(text) <= 200 and _NAME_CHARS.issuperset(text) and not text.startswith("-")


def publish(ep: Endpoint) -> Path:
    """Write the record (atomic, 0600) in its job's 0700 folder; the session's side."""
    from pathlib import Path

    from interactive_slurm.base import folders
    from interactive_slurm.base.fsutil import write_private_atomic

    path = Path(folders.endpoint_file(ep.job_id))
    folders.ensure_private_dir(path.parent)
    write_private_atomic(path, ep.to_json())
    return path


def read(path: StrPath) -> Endpoint:
    """The record at ``path``: :class:`CorruptRecordError` if it does not parse (stale: callers
    drop it), another :class:`EndpointError` if it is unsafe; FileNotFoundError passes."""
    try:
        text = read_private(path)
    except UnicodeDecodeError as exc:
        raise CorruptRecordError(f"{path}: not UTF-8 text: {exc}") from exc
    ep = from_json(text, path)
    st = os.stat(path)
    ep.identity = (st.st_dev, st.st_ino, st.st_mtime)
    return ep


def expired(ep: Endpoint, now: float | None = None) -> bool:
    """Whether the session stopped renewing the record (its lease ran out)."""
    if ep.identity is None:
        return False
    return (time.time() if now is None else now) - ep.identity[2] > LEASE_SECONDS


def is_job_id(text: str) -> bool:
    return 0 < len(text) <= 20 and text.isascii() and text.isdigit()


def check_job_id(job_id: str) -> str:
    if not is_job_id(job_id):
        raise EndpointError(f"invalid job id {job_id!r}: expected digits only")
    return job_id


def read_job(job_id: str) -> Endpoint | None:
    check_job_id(job_id)
    path = folders.endpoint_file(job_id)
    try:
        return read(path)
    except FileNotFoundError:
        return None


def _is_own_file(path: StrPath) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return st.st_uid == os.getuid()


def find(
    kind: str | None = None, profile: str | None = None, container: str | None = None,
    *, broken: list[str] | None = None,
) -> list[Endpoint]:
    """Readable endpoints matching the filters (None: any), newest first; bad files skipped.

    With ``broken``, the paths of our own records that cannot be used (corrupt, an older
    format) are appended to it: callers on the proxy path remove them as stale.
    """
    folders.check_trusted()  # StrictModes for config, known_hosts, profiles and state
    found = []
    folder = folders.jobs_dir()
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise UnsafePathError(f"{folder}: cannot list the session records: {exc.strerror}; "
                              f"check its owner and mode (chmod 700 {folder})") from exc
    for entry in entries:
        path = os.path.join(entry.path, "endpoint.json")
        try:
            ep = read(path)
        except FileNotFoundError:
            continue
        except (EndpointError, OSError, UnicodeDecodeError):
            if broken is not None and _is_own_file(path):
                broken.append(path)
            continue
        if kind is not None and ep.kind != kind:
            continue
        if profile is not None and ep.profile != profile:
            continue
        if container is not None and ep.container != container:
            continue
        found.append(ep)
    return sorted(found, key=lambda ep: ep.started_at, reverse=True)


def discard(ep: Endpoint) -> bool:
    """Remove ``ep``'s record if the file is still the one it was read from (not a newer one)."""
    path = folders.endpoint_file(ep.job_id)
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if ep.identity is not None and (st.st_dev, st.st_ino) != ep.identity[:2]:
        return False
    unlink_if_present(path)
    return True


def still_published(ep: Endpoint) -> bool:
    """Whether ``ep``'s record is still the file it was read from (its session has not
    withdrawn it)."""
    try:
        st = os.stat(folders.endpoint_file(ep.job_id))
    except OSError:
        return False
    return ep.identity is None or (st.st_dev, st.st_ino) == ep.identity[:2]


def remove(job_id: str) -> None:
    unlink_if_present(folders.endpoint_file(job_id))


def ended_note(job_id: str) -> str | None:
    """Why the job's session ended, if it left a note (``was cancelled``, ...)."""
    try:
        text = read_private(os.path.join(folders.job_dir(job_id), ENDED_NOTE))
    except (OSError, EndpointError, UnicodeDecodeError):
        return None
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:200] or None


#: How long a job's folder with only an ``ended`` note stays for proxies to read it.
ENDED_KEEP_SECONDS = 600.0


def prune(live_job_ids: set[str]) -> list[str]:
    """Remove the folders of jobs that are no longer in the queue; returns their ids.

    ``live_job_ids`` must come from a queue listing made *before* this call: a job is listed
    from submission on, so a session that is still alive is never pruned. A fresh ``ended`` note
    stays a while for the proxies whose connection it ended.
    """
    import shutil
    from pathlib import Path

    removed = []
    try:
        entries = list(os.scandir(folders.jobs_dir()))
    except FileNotFoundError:
        return []
    now = time.time()
    for entry in entries:
        if not is_job_id(entry.name) or entry.name in live_job_ids:
            continue
        folder = Path(entry.path)
        if not _is_own_file(folder):
            continue
        has_record = (folder / "endpoint.json").exists()
        try:
            note_age = now - os.stat(folder / ENDED_NOTE).st_mtime
        except OSError:
            note_age = None
        if not has_record and note_age is not None and note_age < ENDED_KEEP_SECONDS:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        if has_record:
            removed.append(entry.name)
    return removed
