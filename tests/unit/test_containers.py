"""Container runtimes: argv builders, the prepare/probe/cleanup sequence (fake runner), the
identity files, and the image cache (locking, temp name + rename, half-made entries)."""

from __future__ import annotations

import os
import pwd
import socket
import stat
import threading
from pathlib import Path

import pytest

from interactive_slurm.base import folders
from interactive_slurm.base.errors import SessionError
from interactive_slurm.node import containers, imagecache
from interactive_slurm.node.containers import (
    Apptainer,
    Charliecloud,
    Enroot,
    Needs,
    inside_gid,
    parse_probe,
)
from interactive_slurm.node.imagecache import CacheUnusable, ImageCache, cache_key

from .fakes import FakeRunner, Reply, fail, ok

PROBE_OUT = "Uid: 1001\nGid: 1001\ngidmap 1001 1001 1\nshell /bin/bash\n"
HOME = Path(pwd.getpwuid(os.getuid()).pw_dir)


def needs(tmp_path: Path, gpu: bool = False, env: dict[str, str] | None = None) -> Needs:
    work = tmp_path / "job-tmp"
    work.mkdir(exist_ok=True)
    return Needs(job_id="42", sshd="/usr/sbin/sshd", binds=(HOME, work), workdir=work, gpu=gpu,
                 env=env or {})


def test_probe_output_is_parsed() -> None:
    probe = parse_probe("Uid: 1001\nGid: 100\ngidmap 100 100 1\ngidmap 0 5000 1\nshell /bin/zsh\n")
    assert (probe.sshd_ok, probe.uid, probe.gid, probe.shell) == (True, 1001, 100, "/bin/zsh")
    assert probe.gid_map == ((100, 100, 1), (0, 5000, 1))
    assert parse_probe("no-sshd\n").sshd_ok is False


@pytest.mark.parametrize(("gid_map", "expected"), [
    ((), 5),                              # no user namespace: ids as on the node
    (((0, 0, 4294967295),), 5),           # the identity map
    (((1001, 1001, 1),), 65534),          # Charliecloud/enroot: only the user's own group
    (((0, 100000, 65536),), 65534),       # a sub-gid range without the tty group
    (((10, 0, 100),), 15),                # shifted
])
def test_the_tty_group_id_inside_the_container(gid_map: tuple[tuple[int, int, int], ...],
                                               expected: int) -> None:
    assert inside_gid(5, gid_map) == expected


def test_identity_files_name_the_user_with_the_nodes_home_and_a_shell_the_image_has() -> None:
    assert containers.passwd_text("ann", 1001, 100, "/u/ann", "/bin/bash").splitlines() == [
        "root:x:0:0:root:/root:/bin/sh",
        "ann:x:1001:100::/u/ann:/bin/bash",
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin",
    ]
    assert containers.group_text("users", 100, 65534).splitlines() == [
        "root:x:0:", "tty:x:65534:", "users:x:100:", "nogroup:x:65534:",
    ]


def test_enroot_argv() -> None:
    rt = Enroot(binary="enroot")
    assert rt.build_argv("nvcr.io#nvidia/pytorch:24.01-py3", Path("/c/img")) == [
        "enroot", "import", "--output", "/c/img", "docker://nvcr.io#nvidia/pytorch:24.01-py3"]
    n = Needs("42", "/usr/sbin/sshd", (Path("/home/a"), Path("/tmp/s")), Path("/tmp/s"), gpu=True,
              env={"CUDA_VISIBLE_DEVICES": "0,1", "SLURM_JOB_GPUS": "2,3"})
    binds = [(Path("/home/a"), "/home/a"), (Path("/tmp/s/passwd"), "/etc/passwd")]
    assert rt.prefix("interactive-slurm-42", binds, n) == [
        "enroot", "start", "--rw", "--mount=/home/a:/home/a", "--mount=/tmp/s/passwd:/etc/passwd",
        "--env=NVIDIA_VISIBLE_DEVICES=2,3", "interactive-slurm-42",
    ]
    assert rt.cleanup_argvs("interactive-slurm-42", n) == [
        ["enroot", "remove", "--force", "interactive-slurm-42"]]
    assert rt.needs_build("ubuntu:22.04") and not rt.needs_build("/img/a.sqsh")
    with pytest.raises(SessionError, match=r"squashfs images \(\*.sqsh\)"):
        rt.needs_build("/img/a.tar")


