"""VS Code's user settings for our hosts: where the settings.json files are, and the surgical edit.

Remote-SSH needs three settings for a ProxyCommand host whose session may wait in a Slurm queue:

- ``remote.SSH.connectTimeout``: seconds to wait for the connection (the queue wait counts);
- ``remote.SSH.remotePlatform``: ``{"<host>": "linux"}`` so VS Code does not ask, or guess wrong;
- ``remote.SSH.showLoginTerminal``: ``true``, so password and 2FA prompts can be answered.

and, when VS Code's server should not go to the cluster's home directory (a tight quota, or the
user said so), ``remote.SSH.serverInstallPath``: ``{"<host>": "/scratch/alice"}`` (VS Code makes
``.vscode-server`` inside that folder). Its entries are setup's only while they hold the value
setup wrote: one the user set is never overwritten nor removed.

``plan``/``unplan`` are pure functions of the file's text; reading, backups and the atomic write
belong to the caller, which prints ``manual_snippet`` when a file cannot be edited safely.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from interactive_slurm.base.errors import InteractiveSlurmError
from interactive_slurm.laptop import jsonc

PRODUCTS = ("Code", "Code - Insiders", "VSCodium", "Cursor")
"""The editors that share VS Code's settings layout: their folder names under the config dir."""

CONNECT_TIMEOUT = "remote.SSH.connectTimeout"
REMOTE_PLATFORM = "remote.SSH.remotePlatform"
SHOW_LOGIN_TERMINAL = "remote.SSH.showLoginTerminal"
SERVER_INSTALL_PATH = "remote.SSH.serverInstallPath"
PLATFORM = "linux"


class VSCodeSettingsError(InteractiveSlurmError):
    """A settings.json that cannot be edited safely; nothing was changed."""


def _config_root(system: str, home: Path, env: Mapping[str, str]) -> Path:
    """The folder that holds ``<Product>/User`` (VSCODE_APPDATA overrides it, as in VS Code)."""
    if env.get("VSCODE_APPDATA"):
        return Path(env["VSCODE_APPDATA"])
    if system == "Windows":
        return Path(env["APPDATA"]) if env.get("APPDATA") else home / "AppData" / "Roaming"
    if system == "Darwin":
        return home / "Library" / "Application Support"
    xdg = env.get("XDG_CONFIG_HOME", "")
    return Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".config"


def settings_files(system: str, home: Path, env: Mapping[str, str]) -> list[tuple[str, Path]]:
    """(product, settings.json path) for each known editor whose ``User`` folder exists.

    ``system`` is a value of ``platform.system()``; the settings file itself may not exist yet.
    """
    root = _config_root(system, home, env)
    return [
        (product, root / product / "User" / "settings.json")
        for product in PRODUCTS
        if (root / product / "User").is_dir()
    ]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check(text: str) -> Any:
    """The settings as Python values ({} for an empty file); an error unless we can edit them safely."""
    settings = {} if jsonc.is_empty(text) else jsonc.loads(text)
    if not isinstance(settings, dict):
        raise jsonc.JsoncError("the top-level value is not an object")
    for ours in (CONNECT_TIMEOUT, REMOTE_PLATFORM, SHOW_LOGIN_TERMINAL, SERVER_INSTALL_PATH):
        jsonc.get(text, [ours])  # raises if the key appears twice
        for key, value in settings.items():
            if ours.startswith(key + ".") and isinstance(value, dict):
                raise jsonc.JsoncError(f"{json.dumps(key)} also sets {json.dumps(ours)} (nested form)")
    platforms = settings.get(REMOTE_PLATFORM, {})
    if not isinstance(platforms, dict):
        raise jsonc.JsoncError(f"{json.dumps(REMOTE_PLATFORM)} is not an object of host: platform")
    return settings


def own_server_paths(text: str, hosts: Sequence[str], server_dir: str | None,
                     previous: str | None) -> dict[str, Any]:
    """Our hosts whose ``serverInstallPath`` the user set (neither what setup wrote before,
    ``previous``, nor what it would write now): :func:`plan` leaves them as they are."""
    try:
        paths = _check(text).get(SERVER_INSTALL_PATH, {})
    except jsonc.JsoncError:
        return {}
    if not isinstance(paths, dict):
        return {}
    return {h: paths[h] for h in hosts if h in paths and paths[h] not in (previous, server_dir)}


def _plan_server(text: str, settings: dict[str, Any], hosts: Sequence[str], new: str | None,
                 previous: str | None) -> str:
    """``serverInstallPath`` of our hosts set to ``new`` (None: taken out where it is still
    setup's ``previous``); a value the user set is kept."""
    paths = settings.get(SERVER_INSTALL_PATH)
    if paths is not None and not isinstance(paths, dict):
        raise jsonc.JsoncError(f"{json.dumps(SERVER_INSTALL_PATH)} is not an object of host: path")
    if paths is None:
        return jsonc.set_value(text, [SERVER_INSTALL_PATH], {h: new for h in hosts}) if new and hosts \
            else text
    for host in hosts:
        current = paths.get(host)
        if current is not None and current not in (previous, new):
            continue  # the user's own
        if new is not None and current != new:
            text = jsonc.set_value(text, [SERVER_INSTALL_PATH, host], new)
        elif new is None and current is not None:
            text = jsonc.remove(text, [SERVER_INSTALL_PATH, host])
    if paths and jsonc.source(text, [SERVER_INSTALL_PATH]) == "{}":
        text = jsonc.remove(text, [SERVER_INSTALL_PATH])
    return text


