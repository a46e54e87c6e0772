"""Wheels for the cluster install, made from what is installed here (no index, no compiler).

The cluster side is pure Python, so the wheels of this package and of its cluster-side
dependencies can be rebuilt from the installed files (a wheel is a zip of them plus its
``.dist-info``). A dependency whose installed version does not run on the cluster's Python
(``Requires-Python``), or that is not installed here, is fetched with ``pip download`` for that
Python instead; if that fails too, the error says which package and why. Versions, specifiers and
markers are read with ``packaging`` (a laptop dependency); the zip is
:func:`interactive_slurm.install.wheelbuild.write_wheel`'s, the updater's own writer.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.markers import InvalidMarker, Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name

from interactive_slurm.base.errors import InteractiveSlurmError
from interactive_slurm.base.runner import Runner
from interactive_slurm.install.wheelbuild import write_wheel

ROOT_PACKAGE = "interactive-slurm"
_SKIP_DIST_INFO = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}


class WheelError(InteractiveSlurmError):
    """A wheel for the cluster could not be made or fetched."""


# --- requirement markers and Requires-Python, as they read on a Linux cluster -----------------

#: What a marker may ask about the cluster: its Python version, and that it is Linux and CPython.
#: The rest (its machine, its kernel, its full Python version) is not known here, and the laptop's
#: own values would be wrong for it.
_UNKNOWN = ("platform_machine", "platform_release", "platform_version", "python_full_version",
            "implementation_version")


def _cluster_environment(py: tuple[int, int]) -> dict[str, str]:
    return {"python_version": f"{py[0]}.{py[1]}", "sys_platform": "linux", "platform_system": "Linux",
            "os_name": "posix", "implementation_name": "cpython",
            "platform_python_implementation": "CPython",
            "extra": ""}  # requirements behind an extra (the laptop's asyncssh) stay here


def python_ok(requires_python: str | None, py: tuple[int, int]) -> bool:
    """Whether ``py`` satisfies a ``Requires-Python`` such as ``>=3.9,!=3.9.1``."""
    if not requires_python:
        return True
    try:
        spec = SpecifierSet(requires_python)
    except InvalidSpecifier:
        return True  # as pip does: an unreadable Requires-Python excludes nothing
    return spec.contains(f"{py[0]}.{py[1]}", prereleases=True)


def marker_applies(marker: str | Marker, py: tuple[int, int]) -> bool:
    """Evaluate a requirement marker for a Linux cluster running Python ``py``."""
    text = str(marker)
    unknown = [name for name in _UNKNOWN if name in text]
    if unknown:
        raise WheelError(f"cannot evaluate the requirement marker {text!r} for the cluster "
                         f"({unknown[0]} is not known here)")
    try:
        parsed = marker if isinstance(marker, Marker) else Marker(marker)
    except InvalidMarker as exc:
        raise WheelError(f"cannot evaluate the requirement marker {text!r}") from exc
    return parsed.evaluate(_cluster_environment(py))


def cluster_distributions(py: tuple[int, int], root: str = ROOT_PACKAGE) -> list[str]:
    """This package and everything it needs on a Linux cluster with Python ``py`` (names)."""
    wanted: list[str] = []
    todo = [root]
    while todo:
        name = todo.pop(0)
        if canonicalize_name(name) in (canonicalize_name(w) for w in wanted):
            continue
        wanted.append(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # fetched below; its own dependencies are resolved by pip download
        for text in requires:
            try:
                req = Requirement(text)
            except InvalidRequirement as exc:
                raise WheelError(f"cannot read the requirement {text!r}") from exc
            if req.marker is None or marker_applies(req.marker, py):
                todo.append(req.name)
    return wanted


# --- building a wheel from an installed distribution ------------------------------------------

@dataclass(frozen=True)
class Built:
    name: str
    path: Path
    how: str  # "repacked" or "downloaded"


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
    content: dict[str, bytes] = {}
    for rel in files:
        parts = rel.parts
        if parts[0] == ".." or "__pycache__" in parts or rel.suffix == ".pyc":
            continue
        if parts[0] == info_dir and len(parts) == 2 and parts[1] in _SKIP_DIST_INFO:
            continue
        path = Path(str(dist.locate_file(rel)))
        if not path.is_file():
            raise WheelError(f"{name}: installed file {path} is missing; reinstall {name}")
        content["/".join(parts)] = path.read_bytes()
    return write_wheel(dest / filename, content, info_dir)


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
                if canonicalize_name(name) == ROOT_PACKAGE:
                    raise
        built.append(Built(name, _download(runner, name, dest, py), "downloaded"))
    return built