def test_apptainer_argv() -> None:
    rt = Apptainer(binary="apptainer")
    n = Needs("42", "/usr/sbin/sshd", (Path("/home/a"),), Path("/tmp/s"), gpu=True)
    assert rt.prefix("/img/a.sif", [(Path("/home/a"), "/home/a")], n) == [
        "apptainer", "exec", "--nv", "--bind", "/home/a:/home/a", "/img/a.sif"]
    assert rt.build_argv("ubuntu:22.04", Path("/c/img")) == [
        "apptainer", "pull", "/c/img", "docker://ubuntu:22.04"]
    assert rt.build_argv("oras://r/x:1", Path("/c/img"))[-1] == "oras://r/x:1"
    assert not rt.needs_build("/img/a.sif") and rt.needs_build("docker://ubuntu")
    cpu = Needs("42", "/usr/sbin/sshd", (), Path("/tmp/s"))
    assert "--nv" not in rt.prefix("/img/a.sif", [], cpu)


def test_charliecloud_argv(tmp_path: Path) -> None:
    rt = Charliecloud(binary="/usr/bin/ch-run")
    assert rt.build_argv("/img/a.tar.gz", Path("/c/img")) == [
        "/usr/bin/ch-convert", "-o", "dir", "/img/a.tar.gz", "/c/img"]
    n = Needs("42", "/usr/sbin/sshd", (Path("/home/a"),), Path("/tmp/s"))
    binds = [(Path("/home/a"), "/home/a"), (Path("/tmp/s/passwd"), "/etc/passwd")]
    assert rt.prefix("/c/img", binds, n) == [
        "/usr/bin/ch-run", "--no-passwd", "-b", "/home/a:/home/a", "-b", "/tmp/s/passwd:/etc/passwd",
        "/c/img", "--"]
    assert rt.cleanup_argvs("/c/img", n) == [["rmdir", "/c/img/tmp/s"]]
    with pytest.raises(SessionError, match="absolute path"):
        rt.needs_build("ubuntu:22.04")
    assert rt.needs_build("/img/a.sqfs") and not rt.needs_build(str(tmp_path))


def charliecloud_in(folder: Path, *tools: str) -> Charliecloud:
    """A Charliecloud whose ch-run has exactly ``tools`` beside it (executable stand-ins)."""
    folder.mkdir()
    for tool in ("ch-run", *tools):
        (folder / tool).write_text("#!/bin/sh\nexit 1\n")
        (folder / tool).chmod(0o755)
    return Charliecloud(binary=str(folder / "ch-run"))


def test_charliecloud_before_0_26_unpacks_a_tarball_with_ch_tar2dir(tmp_path: Path) -> None:
    """Debian 11's Charliecloud 0.21 has no ch-convert; its ch-tar2dir unpacks TARBALL into
    DIR/NAME, which becomes the cache entry's image."""
    rt = charliecloud_in(tmp_path / "bin", "ch-tar2dir")
    image = tmp_path / "sshd-image.tar.gz"
    image.write_bytes(b"")

    def unpack(argv: tuple[str, ...], _: str | None) -> Reply:
        (Path(argv[2]) / "sshd-image" / "usr").mkdir(parents=True)
        return ok()

    runner = FakeRunner({str(tmp_path / "bin" / "ch-tar2dir"): unpack})
    made = containers.resolve_image(runner, rt, str(image), ImageCache(tmp_path / "cache"),
                                    lambda _: None)
    [argv] = runner.argvs(str(tmp_path / "bin" / "ch-tar2dir"))
    assert argv[1] == str(image) and Path(argv[2]).parent == tmp_path / "cache"  # its temp folder
    assert made.name == "image" and (made / "usr").is_dir()
    assert not (made.parent / "sshd-image").exists()
    # Only tarballs: a SquashFS file needs ch-convert.
    squash = tmp_path / "a.sqfs"
    squash.write_bytes(b"hsqs")  # another content: another entry
    with pytest.raises(SessionError, match=r"no ch-convert \(0.26 and later have it\).*not "):
        containers.resolve_image(FakeRunner(), rt, str(squash), ImageCache(tmp_path / "cache"),
                                 lambda _: None)


def test_charliecloud_with_ch_convert_never_uses_ch_tar2dir(tmp_path: Path) -> None:
    rt = charliecloud_in(tmp_path / "bin", "ch-convert", "ch-tar2dir")
    convert = str(tmp_path / "bin" / "ch-convert")
    runner = FakeRunner({convert: lambda argv, _: (Path(argv[-1]).mkdir(), ok())[1]})
    rt.build(runner, "/img/a.tar", tmp_path / "image", 60)
    assert runner.programs() == [convert] and (tmp_path / "image").is_dir()


