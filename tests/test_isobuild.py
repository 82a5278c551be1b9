"""ISO images built from a folder (--cdrom-from): read back with pycdlib and with real tools."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pycdlib
import pytest

from condor_vmsubmit.errors import InputError, UnsafeInputError
from condor_vmsubmit.images.diskimage import read_image
from condor_vmsubmit.isobuild import build_iso, joliet_name, scan_folder

LONG_NAME = "Ünïcödé file name that is much longer than Joliet's sixty-four bytes.txt"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A cloud-init seed folder with the awkward cases: nesting past ISO 9660's depth limit, a long
    non-ASCII name, an executable, symlinks that stay inside, names that clash once upper-cased."""
    root = tmp_path / "cidata"
    (root / "a/b/c/d/e/f/g/h").mkdir(parents=True)
    (root / "user-data").write_text("#cloud-config\nruncmd: [echo hi]\n")
    (root / "User_Data").write_text("second\n")
    (root / "meta-data").write_text("instance-id: job-1\n")
    (root / "a/b/c/d/e/f/g/h/deep.txt").write_text("deep\n")
    (root / LONG_NAME).write_text("long\n")
    (root / "run.sh").write_text("#!/bin/sh\necho run\n")
    (root / "run.sh").chmod(0o755)
    (root / "link").symlink_to("user-data")
    (root / "a" / "up").symlink_to("../meta-data")
    return root


def rr_read(iso: pycdlib.PyCdlib, path: str) -> bytes:
    out = io.BytesIO()
    iso.get_file_from_iso_fp(out, rr_path=path)
    return out.getvalue()


def joliet_read(iso: pycdlib.PyCdlib, path: str) -> bytes:
    out = io.BytesIO()
    iso.get_file_from_iso_fp(out, joliet_path=path)
    return out.getvalue()


def test_the_folder_reads_back_through_rock_ridge_and_joliet(folder: Path, tmp_path: Path) -> None:
    built = build_iso(folder, tmp_path / "seed.iso")
    assert (built.label, built.files) == ("cidata", 6)
    iso = pycdlib.PyCdlib()
    iso.open(str(built.path))
    try:
        assert rr_read(iso, "/user-data") == b"#cloud-config\nruncmd: [echo hi]\n"
        assert rr_read(iso, "/User_Data") == b"second\n"
        assert rr_read(iso, "/a/b/c/d/e/f/g/h/deep.txt") == b"deep\n"
        assert rr_read(iso, "/" + LONG_NAME) == b"long\n"
        assert joliet_read(iso, "/meta-data") == b"instance-id: job-1\n"
        assert joliet_read(iso, "/a/b/c/d/e/f/g/h/deep.txt") == b"deep\n"
        long_joliet = joliet_name(LONG_NAME, set())
        assert len(long_joliet.encode()) <= 64 and long_joliet.endswith(".txt")
        assert joliet_read(iso, "/" + long_joliet) == b"long\n"
        link = iso.get_record(rr_path="/a/up")
        assert link.rock_ridge.is_symlink() and link.rock_ridge.symlink_path() == b"../meta-data"
        assert iso.pvd.volume_identifier.rstrip() == b"cidata"
    finally:
        iso.close()


@pytest.mark.skipif(shutil.which("isoinfo") is None, reason="isoinfo (genisoimage) not installed")
def test_isoinfo_sees_the_label_names_modes_and_fixed_dates(folder: Path, tmp_path: Path) -> None:
    path = build_iso(folder, tmp_path / "seed.iso").path
    info = subprocess.run(["isoinfo", "-d", "-i", str(path)], capture_output=True, text=True, check=True).stdout
    assert "Volume id: cidata" in info
    assert "Joliet with UCS level 3 found" in info and "Rock Ridge signatures version 1 found" in info
    listing = subprocess.run(["isoinfo", "-R", "-l", "-i", str(path)], capture_output=True, text=True,
                             errors="replace", check=True).stdout
    lines = {line.split()[-1]: line for line in listing.splitlines() if line.startswith(("-", "l", "d"))}
    assert lines["run.sh"].startswith("-r-xr-xr-x") and lines["user-data"].startswith("-r--r--r--")
    assert "link -> user-data" in listing
    assert all("Jan  1 2000" in line for line in lines.values())
    files = subprocess.run(["isoinfo", "-J", "-f", "-i", str(path)], capture_output=True, text=True,
                           errors="replace", check=True).stdout.split()
    assert "/a/b/c/d/e/f/g/h/deep.txt" in files and "/link" not in files  # Joliet has no symlinks


