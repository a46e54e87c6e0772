"""A wheel of this package from a source tree, without setuptools or the network.

The updater builds the release it installs from the tag's files (read from git), on a login node
whose venvs have no setuptools and maybe no internet. The package is pure Python and its
``pyproject.toml`` names everything a wheel needs, so the wheel is made here directly: the
``[project]`` table becomes ``METADATA`` and ``entry_points.txt``; the files are the ``.py`` files
of each package in ``[tool.setuptools] packages`` plus its ``package-data`` globs. A tree whose
``pyproject.toml`` uses anything else (dynamic fields, package discovery) is refused with a message
naming the key, rather than built wrong. The zip is deterministic: the same tree gives the same
bytes, so the same release gets the same install id (see :mod:`installs`). :func:`write_wheel` is
the one wheel writer: the laptop's setup repacks installed distributions with it too.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from interactive_slurm.base import tomlio
from interactive_slurm.base.errors import InteractiveSlurmError

_EPOCH = (1980, 1, 1, 0, 0, 0)
_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
_VERSION = re.compile(r"^[0-9]+(\.[0-9]+)*((a|b|rc)[0-9]+)?(\.post[0-9]+)?(\.dev[0-9]+)?$")
_SUPPORTED_PROJECT = {"name", "version", "description", "readme", "requires-python", "license",
                      "dependencies", "optional-dependencies", "scripts", "authors", "urls",
                      "classifiers", "keywords"}


class BuildError(InteractiveSlurmError):
    """The source tree cannot be built into a wheel here."""


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def write_wheel(target: Path, files: Mapping[str, bytes], info_dir: str) -> Path:
    """Write ``files`` (``/``-separated archive names -> bytes) and their ``RECORD`` as ``target``.

    The same files give the same bytes: fixed dates and modes, ``RECORD`` listing the files by
    name, the entries in name order with the ``.dist-info`` folder last (as PEP 427 asks).
    """
    record_name = f"{info_dir}/RECORD"
    record = [f"{path},{_record_hash(data)},{len(data)}" for path, data in sorted(files.items())]
    record.append(f"{record_name},,")
    content = {**files, record_name: ("\n".join(record) + "\n").encode()}
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(content, key=lambda p: (p.split("/", 1)[0] == info_dir, p)):
            entry = zipfile.ZipInfo(path, date_time=_EPOCH)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(entry, content[path])
    return target


def _strings(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BuildError(f"pyproject.toml: {what} = {value!r}: expected a list of strings")
    return list(value)


def _requirement(req: str, extra: str | None = None) -> str:
    if extra is None:
        return req
    spec, sep, marker = req.partition(";")
    clause = f'extra == "{extra}"'
    return f"{spec.strip()}; ({marker.strip()}) and {clause}" if sep else f"{spec.strip()}; {clause}"


def metadata(project: Mapping[str, Any]) -> tuple[str, str, str]:
    """(name, version, METADATA text) of a ``[project]`` table."""
    unknown = sorted(set(project) - _SUPPORTED_PROJECT)
    if unknown:
        raise BuildError(f"pyproject.toml: [project] {unknown[0]}: not supported by the updater's "
                         "wheel builder")
    name, version = project.get("name"), project.get("version")
    if not isinstance(name, str) or not _NAME.match(name):
        raise BuildError(f"pyproject.toml: [project] name = {name!r}: expected a package name")
    if not isinstance(version, str) or not _VERSION.match(version):
        raise BuildError(f"pyproject.toml: [project] version = {version!r}: expected a release "
                         "version such as 1.2.3 or 1.2.3rc1")
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    if isinstance(project.get("description"), str):
        lines.append(f"Summary: {project['description']}")
    if isinstance(project.get("requires-python"), str):
        lines.append(f"Requires-Python: {project['requires-python']}")
    lic = project.get("license")
    if isinstance(lic, dict) and isinstance(lic.get("text"), str):
        lines.append(f"License: {lic['text']}")
    for req in _strings(project.get("dependencies", []), "[project] dependencies"):
        lines.append(f"Requires-Dist: {_requirement(req)}")
    extras = project.get("optional-dependencies", {})
    if not isinstance(extras, dict):
        raise BuildError(f"pyproject.toml: [project] optional-dependencies = {extras!r}: "
                         "expected a table")
    for extra, reqs in sorted(extras.items()):
        lines.append(f"Provides-Extra: {extra}")
        for req in _strings(reqs, f"[project.optional-dependencies] {extra}"):
            lines.append(f"Requires-Dist: {_requirement(req, extra)}")
    return name, version, "\n".join(lines) + "\n"


def entry_points(project: Mapping[str, Any]) -> str:
    scripts = project.get("scripts", {})
    if not isinstance(scripts, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in scripts.items()
    ):
        raise BuildError(f"pyproject.toml: [project.scripts] = {scripts!r}: expected name = "
                         '"module:function" pairs')
    lines = ["[console_scripts]", *(f"{k} = {v}" for k, v in sorted(scripts.items()))]
    return "\n".join(lines) + "\n"


def package_files(files: Mapping[str, bytes], setuptools: Mapping[str, Any]) -> dict[str, bytes]:
    """The files the wheel holds: each package's ``.py`` files and its package data."""
    packages = _strings(setuptools.get("packages"), "[tool.setuptools] packages")
    data = setuptools.get("package-data", {})
    if not isinstance(data, dict):
        raise BuildError(f"pyproject.toml: [tool.setuptools.package-data] = {data!r}: expected a table")
    chosen: dict[str, bytes] = {}
    for package in packages:
        folder = package.replace(".", "/") + "/"
        if folder + "__init__.py" not in files:
            raise BuildError(f"pyproject.toml: package {package!r} has no {folder}__init__.py")
        globs = _strings(data.get(package, []), f"[tool.setuptools.package-data] {package}")
        for path, content in files.items():
            if not path.startswith(folder):
                continue
            rel = path[len(folder):]
            if ("/" not in rel and rel.endswith(".py")) or any(fnmatch.fnmatch(rel, g) for g in globs):
                chosen[path] = content
    return chosen


def build(files: Mapping[str, bytes], dest: Path) -> Path:
    """Build the wheel of the tree ``files`` (path -> bytes, ``/``-separated) into ``dest``."""
    if "pyproject.toml" not in files:
        raise BuildError("the source tree has no pyproject.toml")
    pyproject = tomlio.loads(files["pyproject.toml"].decode(), Path("pyproject.toml"))
    project = pyproject.get("project")
    if not isinstance(project, dict):
        raise BuildError("pyproject.toml: no [project] table")
    if project.get("dynamic"):
        raise BuildError(f"pyproject.toml: [project] dynamic = {project['dynamic']!r}: not supported "
                         "by the updater's wheel builder")
    name, version, meta = metadata(project)
    setuptools = pyproject.get("tool", {}).get("setuptools", {})
    if not isinstance(setuptools, dict):
        raise BuildError("pyproject.toml: [tool.setuptools] is not a table")
    content = package_files(files, setuptools)
    dist = re.sub(r"[-_.]+", "_", name).lower()
    info = f"{dist}-{version}.dist-info"
    content[f"{info}/METADATA"] = meta.encode()
    content[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: interactive-slurm-updater\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n"
    )
    content[f"{info}/entry_points.txt"] = entry_points(project).encode()
    return write_wheel(dest / f"{dist}-{version}-py3-none-any.whl", content, info)