def test_wrap_is_a_pure_function_of_the_argv_for_sshd_D_and_sshd_i() -> None:
    c = containers.Container("charliecloud", "/img", "/img", ("ch-run", "/img", "--"))
    assert c.wrap(["/usr/sbin/sshd", "-D", "-f", "/t/cfg"]) == [
        "ch-run", "/img", "--", "/usr/sbin/sshd", "-D", "-f", "/t/cfg"]
    assert c.wrap(["/usr/sbin/sshd", "-i", "-f", "/t/cfg"]) == [
        "ch-run", "/img", "--", "/usr/sbin/sshd", "-i", "-f", "/t/cfg"]


def test_outermost_binds() -> None:
    assert containers.outermost([Path("/h/a"), Path("/tmp/x"), Path("/h/a/.local/state"),
                                 Path("/tmp/x")]) == [Path("/h/a"), Path("/tmp/x")]


def test_enroot_prepare_imports_once_creates_probes_and_binds_home(tmp_path: Path) -> None:
    runner = FakeRunner({"true": ok(PROBE_OUT)})
    rt = Enroot(binary="true")
    cache = ImageCache(tmp_path / "cache")
    n = needs(tmp_path)
    c = containers.prepare(runner, rt, "ubuntu:22.04", n, cache)
    calls = runner.argvs("true")
    key = cache_key("enroot", "ubuntu:22.04")
    assert calls[0][:3] == ("true", "import", "--output")
    building = f"{key}.tmp-{socket.gethostname()}-{os.getpid()}"
    assert calls[0][3] == str(tmp_path / "cache" / building / "image")
    assert calls[1] == ("true", "create", "--force", "--name", "interactive-slurm-42",
                        str(tmp_path / "cache" / key / "image"))
    assert calls[2][:2] == ("true", "start") and "/bin/sh" in calls[2]
    assert f"--mount={HOME}:{HOME}" in c.argv_prefix
    assert f"--mount={n.workdir}/passwd:/etc/passwd" in c.argv_prefix
    assert f"{pwd.getpwuid(os.getuid()).pw_name}:x:1001:1001::{HOME}:/bin/bash" in \
        (n.workdir / "passwd").read_text()
    assert "tty:x:65534:" in (n.workdir / "group").read_text()
    # A second job finds the entry: no import, only its own container.
    containers.prepare(runner, rt, "ubuntu:22.04", needs(tmp_path), cache)
    assert [a[1] for a in runner.argvs("true")[3:]] == ["create", "start"]
    c.cleanup(runner)
    assert runner.argvs("true")[-1] == ("true", "remove", "--force", "interactive-slurm-42")


def test_an_image_without_sshd_fails_and_removes_the_jobs_container(tmp_path: Path) -> None:
    image = tmp_path / "img.sqsh"
    image.write_bytes(b"hsqs")
    runner = FakeRunner({"true": [ok(), ok("no-sshd\n"), ok()]})
    with pytest.raises(SessionError, match=f"container image {image} has no executable /usr/sbin/sshd"):
        containers.prepare(runner, Enroot(binary="true"), str(image), needs(tmp_path),
                           ImageCache(tmp_path / "c"))
    assert [a[1] for a in runner.argvs("true")] == ["create", "start", "remove"]


def test_failures_say_what_happened(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "c")
    with pytest.raises(SessionError, match=r"container image /nonexistent\.sqsh does not exist"):
        containers.prepare(FakeRunner(), Enroot(binary="true"), "/nonexistent.sqsh", needs(tmp_path),
                           cache)
    runner = FakeRunner({"true": fail("[ERROR] Could not resolve host")})
    with pytest.raises(SessionError, match=r"could not prepare container image ubuntu with enroot: "
                       r".*Could not resolve host"):
        containers.prepare(runner, Enroot(binary="true"), "ubuntu", needs(tmp_path), cache)
    assert [p.name for p in cache.root.iterdir()] == [f"{cache_key('enroot', 'ubuntu')}.lock"]
    runner = FakeRunner({"true": Reply(stderr="FATAL: image is corrupt", returncode=255)})
    image = tmp_path / "a.sif"
    image.write_bytes(b"sif")
    with pytest.raises(SessionError, match=r"apptainer could not start a container from .*corrupt"):
        containers.prepare(runner, Apptainer(binary="true"), str(image), needs(tmp_path), cache)


def test_find_runtime_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SessionError, match=r"no container runtime \(enroot, apptainer, "
                       r"singularity, ch-run\) is installed on"):
        containers.find_runtime()
    with pytest.raises(SessionError, match="container runtime enroot, but enroot is not installed"):
        containers.find_runtime("enroot")
    with pytest.raises(SessionError, match="unknown container runtime 'docker'"):
        containers.find_runtime("docker")