def test_file_and_qemu_img_see_an_iso_that_the_cdrom_check_accepts(folder: Path, tmp_path: Path) -> None:
    path = build_iso(folder, tmp_path / "seed.iso").path
    if shutil.which("file"):
        out = subprocess.run(["file", str(path)], capture_output=True, text=True, check=True).stdout
        assert "ISO 9660 CD-ROM filesystem data 'cidata'" in out
    assert read_image(path).format == "raw"  # qemu-img's reading: never anything but raw bytes


def test_the_same_folder_gives_the_same_bytes_whatever_the_clock_zone_and_mtimes(folder: Path,
                                                                                  tmp_path: Path) -> None:
    first = build_iso(folder, tmp_path / "one.iso").path.read_bytes()
    old_tz = os.environ.get("TZ")
    os.environ["TZ"] = "Pacific/Kiritimati"
    time.tzset()
    try:
        os.utime(folder / "user-data", (12345, 12345))
        second = build_iso(folder, tmp_path / "two.iso").path.read_bytes()
    finally:
        os.environ.pop("TZ") if old_tz is None else os.environ.__setitem__("TZ", old_tz)
        time.tzset()
    assert first == second
    (folder / "meta-data").write_text("instance-id: job-2\n")
    assert build_iso(folder, tmp_path / "three.iso").path.read_bytes() != first


def test_an_explicit_label_and_a_label_that_does_not_fit(folder: Path, tmp_path: Path) -> None:
    assert build_iso(folder, tmp_path / "x.iso", label="CONFIG-2").label == "CONFIG-2"
    with pytest.raises(InputError, match="1 to 16 characters"):
        build_iso(folder, tmp_path / "y.iso", label="a-label-longer-than-sixteen")


def test_missing_plain_file_and_empty_folders_are_named_clearly(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="folder not found"):
        scan_folder(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        scan_folder(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="the folder is empty"):
        scan_folder(tmp_path / "empty")


@pytest.mark.parametrize("target", ["/etc/passwd", "../../outside.txt", "/"])
def test_symlinks_leaving_the_folder_are_refused(folder: Path, target: str) -> None:
    (folder.parent / "outside.txt").write_text("secret")
    (folder / "a" / "escape").symlink_to(target)
    with pytest.raises(UnsafeInputError, match="points outside the folder") as caught:
        scan_folder(folder)
    assert caught.value.path == str(folder / "a" / "escape")


def test_dangling_symlinks_fifos_and_sockets_are_refused(folder: Path, tmp_path: Path) -> None:
    (folder / "dangling").symlink_to("not-there")
    with pytest.raises(InputError, match="points to nothing"):
        scan_folder(folder)
    (folder / "dangling").unlink()
    os.mkfifo(folder / "pipe")
    with pytest.raises(UnsafeInputError, match="a FIFO cannot go on a cdrom"):
        scan_folder(folder)  # refused without opening it (opening a FIFO would block)
    (folder / "pipe").unlink()
    sock_dir = Path(os.path.realpath(folder))  # UNIX socket paths are short: bind relative to it
    with socket.socket(socket.AF_UNIX) as server:
        cwd = os.getcwd()
        os.chdir(sock_dir)
        try:
            server.bind("sock")
        finally:
            os.chdir(cwd)
        with pytest.raises(UnsafeInputError, match="a socket cannot go on a cdrom"):
            scan_folder(folder)
