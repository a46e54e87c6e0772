"""Wheels for the cluster install, made from what is installed here (no index, no compiler).

The cluster side is pure Python, so the wheels of this package and of its cluster-side
dependencies can be rebuilt from the installed files (a wheel is a zip of them plus its
``.dist-info``). A dependency whose installed version does not run on the cluster's Python
(``Requires-Python``), or that is not installed here, is fetched with ``pip download`` for that
Python instead; if that fails too, the error says which package and why.
"""

from __future__ import annotations

import base64
import hashlib
import re
import sys
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from interactive_slurm.base.errors import InteractiveSlurmError
from interactive_slurm.base.runner import Runner

ROOT_PACKAGE = "interactive-slurm"
_SKIP_DIST_INFO = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}


class WheelError(InteractiveSlurmError):
    """A wheel for the cluster could not be made or fetched."""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# --- requirement markers and Requires-Python, for the few forms our dependencies use ---------

def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def _compare(left: tuple[int, ...], op: str, right: tuple[int, ...]) -> bool:
    width = max(len(left), len(right))
    a = left + (0,) * (width - len(left))
    b = right + (0,) * (width - len(right))
    return {
        ">=": a >= b, ">": a > b, "<=": a <= b, "<": a < b, "==": a == b, "!=": a != b,
        "~=": a >= b and a[: len(right) - 1] == b[: len(right) - 1],
    }[op]


def python_ok(requires_python: str | None, py: tuple[int, int]) -> bool:
    """Whether ``py`` satisfies a ``Requires-Python`` such as ``>=3.9,!=3.9.1``."""
    if not requires_python:
        return True
    for clause in requires_python.split(","):
        m = re.match(r"\s*(~=|>=|<=|==|!=|>|<)\s*([\d.*]+)\s*$", clause)
        if not m:
            continue
        op, ver = m.groups()
        if ver.endswith(".*"):
            same = _version_tuple(ver)[: len(_version_tuple(ver))] == py[: len(_version_tuple(ver))]
            if (op == "==" and not same) or (op == "!=" and same):
                return False
            continue
        # Compare only as far as the clause goes for ==/!= (3.9 == 3.9.x), fully otherwise.
        target = _version_tuple(ver)
        here: tuple[int, ...] = py if op not in ("==", "!=") else py[: len(target)]
        if not _compare(here, op, target):
            return False
    return True


def marker_applies(marker: str, py: tuple[int, int]) -> bool:
    """Evaluate a requirement marker for a Linux cluster running Python ``py``.

    Requirements behind an ``extra`` (the laptop's asyncssh) never go to the cluster.
    """
    if "extra" in marker:
        return False
    env = {"python_version": f"{py[0]}.{py[1]}", "sys_platform": "linux", "platform_system": "Linux",
           "os_name": "posix", "implementation_name": "cpython",
           "platform_python_implementation": "CPython"}
    for alternative in re.split(r"\s+or\s+", marker):
        results = []
        for term in re.split(r"\s+and\s+", alternative.strip("() ")):
            m = re.match(r"\s*(\w+)\s*(~=|>=|<=|==|!=|>|<)\s*['\"]([^'\"]*)['\"]\s*$", term)
            if not m or m.group(1) not in env:
                raise WheelError(f"cannot evaluate the requirement marker {marker!r}")
            name, op, value = m.groups()
            if name == "python_version":
                results.append(_compare(_version_tuple(env[name]), op, _version_tuple(value)))
            elif op in ("==", "!="):
                results.append((env[name] == value) == (op == "=="))
            else:
                raise WheelError(f"cannot evaluate the requirement marker {marker!r}")
        if all(results):
            return True
    return False


def _requirement_name(req: str) -> tuple[str, str]:
    """(name, marker) of a ``Requires-Dist`` value."""
    spec, _, marker = req.partition(";")
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec)
    if not m:
        raise WheelError(f"cannot read the requirement {req!r}")
    return m.group(1), marker.strip()