def test_find_runtime_takes_the_first_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ch-run", "singularity"):
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    rt = containers.find_runtime()
    assert (rt.name, rt.binary) == ("apptainer", "singularity")


def test_cache_builds_under_a_temp_name_and_renames(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "c")
    seen = []

    def build(dest: Path) -> None:
        seen.append(dest)
        assert dest.parent.name.startswith("k.tmp-")
        dest.write_text("image")

    assert cache.entry("k", build, "src") == tmp_path / "c" / "k" / "image"
    assert cache.entry("k", build, "src") == tmp_path / "c" / "k" / "image"
    assert len(seen) == 1
    assert sorted(p.name for p in cache.root.iterdir()) == ["k", "k.lock"]
    assert (cache.root / "k" / "source").read_text() == "src\n"


def test_cache_rebuilds_a_half_made_entry_and_drops_leftover_temps(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "c")
    (cache.root / "k" / "image" / "ro").mkdir(parents=True)
    (cache.root / "k" / "image" / "ro").chmod(0o500)   # as unpacked images have
    (cache.root / "k.tmp-99999").mkdir()
    messages: list[str] = []
    cache.entry("k", lambda dest: dest.write_text("new"), "src", messages.append)
    assert (cache.root / "k" / "image").read_text() == "new"
    assert not (cache.root / "k.tmp-99999").exists()
    assert any("half-made" in m for m in messages)


def test_a_failed_build_leaves_no_entry(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "c")

    def build(dest: Path) -> None:
        dest.write_text("partial")
        raise SessionError("import failed")

    with pytest.raises(SessionError):
        cache.entry("k", build, "src")
    assert [p.name for p in cache.root.iterdir()] == ["k.lock"]


def test_concurrent_users_of_one_entry_build_it_once(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "c")
    started, release = threading.Event(), threading.Event()
    builds: list[int] = []
    messages: list[str] = []

    def build(dest: Path) -> None:
        builds.append(1)
        started.set()
        release.wait(10)
        dest.write_text("image")

    first = threading.Thread(target=cache.entry, args=("k", build, "src"))
    first.start()
    started.wait(10)
    second = threading.Thread(target=cache.entry, args=("k", build, "src", messages.append))
    second.start()
    while not messages:
        threading.Event().wait(0.01)
    release.set()
    first.join(10)
    second.join(10)
    assert builds == [1]
    assert messages == ["waiting for another job that is preparing src"]


def test_cache_key_of_a_file_is_its_content_remembered_per_file_version(tmp_path: Path) -> None:
    """Issue 17: a key from path, size and mtime could be computed by a member who cannot read
    the image; the content's digest cannot. It is computed once per version of the file."""
    first, second = tmp_path / "a.tar", tmp_path / "b.tar"
    first.write_bytes(b"same bytes")
    second.write_bytes(b"same bytes")
    assert cache_key("charliecloud", str(first)) == cache_key("charliecloud", str(second))
    memos = list(imagecache.digests_dir().iterdir())
    assert not Path(folders.image_cache_dir()).exists()  # entries only in the cache itself
    assert len(memos) == 2 and all(m.stat().st_mode & 0o777 == 0o600 for m in memos)
    memos[0].write_text("not a digest\n")  # a broken memo is recomputed, not trusted
    assert cache_key("charliecloud", str(first)) == cache_key("charliecloud", str(second))
    os.utime(first, (1, 1))  # a new version of the file, same content: the same entry
    assert cache_key("charliecloud", str(first)) == cache_key("charliecloud", str(second))


def test_a_fifo_planted_as_a_shared_lock_sends_the_session_to_its_own_cache(
    tmp_path: Path,
) -> None:
    cache = ImageCache(shared_root(tmp_path), shared=True)
    os.mkfifo(cache.root / "k.lock")
    with pytest.raises(CacheUnusable, match="the lock of src is not a plain file"):
        cache.entry("k", lambda dest: dest.mkdir(), "src")


def test_a_shared_lock_held_too_long_sends_the_session_to_its_own_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import fcntl

    monkeypatch.setattr(imagecache, "SHARED_LOCK_WAIT", 0.3)
    cache = ImageCache(shared_root(tmp_path), shared=True)
    with open(cache.root / "k.lock", "w") as held:  # a member holds it and never lets go
        fcntl.flock(held, fcntl.LOCK_EX)
        said: list[str] = []
        with pytest.raises(CacheUnusable, match=r"preparing src for more than 0\.3 s"):
            cache.entry("k", lambda dest: dest.mkdir(), "src", said.append)
    assert said == ["waiting for another job that is preparing src"]
    assert cache.entry("k", lambda dest: dest.mkdir(), "src").name == "image"  # free again