def plan(text: str, hosts: Sequence[str], connect_timeout: int, *, server_dir: str | None = None,
         previous_server_dir: str | None = None) -> str:
    """``text`` with the settings our hosts need; only the changed values and new members differ.

    An existing ``connectTimeout`` at least as large is kept; other hosts in ``remotePlatform`` are
    kept. ``server_dir``: our hosts' ``serverInstallPath`` (None: none of setup's; an entry that
    still holds ``previous_server_dir``, what setup wrote before, is taken out). Idempotent.
    VSCodeSettingsError (naming what failed) if the text cannot be edited safely.
    """
    if not _is_number(connect_timeout) or connect_timeout <= 0:
        raise ValueError(f"connect_timeout must be a positive number of seconds, not {connect_timeout!r}")
    try:
        settings = _check(text)
        current = settings.get(CONNECT_TIMEOUT)
        if not (_is_number(current) and current >= connect_timeout):
            text = jsonc.set_value(text, [CONNECT_TIMEOUT], connect_timeout)
        if hosts:
            if REMOTE_PLATFORM not in settings:
                text = jsonc.set_value(text, [REMOTE_PLATFORM], {host: PLATFORM for host in hosts})
            for host in hosts:
                text = jsonc.set_value(text, [REMOTE_PLATFORM, host], PLATFORM)
        if settings.get(SHOW_LOGIN_TERMINAL) is not True:
            text = jsonc.set_value(text, [SHOW_LOGIN_TERMINAL], True)
        if server_dir is not None or previous_server_dir is not None:
            text = _plan_server(text, settings, hosts, server_dir, previous_server_dir)
    except jsonc.JsoncError as exc:
        raise VSCodeSettingsError(f"cannot edit the VS Code settings safely: {exc}") from None
    return text


def replaced(text: str, connect_timeout: int) -> dict[str, Any]:
    """The user's own values of the global settings that :func:`plan` overwrites (a shorter
    ``connectTimeout``, a ``showLoginTerminal`` that is not true): kept by setup, so that
    :func:`unplan` puts them back."""
    try:
        settings = _check(text)
    except jsonc.JsoncError:
        return {}
    out: dict[str, Any] = {}
    current = settings.get(CONNECT_TIMEOUT)
    if current is not None and not (_is_number(current) and current >= connect_timeout):
        out[CONNECT_TIMEOUT] = current
    shown = settings.get(SHOW_LOGIN_TERMINAL)
    if shown is not None and shown is not True:
        out[SHOW_LOGIN_TERMINAL] = shown
    return out


def unplan(
    text: str, hosts: Sequence[str], *, remove_globals: bool, connect_timeout: int | None = None,
    restore: Mapping[str, Any] | None = None, server_dir: str | None = None,
) -> str:
    """``text`` without our hosts in ``remotePlatform`` (the key goes when nothing else is left in it)
    and without their ``serverInstallPath`` where it still is ``server_dir`` (what setup wrote).

    With ``remove_globals`` (the caller knows ``plan`` added them, or none other needs them), the
    global settings go back to what they were: the user's own value in ``restore``
    (:func:`replaced`) is set again, else ``showLoginTerminal: true`` and, if it still equals
    ``connect_timeout``, ``connectTimeout`` are removed; values the user changed since stay.
    """
    restore = restore or {}
    ours = {CONNECT_TIMEOUT: connect_timeout, SHOW_LOGIN_TERMINAL: True}
    try:
        settings = _check(text)
        platforms = settings.get(REMOTE_PLATFORM)
        if isinstance(platforms, dict):
            for host in hosts:
                text = jsonc.remove(text, [REMOTE_PLATFORM, host])
            if platforms and jsonc.source(text, [REMOTE_PLATFORM]) == "{}":
                text = jsonc.remove(text, [REMOTE_PLATFORM])
        if server_dir is not None:
            text = _plan_server(text, settings, hosts, None, server_dir)
        if remove_globals:
            for key, value in ours.items():
                current = settings.get(key)
                if value is None or current is None or current != value \
                        or isinstance(current, bool) != isinstance(value, bool):
                    continue  # changed since setup: the user's value stays
                if key in restore:
                    text = jsonc.set_value(text, [key], restore[key])
                else:
                    text = jsonc.remove(text, [key])
    except jsonc.JsoncError as exc:
        raise VSCodeSettingsError(f"cannot edit the VS Code settings safely: {exc}") from None
    return text


def manual_snippet(hosts: Sequence[str], connect_timeout: int, *,
                   server_dir: str | None = None) -> str:
    """The members to add by hand to settings.json, as JSON (an object, four-space indent)."""
    settings: dict[str, Any] = {CONNECT_TIMEOUT: connect_timeout}
    if hosts:
        settings[REMOTE_PLATFORM] = {host: PLATFORM for host in hosts}
    settings[SHOW_LOGIN_TERMINAL] = True
    if hosts and server_dir:
        settings[SERVER_INSTALL_PATH] = {host: server_dir for host in hosts}
    return json.dumps(settings, indent=4)