def cluster_distributions(py: tuple[int, int], root: str = ROOT_PACKAGE) -> list[str]:
    """This package and everything it needs on a Linux cluster with Python ``py`` (names)."""
    wanted: list[str] = []
    todo = [root]
    while todo:
        name = todo.pop(0)
        if canonical(name) in (canonical(w) for w in wanted):
            continue
        wanted.append(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # fetched below; its own dependencies are resolved by pip download
        for req in requires:
            dep, marker = _requirement_name(req)
            if not marker or marker_applies(marker, py):
                todo.append(dep)
    return wanted


# --- building a wheel from an installed distribution ------------------------------------------

@dataclass(frozen=True)
class Built:
    name: str
    path: Path
    how: str  # "repacked" or "downloaded"


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def _entry(name: str) -> zipfile.ZipInfo:
    """A zip entry with a fixed date: the same files make the same wheel, byte for byte, so
    setup can tell an install it has already made (its id is a digest of the wheels)."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def repack(dist: metadata.Distribution, dest: Path) -> Path:
    """Rebuild the wheel of an installed pure-Python distribution into ``dest``."""
    name = dist.metadata["Name"]
    files = list(dist.files or [])
    info = next((f for f in files if f.parts[0].endswith(".dist-info")), None)
    if info is None:
        raise WheelError(f"{name}: installed without a RECORD; cannot rebuild its wheel")
    info_dir = info.parts[0]
    wheel_meta = dist.read_text("WHEEL") or ""
    if "Root-Is-Purelib: true" not in wheel_meta:
        raise WheelError(f"{name}: not a pure-Python install")
    tags = re.findall(r"^Tag:\s*(\S+)$", wheel_meta, re.M)
    if not tags or not all(t.endswith("-none-any") for t in tags):
        raise WheelError(f"{name}: installed wheel is platform-specific ({', '.join(tags) or 'no tag'})")
    if dist.read_text("direct_url.json") and '"editable": true' in (dist.read_text("direct_url.json") or ""):
        raise WheelError(f"{name}: an editable install cannot be repacked")
    tag = ".".join(sorted({t.split("-")[0] for t in tags})) + "-none-any"
    filename = f"{re.sub(r'[-.]+', '_', name)}-{dist.version}-{tag}.whl"
    target = dest / filename
    record: list[str] = []
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel in sorted(files, key=str):
            parts = rel.parts
            if parts[0] == ".." or "__pycache__" in parts or rel.suffix == ".pyc":
                continue
            if parts[0] == info_dir and len(parts) == 2 and parts[1] in _SKIP_DIST_INFO:
                continue
            path = Path(str(dist.locate_file(rel)))
            if not path.is_file():
                raise WheelError(f"{name}: installed file {path} is missing; reinstall {name}")
            data = path.read_bytes()
            arcname = "/".join(parts)
            zf.writestr(_entry(arcname), data)
            record.append(f"{arcname},{_record_hash(data)},{len(data)}")
        record.append(f"{info_dir}/RECORD,,")
        zf.writestr(_entry(f"{info_dir}/RECORD"), "\n".join(record) + "\n")
    return target


def _download(runner: Runner, name: str, dest: Path, py: tuple[int, int]) -> Path:
    before = set(dest.glob("*.whl"))
    result = runner.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
         "--no-deps", "--only-binary=:all:", "--python-version", f"{py[0]}.{py[1]}",
         "--platform", "any", "--implementation", "py", "--dest", str(dest), name],
        timeout=300, check=False,
    )
    new = sorted(set(dest.glob("*.whl")) - before)
    if result.returncode != 0 or not new:
        detail = (result.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise WheelError(
            f"{name}: no wheel for the cluster's Python {py[0]}.{py[1]} here, and pip download "
            f"failed: {detail}"
        )
    return new[0]


def build_all(runner: Runner, dest: Path, py: tuple[int, int],
              names: Iterable[str] | None = None) -> list[Built]:
    """Wheels of this package, its cluster dependencies and pip itself, for Python ``py``."""
    built: list[Built] = []
    for name in [*(names if names is not None else cluster_distributions(py)), "pip"]:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            dist = None
        if dist is not None and python_ok(dist.metadata["Requires-Python"], py):
            try:
                built.append(Built(name, repack(dist, dest), "repacked"))
                continue
            except WheelError:
                if canonical(name) == ROOT_PACKAGE:
                    raise
        built.append(Built(name, _download(runner, name, dest, py), "downloaded"))
    return built
