"""Readers of untrusted or half-written input: any input gives a value or the project's own
error, never another exception (property-based, with hypothesis)."""

from __future__ import annotations

import contextlib
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
        assert configcache.load(str(config_file)) == ("dev", 1800.0, "auto")  # config.toml decides
    except InteractiveSlurmError:
        pytest.fail("a corrupt cache must be ignored, not reported")


# --- config.toml and profiles: any text is a value or a ConfigError -----------------------------

toml_like = st.one_of(
    st.text(max_size=300),
    st.dictionaries(st.sampled_from(["default_profile", "wait_timeout", "warn_time_left", "sshd",
                                     "image_cache", "update", "clusters", "x"]),
                    st.one_of(st.text(max_size=20), st.integers(), st.booleans(),
                              st.dictionaries(st.text(max_size=8), st.text(max_size=8),
                                              max_size=3)),
                    max_size=5).map(lambda d: "\n".join(f"{k} = {json.dumps(v)}" for k, v in d.items())),
)


@SETTINGS
@given(toml_like)
def test_any_config_toml_is_a_config_or_a_config_error(home: Path, text: str) -> None:
    from interactive_slurm.base import config, tomlio
    from interactive_slurm.base.errors import ConfigError

    path = home / "config.toml"
    with contextlib.suppress(ConfigError):
        config.parse(tomlio.loads(text, path), path)


profile_like = st.one_of(
    st.text(max_size=300),
    st.fixed_dictionaries({}, optional={
        "partition": st.text(max_size=12), "account": st.text(max_size=12),
        "time": st.one_of(st.text(max_size=12), st.integers()),
        "cpus": st.one_of(st.integers(-5, 500), st.text(max_size=5)),
        "mem": st.one_of(st.text(max_size=8), st.integers()),
        "gpus": st.one_of(st.integers(-2, 20), st.text(max_size=4)),
        "extra": st.lists(st.text(max_size=20), max_size=3),
        "idle_timeout": st.text(max_size=8), "container": st.text(max_size=20),
    }).map(lambda d: "\n".join(f"{k} = {json.dumps(v)}" for k, v in d.items())
           + "\n[cpu]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in d.items())
           + "\n[gpu]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in d.items())),
)


@SETTINGS
@given(profile_like)
def test_any_profile_is_a_profile_or_a_config_error(home: Path, text: str) -> None:
    from interactive_slurm.base import tomlio
    from interactive_slurm.base.errors import ConfigError
    from interactive_slurm.login import profiles

    path = home / "p.toml"
    try:
        prof = profiles.parse_profile("p", tomlio.loads(text, path), path)
    except ConfigError:
        return
    for kind in profiles.KINDS:
        profiles.sbatch_resource_args(prof.resources(kind))  # a valid profile builds its argv


# --- the keyhole's messages ----------------------------------------------------------------------

@SETTINGS
@given(st.lists(st.binary(max_size=80), max_size=6))
def test_the_keyhole_gate_answers_or_refuses_any_bytes(chunks: list[bytes]) -> None:
    from interactive_slurm.connect import keyhole

    gate = keyhole.Gate(bytes(range(32)), "42")
    for chunk in chunks:
        try:
            answer = gate.feed(chunk)
        except keyhole.KeyholeError:
            return
        assert answer is None or isinstance(answer, bytes)


# --- Slurm's output and git's tag names ----------------------------------------------------------

slurm_like = st.one_of(
    st.text(max_size=400),
    st.lists(st.text(alphabet=st.characters(blacklist_characters="\n"), max_size=40)
             .map(lambda s: s.replace(" ", "|")), max_size=6).map("\n".join),
    st.lists(st.tuples(st.sampled_from(["JobId", "JobName", "JobState", "Reason", "NodeList",
                                        "TimeLeft", "TimeLimit", "StartTime", "Comment",
                                        "Partition", "x"]), st.text(max_size=15)),
             max_size=10).map(lambda kv: " ".join(f"{k}={v}" for k, v in kv)),
)


@SETTINGS
@given(slurm_like)
def test_slurm_parsers_give_a_value_or_a_slurm_error(text: str) -> None:
    from interactive_slurm.base.errors import SlurmError
    from interactive_slurm.login import doctor, slurm

    for parse in (slurm.parse_sbatch, slurm.parse_squeue, slurm.parse_scontrol_job,
                  slurm.parse_sinfo_nodes, slurm.parse_comment, slurm.submit_refusal,
                  slurm.hopeless, doctor.parse_partitions, doctor.parse_nodes,
                  doctor.parse_version, doctor.parse_gres, doctor.parse_time_limit):
        with contextlib.suppress(SlurmError):
            parse(text)


@SETTINGS
@given(st.text(max_size=60))
def test_any_tag_name_sorts_as_a_version_or_not_at_all(tag: str) -> None:
    from interactive_slurm.install import updater

    key = updater.version_key(tag)
    assert key is None or all(isinstance(n, int) for n in key)
