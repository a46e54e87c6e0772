"""Readers of untrusted or half-written input: any input gives a value or the project's own
error, never another exception (property-based, with hypothesis)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interactive_slurm.base import folders
from interactive_slurm.base.errors import EndpointError, InteractiveSlurmError
from interactive_slurm.connect import configcache, endpoint, fastjson, fastpath

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
#: Texts that look like JSON, cut anywhere (a record half-written by a dying writer).
json_like = st.one_of(
    st.text(),
    json_values.map(json.dumps),
    st.tuples(json_values.map(json.dumps), st.integers(min_value=0, max_value=200)).map(
        lambda pair: pair[0][: pair[1]]),
)


@SETTINGS
@given(json_like)
def test_fastjson_reads_what_json_reads_and_refuses_the_rest_with_valueerror(text: str) -> None:
    try:
        expected = json.loads(text)
    except (ValueError, RecursionError):
        with pytest.raises(ValueError):
            fastjson.loads(text)
    else:
        assert json.dumps(fastjson.loads(text)) == json.dumps(expected)  # NaN == NaN here


@pytest.mark.parametrize("text", ['{"garbage', '{"a": [1, 2', '"abc', "[" * 100_000, "{" * 50_000,
                                  '{"a":' * 30_000])
def test_fastjson_truncated_or_deeply_nested_is_a_valueerror(text: str) -> None:
    """The C scanner raised SystemError and RecursionError here (a crash of the fast path)."""
    with pytest.raises(ValueError):
        fastjson.loads(text)


def _write_record(job_id: str, data: bytes) -> str:
    path = folders.endpoint_file(job_id)
    folders.make_private_dirs(os.path.dirname(path))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


@SETTINGS
@given(st.one_of(st.binary(max_size=300), json_like.map(str.encode)))
def test_any_record_file_reads_as_a_record_or_an_endpoint_error(home: Path, data: bytes) -> None:
    path = _write_record("7", data)
    try:
        ep = endpoint.read(path)
    except EndpointError:
        return
    assert ep.job_id == "7"


@pytest.mark.parametrize("data", [b'{"garbage', b"[" * 100_000, b"\xff\xfe", b""])
def test_a_corrupt_record_is_stale_and_the_connect_goes_on(
    home: Path, capsys: pytest.CaptureFixture[str], data: bytes,
) -> None:
    """README: a corrupt record is dropped as stale (one line) and the connect goes on."""
    path = _write_record("7", data)
    assert fastpath.find_and_connect("cpu", "default", "") is None
    assert not os.path.exists(path)
    assert "dropped the stale record of job 7" in capsys.readouterr().err


@SETTINGS
@given(st.one_of(st.binary(max_size=300), json_like.map(str.encode)))
def test_any_config_cache_reads_as_values_or_none(home: Path, data: bytes) -> None:
    config_file = home / "config" / "config.toml"
    config_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    config_file.write_text('default_profile = "dev"\n')
    cache = configcache.cache_file()
    folders.make_private_dirs(os.path.dirname(cache))
    fd = os.open(cache, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    got = configcache.read(str(config_file))
    assert got is None or (isinstance(got[0], str) and isinstance(got[1], float))
    try:
        assert configcache.load(str(config_file)) == ("dev", 1800.0)  # config.toml decides
    except InteractiveSlurmError:
        pytest.fail("a corrupt cache must be ignored, not reported")
