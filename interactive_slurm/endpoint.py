"""The rendezvous record a session publishes and the proxy reads.

``<state>/jobs/<jobid>/endpoint.json``, mode 0600, written atomically once sshd answers. The
proxy's fast path reads only these files: no Slurm query when a session is reusable.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from interactive_slurm import paths
from interactive_slurm.errors import CorruptRecordError, EndpointError, UnsafePathError
from interactive_slurm.fsutil import read_private, write_private_atomic

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Endpoint:
    job_id: str
    kind: str
    profile: str
    host: str
    port: int
    host_key: str
    sshd_pid: int
    started_at: float
    container: str = ""
    version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


_FIELDS: dict[str, type] = {
    "job_id": str, "kind": str, "profile": str, "host": str, "port": int, "host_key": str,
    "sshd_pid": int, "started_at": float, "container": str, "version": int,
}


def from_json(text: str, source: Path) -> Endpoint:
    try:
        data: Any = json.loads(text)
    except ValueError as exc:
        raise CorruptRecordError(f"{source}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CorruptRecordError(f"{source}: expected a JSON object")
    values: dict[str, Any] = {}
    for key, typ in _FIELDS.items():
        value = data.get(key, "" if key == "container" else None)
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, typ) or isinstance(value, bool):
            raise CorruptRecordError(f"{source}: {key} = {value!r}: expected {typ.__name__}")
        values[key] = value
    if values["version"] != FORMAT_VERSION:  # another install's session: not ours to remove
        raise EndpointError(f"{source}: version {values['version']} is not {FORMAT_VERSION}")
    if not 0 < values["port"] < 65536:
        raise CorruptRecordError(f"{source}: port = {values['port']!r}: out of range")
    if not is_job_id(values["job_id"]) or source.parent.name != values["job_id"]:
        raise CorruptRecordError(
            f"{source}: job_id = {values['job_id']!r}: does not match its folder"
        )
    return Endpoint(**values)


def publish(ep: Endpoint) -> Path:
    path = paths.endpoint_file(ep.job_id)
    paths.ensure_private_dir(path.parent)
    write_private_atomic(path, ep.to_json())
    return path


def read(path: Path) -> Endpoint:
    """The record at ``path``: :class:`CorruptRecordError` if it is ours but does not parse
    (stale: remove it), another :class:`EndpointError` if it is unsafe or of another format
    version, FileNotFoundError if there is none."""
    try:
        text = read_private(path)
    except UnicodeDecodeError as exc:
        raise CorruptRecordError(f"{path}: not UTF-8 text: {exc}") from exc
    return from_json(text, path)


def is_job_id(text: str) -> bool:
    return 0 < len(text) <= 20 and text.isascii() and text.isdigit()


def check_job_id(job_id: str) -> str:
    if not is_job_id(job_id):
        raise EndpointError(f"invalid job id {job_id!r}: expected digits only")
    return job_id


def read_job(job_id: str) -> Endpoint | None:
    """The record of ``job_id``; None if there is none (a corrupt one is removed: stale)."""
    check_job_id(job_id)
    path = paths.endpoint_file(job_id)
    try:
        return read(path)
    except FileNotFoundError:
        return None
    except CorruptRecordError:
        discard_corrupt(path)
        return None


def find(
    kind: str | None = None, profile: str | None = None, container: str | None = None
) -> list[Endpoint]:
    """Readable endpoints matching the filters (None: any), newest first.

    The tool's own files are checked first (:func:`paths.check_trusted`: ``UnsafePathError``).
    A corrupt record of ours is stale: it is removed (only that file). Unsafe records, and
    records of another format version, are skipped. A jobs folder we may not read is an error
    naming it, never a traceback.
    """
    paths.check_trusted()  # StrictModes for config, known_hosts, profiles and state
    found = []
    folder = paths.jobs_dir()
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise UnsafePathError(f"{folder}: cannot list the session records: {exc.strerror}; "
                              f"check its owner and mode (chmod 700 {folder})") from exc
    for entry in entries:
        path = Path(entry.path) / "endpoint.json"
        try:
            ep = read(path)
        except CorruptRecordError:
            discard_corrupt(path)
            continue
        except (EndpointError, OSError):
            continue
        if kind is not None and ep.kind != kind:
            continue
        if profile is not None and ep.profile != profile:
            continue
        if container is not None and ep.container != container:
            continue
        found.append(ep)
    return sorted(found, key=lambda ep: ep.started_at, reverse=True)


def discard_corrupt(path: Path) -> None:
    """Remove a record :func:`read` found corrupt (it passed the ownership checks first)."""
    with contextlib.suppress(OSError):
        path.unlink()


def remove(job_id: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        paths.endpoint_file(job_id).unlink()


def prune(live_job_ids: set[str]) -> list[str]:
    """Remove the records of jobs that are no longer in the queue; returns their ids.

    ``live_job_ids`` must come from a queue listing made *before* this call: a job is listed
    from submission on, so a session that is still alive is never pruned.
    """
    import shutil

    removed = []
    for ep in find():
        if ep.job_id not in live_job_ids:
            shutil.rmtree(paths.job_dir(ep.job_id), ignore_errors=True)
            removed.append(ep.job_id)
    return removed
