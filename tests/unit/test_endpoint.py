"""endpoint.py: the record a session publishes, its file modes, and what readers refuse."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from interactive_slurm.base import folders
from interactive_slurm.base.errors import EndpointError
from interactive_slurm.connect import endpoint, fastjson
from interactive_slurm.connect.endpoint import Endpoint

SECRET = "5e" * 32


def make(job_id: str = "42", **changes: Any) -> Endpoint:
    values: dict[str, Any] = {
        "job_id": job_id, "kind": "cpu", "profile": "default", "host": "node01", "port": 23456,
        "session_pid": 4321, "started_at": 1700000000.5, "secret": SECRET,
    }
    values.update(changes)
    return Endpoint(**values)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_publish_and_read_round_trip(home: Path) -> None:
    ep = make()
    path = endpoint.publish(ep)
    assert path == home / "state" / "jobs" / "42" / "endpoint.json"
    assert endpoint.read(path) == ep
    assert endpoint.read_job("42") == ep
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert os.listdir(path.parent) == ["endpoint.json"]  # no temp file left behind


def test_publish_replaces_an_older_record() -> None:
    endpoint.publish(make(port=1000))
    endpoint.publish(make(port=2000))
    assert endpoint.read_job("42") == make(port=2000)


def test_read_job_without_a_record_is_none() -> None:
    assert endpoint.read_job("43") is None


def test_to_json_is_plain_sorted_json() -> None:
    data = json.loads(make(container="img").to_json())
    assert list(data) == sorted(data)
    assert data == {
        "container": "img", "ends_at": 0.0, "host": "node01",
        "host_key": "",  # for the readers of earlier releases only
        "job_id": "42", "kind": "cpu", "port": 23456, "profile": "default",
        "secret": SECRET, "session_pid": 4321, "started_at": 1700000000.5, "version": 2,
        "node": "", "partition": "", "cluster": "", "socket": "", "transport": "",
    }


def test_a_record_without_host_key_reads_and_one_of_an_earlier_release_too() -> None:
    """host_key is written (earlier releases require it) and never read."""
    data = json.loads(make().to_json())
    del data["host_key"]
    assert endpoint.from_json(json.dumps(data), SOURCE) == make()
    data["host_key"] = "ssh-ed25519 AAAA an earlier release's key"
    assert endpoint.from_json(json.dumps(data), SOURCE) == make()


def test_remove() -> None:
    endpoint.publish(make())
    endpoint.remove("42")
    endpoint.remove("42")  # already gone: fine
    assert endpoint.read_job("42") is None


SOURCE = Path("/state/jobs/42/endpoint.json")


def record(**changes: Any) -> str:
    data = json.loads(make().to_json())
    for key, value in changes.items():
        if value is KeyError:
            del data[key]
        else:
            data[key] = value
    return json.dumps(data)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "not valid JSON"),
        ("", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (record(port=KeyError), "port = None: expected int"),
        (record(host=KeyError), "host = None: expected str"),
        (record(port="22"), "port = '22': expected int"),
        (record(port=22.0), "port = 22.0: expected int"),
        (record(session_pid=True), "session_pid = True: expected int"),
        (record(secret=KeyError), "secret = None: expected str"),
        (record(secret="ab" * 31), "secret: expected 64 hex digits"),
        (record(secret="AB" * 32), "secret: expected 64 hex digits"),
        (record(started_at="now"), "started_at = 'now': expected float"),
        (record(job_id=42), "job_id = 42: expected str"),
        (record(version=1), "version 1 is not 2"),
        (record(session_pid=KeyError), "session_pid = None: expected int"),
        (record(version=KeyError), "version None is not 2"),
        (record(port=0), "port = 0: out of range"),
        (record(port=65536), "port = 65536: out of range"),
        (record(job_id="43"), "job_id = '43': does not match its folder"),
        (record(job_id="4x"), "job_id = '4x': does not match its folder"),
    ],
)
def test_from_json_errors_name_the_file(text: str, problem: str) -> None:
    with pytest.raises(EndpointError) as info:
        endpoint.from_json(text, SOURCE)
    assert str(info.value).startswith(f"{SOURCE}: {problem}"), str(info.value)


def test_from_json_defaults_and_conversions() -> None:
    ep = endpoint.from_json(record(container=KeyError, started_at=1700000000), SOURCE)
    assert ep == make(started_at=1700000000.0)
    assert isinstance(ep.started_at, float)


def test_read_refuses_a_group_writable_file() -> None:
    path = endpoint.publish(make())
    os.chmod(path, 0o620)
    with pytest.raises(EndpointError) as info:
        endpoint.read(path)
    assert str(info.value) == (f"{path}: refusing: writable by group or others (mode 0620); "
                               f"fix: chmod go-w {path}")


def test_read_refuses_a_file_in_a_group_writable_dir() -> None:
    path = endpoint.publish(make())
    os.chmod(path.parent, 0o770)
    with pytest.raises(EndpointError) as info:
        endpoint.read(path)
    assert str(info.value) == (f"{path.parent}: refusing: writable by group or others (mode 0770); "
                               f"fix: chmod go-w {path.parent}")


def test_read_refuses_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere.json"
    real.write_text(make().to_json())
    os.chmod(real, 0o600)
    path = Path(folders.endpoint_file("42"))
    folders.ensure_private_dir(path.parent)
    path.symlink_to(real)
    with pytest.raises(EndpointError, match=f"^{path}: cannot open"):
        endpoint.read(path)


def test_find_without_a_jobs_dir() -> None:
    assert endpoint.find() == []


def test_find_filters_sorts_newest_first_and_skips_broken_files() -> None:
    for ep in [
        make("1", started_at=100.0),
        make("2", started_at=300.0),
        make("3", kind="gpu", started_at=200.0),
        make("4", profile="development", started_at=400.0),
        make("5", container="img.sqsh", started_at=500.0),
    ]:
        endpoint.publish(ep)
    broken = Path(folders.endpoint_file("6"))
    folders.ensure_private_dir(broken.parent)
    broken.write_text("{")
    os.chmod(broken, 0o600)
    folders.ensure_private_dir(folders.job_dir("7"))  # a folder without a record
    forged = endpoint.publish(make("8", started_at=900.0))
    os.chmod(forged, 0o666)

    def ids(found: list[Endpoint]) -> list[str]:
        return [ep.job_id for ep in found]

    assert ids(endpoint.find("cpu", "default", "")) == ["2", "1"]
    assert ids(endpoint.find("cpu", "default")) == ["5", "2", "1"]
    assert ids(endpoint.find("cpu", "default", "img.sqsh")) == ["5"]
    assert ids(endpoint.find("cpu", "development")) == ["4"]
    assert ids(endpoint.find("gpu")) == ["3"]
    assert ids(endpoint.find("gpu", "development")) == []
    assert ids(endpoint.find()) == ["5", "4", "2", "3", "1"]


@pytest.mark.parametrize("job_id", ["", "../42", "42/..", "4 2", "x", "1" * 21])
def test_read_job_refuses_an_invalid_job_id(job_id: str) -> None:
    with pytest.raises(EndpointError) as info:
        endpoint.read_job(job_id)
    assert str(info.value) == f"invalid job id {job_id!r}: expected digits only"


def test_check_job_id() -> None:
    assert endpoint.check_job_id("123456") == "123456"


def test_prune_removes_only_records_of_jobs_that_left_the_queue(home: Path) -> None:
    for job_id in ("11", "12"):
        endpoint.publish(make(job_id))
    folders.ensure_private_dir(folders.job_dir("13"))  # a folder left without a record
    folders.ensure_private_dir(folders.job_dir("14"))  # a job that ended moments ago, with its note
    (Path(folders.job_dir("14")) / endpoint.ENDED_NOTE).write_text("was cancelled\n")
    assert endpoint.prune({"12", "99"}) == ["11"]
    assert not (home / "state" / "jobs" / "11").exists()
    assert not (home / "state" / "jobs" / "13").exists()
    assert endpoint.ended_note("14") == "was cancelled"  # kept for the proxies it ended
    assert endpoint.read_job("12") is not None
    old = time.time() - endpoint.ENDED_KEEP_SECONDS - 1
    os.utime(Path(folders.job_dir("14")) / endpoint.ENDED_NOTE, (old, old))
    endpoint.prune({"12"})
    assert not (home / "state" / "jobs" / "14").exists()


def test_find_reports_our_broken_records_and_discard_keeps_a_newer_file() -> None:
    endpoint.publish(make("1"))
    old = Path(folders.endpoint_file("2"))
    folders.ensure_private_dir(old.parent)
    old.write_text(json.dumps({**json.loads(make("2").to_json()), "version": 1}))
    os.chmod(old, 0o600)
    broken: list[str] = []
    [ep] = endpoint.find(broken=broken)
    assert broken == [str(old)]
    assert ep.identity is not None and not endpoint.expired(ep)
    endpoint.publish(make("1", port=9999))  # the session republished meanwhile (a new file)
    assert endpoint.discard(ep) is False
    assert endpoint.read_job("1") == make("1", port=9999)
    fresh = endpoint.read_job("1")
    assert fresh is not None and endpoint.discard(fresh) is True
    assert endpoint.read_job("1") is None


def test_a_record_not_renewed_within_the_lease_is_expired() -> None:
    path = endpoint.publish(make())
    ep = endpoint.read(path)
    assert not endpoint.expired(ep)
    assert endpoint.expired(ep, now=time.time() + endpoint.LEASE_SECONDS + 1)
    stale = time.time() - endpoint.LEASE_SECONDS - 1
    os.utime(path, (stale, stale))
    assert endpoint.expired(endpoint.read(path))


def test_a_record_without_ends_at_reads_as_unknown(tmp_path: Path) -> None:
    data = json.loads(make().to_json())
    del data["ends_at"]
    folder = tmp_path / "42"
    folder.mkdir()
    assert endpoint.from_json(json.dumps(data), folder / "endpoint.json").ends_at == 0.0


@pytest.mark.parametrize("text", [
    make("7").to_json(), '{"a": 1.5e3, "b": [true, false, null], "c": "\\u00e9\\n"}',
    "  [1, -2, 3.25]\n", '"x"', "0", "-Infinity", "NaN", '{"nested": {"k": []}}',
])
def test_loads_reads_what_json_reads(text: str) -> None:
    expected, got = json.loads(text), fastjson.loads(text)
    assert repr(got) == repr(expected)  # repr: NaN != NaN


@pytest.mark.parametrize("text", ["", "{", '{"a": 1} x', "[1,]", "{'a': 1}", '"\t"', "tru"])
def test_loads_refuses_what_json_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        fastjson.loads(text)