def test_cache_key_follows_a_changed_file(tmp_path: Path) -> None:
    image = tmp_path / "a.tar"
    image.write_bytes(b"1")
    before = cache_key("charliecloud", str(image))
    assert cache_key("charliecloud", str(image)) == before
    assert cache_key("enroot", str(image)) != before
    image.write_bytes(b"22")
    assert cache_key("charliecloud", str(image)) != before
    assert cache_key("enroot", "ubuntu:22.04") == cache_key("enroot", "ubuntu:22.04")


def shared_root(tmp_path: Path, mode: int = 0o3770) -> Path:
    root = tmp_path / "lab-images"
    root.mkdir()
    root.chmod(mode)
    return root


def test_a_shared_cache_entry_is_readable_by_the_group_and_changeable_by_its_maker(
    tmp_path: Path,
) -> None:
    cache = ImageCache(shared_root(tmp_path), shared=True)

    def build(dest: Path) -> None:
        (dest / "bin").mkdir(parents=True, mode=0o700)
        (dest / "bin" / "sshd").write_text("#!/bin/sh\n")
        (dest / "bin" / "sshd").chmod(0o700)
        (dest / "etc").mkdir(mode=0o700)
        (dest / "etc" / "secret").write_text("x")
        (dest / "etc" / "secret").chmod(0o600)
        os.symlink("bin", dest / "link")

    image = cache.entry("k", build, "src")
    for path in [cache.root / "k", *(cache.root / "k").rglob("*")]:
        if path.is_symlink():
            continue
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode & 0o022 == 0, path  # nobody but its maker can change it
        assert mode & 0o040, path  # the group can read it
        if path.is_dir() or path.name == "sshd":
            assert mode & 0o010, path  # ... enter it, or run it
    assert stat.S_IMODE((image / "etc" / "secret").stat().st_mode) & 0o010 == 0
    assert stat.S_IMODE((cache.root / "k.lock").stat().st_mode) & 0o022 == 0
    assert cache.entry("k", build, "src") == image  # found again, not rebuilt


@pytest.mark.parametrize(("mode", "problem"), [
    (0o777, "writable by everyone"), (0o3777, "writable by everyone"),
    (0o770, "group-writable without the sticky bit"),
])
def test_an_unsafe_shared_cache_is_refused_with_the_fix(tmp_path: Path, mode: int,
                                                        problem: str) -> None:
    root = shared_root(tmp_path, mode)
    with pytest.raises(SessionError) as info:
        ImageCache(root, shared=True).entry("k", lambda dest: dest.write_text("x"), "src")
    assert f"image_cache {root} (config.toml)" in str(info.value)
    assert problem in str(info.value)
    assert list(root.iterdir()) == []  # nothing was made there


def test_a_missing_shared_cache_is_not_created(tmp_path: Path) -> None:
    root = tmp_path / "nope"
    with pytest.raises(SessionError, match="ask its owner to create it"):
        ImageCache(root, shared=True).entry("k", lambda dest: dest.write_text("x"), "src")
    assert not root.exists()


def test_a_shared_entry_others_could_change_is_not_used(tmp_path: Path) -> None:
    cache = ImageCache(shared_root(tmp_path), shared=True)
    cache.entry("k", lambda dest: dest.write_text("x"), "src")
    (cache.root / "k").chmod(0o770)
    with pytest.raises(CacheUnusable, match="could be changed by others"):
        cache.entry("k", lambda dest: dest.write_text("x"), "src")


def test_a_read_only_shared_cache_serves_its_entries_and_sends_the_rest_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = shared_root(tmp_path, 0o3770)
    ImageCache(root, shared=True).entry("k", lambda dest: dest.write_text("x"), "src")
    (root / "k.lock").unlink()
    real_open = os.open

    def no_new_files(path: str, flags: int, mode: int = 0o777) -> int:  # as for a reader only
        if flags & os.O_CREAT and not os.path.exists(path):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, mode)

    monkeypatch.setattr(imagecache.os, "open", no_new_files)
    cache = ImageCache(root, shared=True)
    assert cache.entry("k", lambda dest: dest.write_text("y"), "src") == root / "k" / "image"
    assert (root / "k" / "image").read_text() == "x"
    with pytest.raises(CacheUnusable, match=r"has no other\.sqsh yet and is not writable by you"):
        cache.entry("other", lambda dest: dest.write_text("y"), "other.sqsh")
