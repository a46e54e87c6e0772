"""Container sessions for real: Charliecloud from Debian runs the image's own sshd; enroot and
Apptainer through stand-ins built on Charliecloud that keep those runtimes' defaults (enroot
mounts no home directory). The images come from scripts/test-image (Debian packages, no
registry, no device nodes)."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import OTHER, Harness, OtherHarness, as_other, my_jobs

IMAGES = Path(os.environ.get("INTERACTIVE_SLURM_TEST_IMAGES", "/var/cache/interactive-slurm-tests"))
SSHD_IMAGE = IMAGES / "sshd-image.tar"
NOSSHD_IMAGE = IMAGES / "nosshd-image.tar"
STANDINS = Path(__file__).parent / "standins"
MARKER = "cat /etc/interactive-slurm-test-image"


def profile(image: Path | str, runtime: str = "") -> str:
    text = f'container = "{image}"\n'
    if runtime:
        text += f'container_runtime = "{runtime}"\n'
    return text + ('[cpu]\ntime = "1:00:00"\ncpus = 1\nmem = "1G"\n'
                   '[gpu]\ntime = "1:00:00"\ncpus = 1\nmem = "1G"\ngpus = 2\n')


@pytest.fixture
def images(harness: Harness) -> Harness:
    if shutil.which("ch-run") is None or not SSHD_IMAGE.exists():
        pytest.fail("Charliecloud or the test images are missing: run scripts/test-image as root",
                    pytrace=False)
    return harness


def cache_entries(h: Harness) -> list[str]:
    root = h.home / "cache" / "images"
    return sorted(p.name for p in root.iterdir() if not p.name.endswith(".lock"))


@pytest.mark.core
def test_ssh_lands_inside_the_image_with_the_jobs_environment(images: Harness, tmp_path: Path) -> None:
    h = images
    h.write_profile("default", profile(SSHD_IMAGE))
    out = h.ssh("slurm-cpu", f"{MARKER}; echo JOB=$SLURM_JOB_ID; echo HOME=$HOME; "
                "test -r ~/.ssh/authorized_keys && echo KEYS").stdout
    job = my_jobs()[0]["id"]
    assert "inside-test-image" in out
    assert f"JOB={job}" in out
    assert f"HOME={Path.home()}" in out and "KEYS" in out
    # The node itself has no marker: the command really ran in the image.
    assert not Path("/etc/interactive-slurm-test-image").exists()

    row = next(r for r in h.sessions() if r["job_id"] == job)
    assert (row["container"], row["container_runtime"]) == (str(SSHD_IMAGE), "charliecloud")
    assert f"charliecloud:{SSHD_IMAGE}" in h.remote("list").stdout

    # An interactive terminal works (the pty's group is right inside the user namespace).
    tty = h.ssh("slurm-cpu", "tty", options=("-tt",)).stdout
    assert tty.strip().startswith("/dev/pts/")

    # scp both ways through the container's sshd.
    payload = os.urandom(256 * 1024 + 3)
    (tmp_path / "up.bin").write_bytes(payload)
    opts = ["-F", str(h.ssh_config), "-o", "BatchMode=yes"]
    h.run(["scp", *opts, str(tmp_path / "up.bin"), f"slurm-cpu:{tmp_path}/there.bin"], check=True)
    h.run(["scp", *opts, f"slurm-cpu:{tmp_path}/there.bin", str(tmp_path / "back.bin")], check=True)
    assert hashlib.sha256((tmp_path / "back.bin").read_bytes()).digest() == \
        hashlib.sha256(payload).digest()
    assert cache_entries(h) == [e for e in cache_entries(h) if e.startswith("charliecloud-")]
    assert len(cache_entries(h)) == 1


def test_cpu_and_gpu_sessions_started_at_once_share_one_cache_entry(images: Harness) -> None:
    h = images
    h.write_profile("default", profile(SSHD_IMAGE))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        cpu, gpu = pool.map(
            lambda host: h.ssh(host, f"{MARKER}; echo GPUS=$CUDA_VISIBLE_DEVICES").stdout,
            ["slurm-cpu", "slurm-gpu"],
        )
    assert "inside-test-image" in cpu and "inside-test-image" in gpu
    assert "GPUS=0,1" in gpu
    entries = cache_entries(h)
    assert len(entries) == 1 and ".tmp-" not in entries[0], entries
    logs = "".join(p.read_text() for p in (h.home / "state" / "logs").glob("job-*.log"))
    assert logs.count("with charliecloud (once; cached in") == 1, logs
    assert logs.count("waiting for another job that is preparing") == 1, logs


LAB_GROUP = "islab"  # isuser and isother (scripts/test)


@pytest.fixture
def lab() -> Iterator[Path]:
    """A lab's shared image cache: group-writable, setgid, sticky (as a lab's shared folder is
    made), in /tmp so the other member can reach it; removed afterwards, her entries too."""
    folder = Path(tempfile.mkdtemp(prefix="is-lab-images-"))
    try:
        shutil.chown(folder, group=LAB_GROUP)
        folder.chmod(0o3770)
        yield folder
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(folder)], check=False)
        hers = [str(p) for p in folder.iterdir() if p.owner() == OTHER]
        if hers:
            as_other("chmod", "-R", "u+w", *hers)
            as_other("rm", "-rf", *hers)
        shutil.rmtree(folder, ignore_errors=True)


def the_entry(lab: Path) -> Path:
    """The one entry of the shared cache ``lab``."""
    [entry] = [p for p in lab.iterdir() if not p.name.endswith(".lock")]
    return entry


def test_a_shared_image_cache_holds_the_entry_for_the_group(images: Harness, lab: Path) -> None:
    h = images
    h.write_config(f'image_cache = "{lab}"\n')
    h.write_profile("default", profile(SSHD_IMAGE))
    assert "inside-test-image" in h.ssh("slurm-cpu", MARKER).stdout
    entry = the_entry(lab)
    assert (entry / "complete").exists() and ".tmp-" not in entry.name
    for path in [entry, *entry.rglob("*")]:
        if not path.is_symlink():
            mode = path.lstat().st_mode
            assert mode & 0o022 == 0 and mode & 0o040, path  # the group reads; no one else writes
    assert not (h.home / "cache" / "images").exists()  # not in the user's own cache
    # The other member runs the prepared image as it is, and cannot change it.
    ran = as_other("ch-run", str(entry / "image"), "--", "cat", "/etc/interactive-slurm-test-image")
    assert "inside-test-image" in ran.stdout, ran.stderr
    for target in (entry / "image" / "planted", entry / "complete"):
        assert as_other("touch", str(target)).returncode != 0
    assert as_other("mv", str(entry), str(lab / "moved")).returncode != 0  # the sticky bit


def test_a_second_member_gets_a_session_from_the_entry_another_made(
    images: Harness, lab: Path, other_harness: OtherHarness
) -> None:
    """Issue 17, item 3: with Charliecloud, the second member's session failed (`cannot make
    the mount point /home/isother in the image ...: Permission denied`): her home's mount point
    was to be made inside the user's entry, which only he can change. By design such an entry
    sends her session to her own cache (imagecache.py, containers.Charliecloud.start_job): her
    ssh lands in a copy of the image there, and the shared cache keeps only his entry."""
    h, her = images, other_harness
    for member in (h, her):
        member.write_config(f'image_cache = "{lab}"\n')
        member.write_profile("default", profile(SSHD_IMAGE))
    assert "inside-test-image" in h.ssh("slurm-cpu", MARKER).stdout
    entry = the_entry(lab)
    assert entry.owner() == "isuser" and (entry / "complete").exists()

    # Her session, while his runs; the root mount of her command is the image it runs in.
    out = her.ssh("slurm-cpu", f"{MARKER}; id -un; echo JOB=$SLURM_JOB_ID; grep ^ID= "
                  "/etc/os-release; awk '$5 == \"/\" {print $4; exit}' /proc/self/mountinfo")
    [her_job] = my_jobs(OTHER)
    mine = her.home / "cache" / "images" / entry.name  # the same key: the same image content
    fs = next(p for p in [mine, *mine.parents] if os.path.ismount(p))  # mountinfo's root is
    assert out.stdout.splitlines() == [                                  # relative to its fs
        "inside-test-image", OTHER, f"JOB={her_job['id']}", "ID=debian",
        f"/{(mine / 'image').relative_to(fs)}",
    ]
    assert not Path("/etc/interactive-slurm-test-image").exists()  # ran in the image, not here
    log = her.job_log(her_job["id"])
    assert (f"cannot make the mount point {Path(her.env['HOME'])} in the image {entry}/image: "
            "Permission denied; preparing the image in your own cache instead") in log, log
    assert f"(once; cached in {her.home / 'cache' / 'images'})" in log, log
    # The shared cache is as he left it: his entry, nothing of hers; his session still serves.
    assert the_entry(lab) == entry and [p for p in lab.iterdir() if p.owner() == OTHER] == []
    assert "inside-test-image" in h.ssh("slurm-cpu", MARKER).stdout
    assert len(my_jobs()) == 1


def test_a_member_cannot_stand_in_for_an_image_she_cannot_read(images: Harness, lab: Path) -> None:
    """Issue 17, item 3: the user's 0600 image file (its path shows in squeue's comment). The
    other member plants an entry in the shared cache under the key that path, size and mtime
    gave; the user's session names the entry by the file's content, which she cannot read, so
    it never uses hers."""
    h = images
    private = Path(tempfile.mkdtemp(prefix="is-private-image-"))
    try:
        image = private / "mine.tar"
        shutil.copyfile(SSHD_IMAGE, image)
        image.chmod(0o600)
        assert as_other("cat", str(image)).returncode != 0
        st = image.stat()
        old_key = "charliecloud-" + hashlib.sha256(
            f"charliecloud\0{image}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:24]
        plant = (f"set -e; umask 022; mkdir -p {lab}/{old_key}/image/etc; "
                 f"echo planted-by-isother > {lab}/{old_key}/image/etc/interactive-slurm-test-image; "
                 f"echo {image} > {lab}/{old_key}/source; touch {lab}/{old_key}/complete")
        assert as_other("sh", "-c", plant).returncode == 0
        h.write_config(f'image_cache = "{lab}"\n')
        h.write_profile("default", profile(image))
        out = h.ssh("slurm-cpu", MARKER).stdout
        assert "inside-test-image" in out and "planted" not in out
        entries = [p.name for p in lab.iterdir() if not p.name.endswith(".lock")]
        assert old_key in entries and len(entries) == 2  # hers stays unused beside the real one
    finally:
        shutil.rmtree(private, ignore_errors=True)


def test_a_world_writable_shared_image_cache_is_refused(images: Harness, tmp_path: Path) -> None:
    h = images
    lab = tmp_path / "open-images"
    lab.mkdir()
    lab.chmod(0o1777)
    h.write_config(f'image_cache = "{lab}"\n')
    h.write_profile("default", profile(SSHD_IMAGE))
    result = h.ssh("slurm-cpu", "true", check=False)
    assert result.returncode == 255
    assert f"image_cache {lab} (config.toml): refusing: writable by everyone" in result.stderr
    assert list(lab.iterdir()) == []


def test_an_image_without_sshd_fails_fast_with_the_reason(images: Harness) -> None:
    h = images
    h.write_profile("default", profile(NOSSHD_IMAGE))
    start = time.monotonic()
    result = h.ssh("slurm-cpu", "true", check=False)
    assert result.returncode == 255
    assert f"container image {NOSSHD_IMAGE} has no executable /usr/sbin/sshd" in result.stderr
    assert time.monotonic() - start < 60


def test_a_missing_image_fails_fast_with_the_reason(images: Harness) -> None:
    h = images
    h.write_profile("default", profile("/nonexistent/image.tar"))
    result = h.ssh("slurm-cpu", "true", check=False)
    assert result.returncode == 255
    assert "container image /nonexistent/image.tar does not exist" in result.stderr


def test_a_runtime_that_is_not_installed_fails_fast(images: Harness) -> None:
    h = images
    h.write_profile("default", profile(SSHD_IMAGE, "singularity"))
    result = h.ssh("slurm-cpu", "true", check=False)
    assert result.returncode == 255
    assert "profile asks for container runtime singularity, but singularity is not installed" \
        in result.stderr


def _with_standins(h: Harness, tmp_path: Path) -> Path:
    log = tmp_path / "standin.log"
    h.env["PATH"] = f"{STANDINS}:{h.env['PATH']}"
    h.env["ENROOT_DATA_PATH"] = str(tmp_path / "enroot-data")
    h.env["ENROOT_STANDIN_LOG"] = h.env["APPTAINER_STANDIN_LOG"] = str(log)
    return log


def test_enroot_with_its_defaults_serves_the_users_keys(images: Harness, tmp_path: Path) -> None:
    """enroot mounts no home directory by default: the session mounts it (issue 9's bug)."""
    h = images
    log = _with_standins(h, tmp_path)
    image = tmp_path / "image.sqsh"
    shutil.copyfile(SSHD_IMAGE, image)
    h.write_profile("default", profile(image, "enroot"))
    out = h.ssh("slurm-cpu", f"{MARKER}; echo JOB=$SLURM_JOB_ID").stdout
    job = my_jobs()[0]["id"]
    assert "inside-test-image" in out and f"JOB={job}" in out
    calls = log.read_text()
    assert f"enroot create --force --name interactive-slurm-{job} {image}" in calls
    assert f"--mount={Path.home()}:{Path.home()}" in calls
    row = next(r for r in h.sessions() if r["job_id"] == job)
    assert row["container_runtime"] == "enroot"
    h.remote("cancel", job, "--yes")
    deadline = time.monotonic() + 60
    while f"enroot remove --force interactive-slurm-{job}" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.5)


def test_apptainer_runs_a_sandbox_directory(images: Harness, tmp_path: Path) -> None:
    h = images
    log = _with_standins(h, tmp_path)
    sandbox = tmp_path / "sandbox"
    subprocess.run(["ch-convert", "-i", "tar", "-o", "dir", str(SSHD_IMAGE), str(sandbox)],
                   check=True, capture_output=True)
    h.write_profile("default", profile(sandbox, "apptainer"))
    out = h.ssh("slurm-gpu", f"{MARKER}; echo GPUS=$CUDA_VISIBLE_DEVICES").stdout
    assert "inside-test-image" in out and "GPUS=0,1" in out
    assert f"apptainer exec --nv --bind {Path.home()}:{Path.home()}" in log.read_text()
    assert json.loads(h.remote("list", "--json").stdout)[0]["container_runtime"] == "apptainer"
