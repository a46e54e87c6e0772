"""node/apprecipes.py: the shipped recipes, validation messages, the user's and the site's
folders before the shipped one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tomli_w

from interactive_slurm.base import folders
from interactive_slurm.base.errors import ConfigError, UnsafePathError
from interactive_slurm.node import apprecipes


def data(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "description": "Demo", "package": "demo (PyPI)", "install": "pip install --user demo",
        "listen": "unix", "command": ["demo", "--socket={socket}", "--root={workdir}"],
        "token": "env", "ready": "/api", "env": {"DEMO_TOKEN": "{token}"},
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def write(folder: Path, name: str, content: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / f"{name}.toml"
    path.write_text(tomli_w.dumps(content))
    path.chmod(0o600)
    return path


def test_the_shipped_recipes() -> None:
    shipped = {name: apprecipes.load(name) for name in ("jupyter", "lab", "code-server", "tensorboard")}
    assert set(apprecipes.available()) >= set(shipped)
    for recipe in shipped.values():
        assert recipe.source.parent == apprecipes.SHIPPED_DIR
        assert all("{token}" not in part for part in recipe.command)
        assert recipe.install and recipe.package
    jupyter, lab, board, code = (shipped[n] for n in ("jupyter", "lab", "tensorboard", "code-server"))
    assert (jupyter.listen, jupyter.token_via, jupyter.requires) == ("unix", "env", ("jupyter-notebook",))
    assert dict(jupyter.env)["JUPYTER_TOKEN"] == "{token}"
    assert (lab.url, lab.requires) == ("/lab", ("jupyter-lab",))
    assert (board.listen, board.guarded, board.requires) == ("tcp", True, ("tensorboard",))
    assert (code.listen, code.guarded) == ("unix", True)
    assert "pip install --user notebook" in jupyter.install


def test_render_puts_in_the_values_and_keeps_literal_braces() -> None:
    recipe = apprecipes.parse("demo", data(command=["demo", "--socket={socket}", "{{literal}}"],
                                           log="{runtime}/demo.log"), Path("demo.toml"))
    argv, env, log = recipe.render({"socket": "/s", "port": "0", "workdir": "/w",
                                    "runtime": "/r", "token": "T"})
    assert argv == ["demo", "--socket=/s", "{literal}"]
    assert env == {"DEMO_TOKEN": "T"} and log == "/r/demo.log"
    assert recipe.requires == ("demo",) and recipe.ready_timeout == 120 and recipe.url == "/"


@pytest.mark.parametrize(("changes", "message"), [
    ({"colour": "red"}, "colour = 'red': unknown key; valid keys: description, package"),
    ({"ready": None}, "ready is missing (every recipe needs description, package, install"),
    ({"listen": "udp"}, "listen = 'udp': expected one of: unix, tcp"),
    ({"token": "argv"}, "token = 'argv': expected one of: env, guard"),
    ({"command": []}, "command = []: expected a non-empty list of strings"),
    ({"command": "demo"}, "command = 'demo': expected a non-empty list of strings"),
    ({"command": ["demo", "--sock={socket}", "--token={token}"]},
     "command = '--token={token}': the token must not be on the command line (every user of the "
     "node can read it with ps)"),
    ({"command": ["demo", "--sock={socket}", "--x={home}"]},
     "command = '--x={home}': unknown placeholder {home}; this key may use {socket}, {workdir}, "
     "{runtime}"),
    ({"command": ["demo", "--sock={socket", "x"]}, "command = '--sock={socket': "),
    ({"command": ["demo", "--port={port}"]},
     "unknown placeholder {port}; this key may use {socket}, {workdir}, {runtime}"),
    ({"command": ["demo", "--root={workdir}"]},
     "a listen = \"unix\" app must be told where to listen: put {socket} in its command"),
    ({"listen": "tcp"}, "unknown placeholder {socket}; this key may use {port}, {workdir}, {runtime}"),
    ({"command": ["../demo", "{socket}"]}, "command = '../demo': expected a program name"),
    ({"env": {}}, "token = 'env': token = \"env\" needs {token} in an [env] value"),
    ({"token": "guard"}, "token = 'guard': with token = \"guard\" the app must not get the token"),
    ({"env": {"BAD-NAME": "{token}"}}, "env = 'BAD-NAME': expected an environment variable name"),
    ({"env": {"T": "{token}", "X": "{colour}"}}, "env.X = '{colour}': unknown placeholder {colour}"),
    ({"ready": "api"}, "ready = 'api': expected an HTTP path such as \"/lab\""),
    ({"url": "/a b"}, "url = '/a b': expected an HTTP path"),
    ({"requires": "jupyter"}, "requires = 'jupyter': expected a non-empty list of program names"),
    ({"requires": ["a;b"]}, "requires = 'a;b': expected a program name or an absolute path"),
    ({"ready_timeout": 0}, "ready_timeout = 0: expected whole seconds from 1 to 3600"),
    ({"ready_timeout": True}, "ready_timeout = True: expected whole seconds from 1 to 3600"),
    ({"description": "two\nlines"}, "description = 'two\\nlines': expected one line"),
    ({"install": "\x1b[31mred"}, "install = '\\x1b[31mred': control characters are not allowed"),
    ({"log": "relative.log"}, "log = 'relative.log': expected an absolute path, or one under {runtime}"),
    ({"log": "{token}.log"}, "log = '{token}.log': unknown placeholder {token}"),
])
def test_bad_values_are_refused_with_the_file_and_key(changes: dict[str, Any], message: str) -> None:
    source = Path("/x/apps/demo.toml")
    with pytest.raises(ConfigError) as info:
        apprecipes.parse("demo", data(**changes), source)
    assert str(info.value).startswith(f"{source}: "), str(info.value)
    assert message in str(info.value), str(info.value)


def test_the_users_and_the_sites_recipes_come_first(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    monkeypatch.setattr(apprecipes, "SITE_DIR", site)
    assert apprecipes.search_path() == (Path(folders.apps_dir()), site, apprecipes.SHIPPED_DIR)
    write(site, "lab", data(description="The site's lab"))
    write(site, "rstudio", data(description="The site's RStudio"))
    assert apprecipes.load("lab").description == "The site's lab"
    write(Path(folders.apps_dir()), "lab", data(description="My lab"))
    assert apprecipes.load("lab").description == "My lab"
    assert apprecipes.load("rstudio").source == site / "rstudio.toml"
    assert apprecipes.load("tensorboard").source.parent == apprecipes.SHIPPED_DIR
    assert {"lab", "rstudio", "jupyter"} <= set(apprecipes.available())


def test_an_unknown_app_lists_the_known_ones_and_where_to_add_one() -> None:
    with pytest.raises(ConfigError) as info:
        apprecipes.load("rstudio")
    assert "no app recipe 'rstudio'; available: code-server, jupyter, lab, tensorboard" in str(info.value)
    assert str(Path(folders.apps_dir()) / "rstudio.toml") in str(info.value)
    with pytest.raises(ConfigError, match="app name 'Lab;x'"):
        apprecipes.load("Lab;x")


def test_a_recipe_others_could_change_is_refused() -> None:
    path = write(Path(folders.apps_dir()), "lab", data())
    path.chmod(0o620)
    with pytest.raises(UnsafePathError, match=r"lab\.toml: refusing: writable by group or others"):
        apprecipes.load("lab")
