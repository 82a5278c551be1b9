"""The disk-image reader against real qemu-img on images made here, and its safety refusals.

Every image is made by `qemu-img create|convert` in tmp_path, then read by us and by
`qemu-img info --output=json`; both must agree, or both must refuse.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from condor_vmsubmit.errors import InputError, UnsafeInputError, VMSubmitError
from condor_vmsubmit.images.diskimage import read_image
from condor_vmsubmit.images.imageio import MAX_HEADER_BYTES

from conftest import CORPUS

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img not installed")


def qemu_img(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["qemu-img", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def create(folder: Path, name: str, fmt: str, size: str, *options: str) -> Path:
    command = ["create", "-q", "-f", fmt] + (["-o", ",".join(options)] if options else []) + [name, size]
    result = qemu_img(*command, cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder / name


def qemu_info(path: Path) -> dict | None:
    """qemu-img's view, or None when it refuses the file."""
    result = qemu_img("info", "--output=json", path.name, cwd=path.parent)
    return json.loads(result.stdout) if result.returncode == 0 else None


def assert_agrees(path: Path) -> None:
    """Our reader and qemu-img agree on ``path`` (both read it alike, or both refuse it)."""
    theirs = qemu_info(path)
    if theirs is None:
        with pytest.raises(VMSubmitError):
            read_image(path)
        return
    ours = read_image(path)
    data = theirs.get("format-specific", {}).get("data", {})
    assert (ours.format, ours.virtual_size) == (theirs["format"], theirs["virtual-size"])
    assert ours.create_type == data.get("create-type")
    assert [(Path(e.file).name, e.kind, e.size_bytes) for e in ours.extents] == [
        (Path(e["filename"]).name, e["format"], e["virtual-size"]) for e in data.get("extents", [])]
    assert ours.bytes_read <= MAX_HEADER_BYTES


@pytest.mark.parametrize("subformat", ["monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse",
                                       "twoGbMaxExtentFlat", "streamOptimized"])
def test_every_vmdk_subformat_agrees_with_qemu_img(tmp_path: Path, subformat: str) -> None:
    image = create(tmp_path, "disk.vmdk", "vmdk", "2500M", f"subformat={subformat}", "adapter_type=lsilogic")
    assert_agrees(image)
    info = read_image(image)
    assert (info.adapter_type, info.hw_version, info.parent_cid) == ("lsilogic", "4", 0xFFFFFFFF)
    assert set(info.files) == {str(tmp_path / e.file) for e in info.extents} | {str(image)}


def test_streamoptimized_converted_from_data_agrees(tmp_path: Path) -> None:
    raw = tmp_path / "data.raw"
    raw.write_bytes(os.urandom(300_000) + bytes(200_000))
    result = qemu_img("convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", raw,
                      tmp_path / "data.vmdk")
    assert result.returncode == 0, result.stderr
    assert_agrees(tmp_path / "data.vmdk")


def test_vmware_streamoptimized_with_footer_agrees() -> None:
    """A VMware-made streamOptimized disk keeps its header in the footer (gdOffset = -1)."""
    disk = CORPUS / "ovf" / "cot__ubuntu.2.0" / "ubuntu.2.0-disk1.vmdk"
    if not disk.exists():
        pytest.skip(f"{disk} not in the corpus")
    head = disk.read_bytes()[:64]
    assert struct.unpack_from("<Q", head, 56)[0] == 2**64 - 1
    assert_agrees(disk)
    assert read_image(disk).virtual_size == 8 * 1024**3


def test_qcow2_and_raw_agree(tmp_path: Path) -> None:
    assert_agrees(create(tmp_path, "a.qcow2", "qcow2", "3G"))
    assert_agrees(create(tmp_path, "b.qcow2", "qcow2", "1000M", "compat=0.10", "cluster_size=4096"))
    assert_agrees(create(tmp_path, "c.img", "raw", "12345K"))


@pytest.mark.parametrize("fmt", ["vhdx", "vpc", "vdi", "qed", "parallels"])
def test_formats_we_do_not_run_are_refused_by_name(tmp_path: Path, fmt: str) -> None:
    image = create(tmp_path, f"disk.{fmt}", fmt, "64M")
    assert qemu_info(image)["format"] == fmt
    with pytest.raises(InputError, match=f"a {fmt}"):
        read_image(image)


def _patched(source: Path, target: Path, offset: int, fmt: str, value: int) -> Path:
    data = bytearray(source.read_bytes())
    struct.pack_into(fmt, data, offset, value)
    target.write_bytes(data)
    return target


# (offset, struct format, value) in the KDMV header, each a way qemu-img may refuse a sparse file.
HEADER_MUTATIONS = {
    "version 4": (4, "<I", 4),
    "version 3": (4, "<I", 3),
    "granularity 0": (20, "<Q", 0),
    "granularity 4 GiB": (20, "<Q", 0x800000),
    "L2 tables of 1024": (44, "<I", 1024),
    "grains past the end": (64, "<Q", 10**6),
    "capacity 2^60 sectors": (12, "<Q", 2**60),
    "capacity 2^55 sectors": (12, "<Q", 2**55),
    "capacity 0, no descriptor": (12, "<Q", 0),
}


@pytest.mark.parametrize("mutation", sorted(HEADER_MUTATIONS))
def test_damaged_sparse_headers_are_judged_like_qemu_img(tmp_path: Path, mutation: str) -> None:
    good = create(tmp_path, "good.vmdk", "vmdk", "100M")
    bad = _patched(good, tmp_path / "bad.vmdk", *HEADER_MUTATIONS[mutation])
    assert_agrees(bad)


DESCRIPTOR_MUTATIONS = {
    "RDONLY extent skipped": ('RW 20480 FLAT "d-flat.vmdk" 0', 'RDONLY 20480 FLAT "d-flat.vmdk" 0'),
    "FLAT without offset": ('RW 20480 FLAT "d-flat.vmdk" 0', 'RW 20480 FLAT "d-flat.vmdk"'),
    "VMFS with offset": ('RW 20480 FLAT "d-flat.vmdk" 0', 'RW 20480 VMFS "d-flat.vmdk" 0'),
    "VMFS extent": ('RW 20480 FLAT "d-flat.vmdk" 0', 'RW 20480 VMFS "d-flat.vmdk"'),
    "unknown extent type": ('RW 20480 FLAT "d-flat.vmdk" 0', 'RW 20480 ZERO "d-flat.vmdk"'),
    "two extents": ('RW 20480 FLAT "d-flat.vmdk" 0',
                    'RW 10240 FLAT "d-flat.vmdk" 0\nRW 10240 FLAT "d-flat.vmdk" 10240'),
    "createType monolithicSparse": ('createType="monolithicFlat"', 'createType="monolithicSparse"'),
    "createType vmfs": ('createType="monolithicFlat"', 'createType="vmfs"'),
    "no CID": ("CID=", "XYZ="),
    "CRLF line ends": ("\n", "\r\n"),
}


@pytest.mark.parametrize("mutation", sorted(DESCRIPTOR_MUTATIONS))
def test_edited_descriptors_are_judged_like_qemu_img(tmp_path: Path, mutation: str) -> None:
    create(tmp_path, "d.vmdk", "vmdk", "10M", "subformat=monolithicFlat")
    old, new = DESCRIPTOR_MUTATIONS[mutation]
    text = (tmp_path / "d.vmdk").read_text()
    assert old in text
    (tmp_path / "d.vmdk").write_text(text.replace(old, new))
    assert_agrees(tmp_path / "d.vmdk")


def _descriptor_naming(tmp_path: Path, extent: str) -> Path:
    create(tmp_path, "d.vmdk", "vmdk", "10M", "subformat=monolithicFlat")
    text = (tmp_path / "d.vmdk").read_text().replace('"d-flat.vmdk"', f'"{extent}"')
    (tmp_path / "d.vmdk").write_text(text)
    return tmp_path / "d.vmdk"


@pytest.mark.parametrize("extent, error, reason", [
    ("/dev/sda", UnsafeInputError, "absolute path"),
    ("/etc/shadow", UnsafeInputError, "absolute path"),
    ("../outside-flat.vmdk", UnsafeInputError, "escapes"),
    ("nbd:localhost:10809", UnsafeInputError, "protocol"),
    ("missing-flat.vmdk", InputError, "is missing"),
    ("sub/d-flat.vmdk", InputError, "sub-folder"),
])
def test_unsafe_or_missing_extents_are_refused(tmp_path: Path, extent: str, error: type, reason: str) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "outside-flat.vmdk").touch()
    with pytest.raises(error, match=reason):
        read_image(_descriptor_naming(tmp_path / "sub", extent) if extent.startswith("..")
                   else _descriptor_naming(tmp_path, extent))


def test_extent_symlink_leading_out_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    image = _descriptor_naming(folder, "link-flat.vmdk")
    (folder / "link-flat.vmdk").symlink_to(folder / "d-flat.vmdk")
    assert read_image(image).virtual_size == 10 * 1024**2
    (folder / "link-flat.vmdk").unlink()
    (folder / "link-flat.vmdk").symlink_to(tmp_path / "elsewhere.img")
    (tmp_path / "elsewhere.img").write_bytes(bytes(1024))
    with pytest.raises(UnsafeInputError, match="symbolic link leading out"):
        read_image(image)


def test_device_extent_is_refused(tmp_path: Path) -> None:
    image = _descriptor_naming(tmp_path, "null-flat.vmdk")
    (tmp_path / "null-flat.vmdk").symlink_to("/dev/null")
    with pytest.raises(UnsafeInputError):
        read_image(image)


@pytest.mark.parametrize("fmt", ["vmdk", "qcow2"])
def test_backing_files_refused_unless_allowed(tmp_path: Path, fmt: str) -> None:
    base = create(tmp_path, f"base.{fmt}", fmt, "20M")
    overlay = tmp_path / f"overlay.{fmt}"
    result = qemu_img("create", "-q", "-f", fmt, "-b", base.name, "-F", fmt, overlay.name, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with pytest.raises(UnsafeInputError, match=f"backing file '{base.name}'"):
        read_image(overlay)
    info = read_image(overlay, allow_backing=True)
    assert info.parent is not None and info.parent.format == fmt and info.backing_format == fmt
    assert info.job_files == (str(overlay), str(base))
    assert info.virtual_size == qemu_info(overlay)["virtual-size"]
    if fmt == "vmdk":
        assert info.parent_cid == info.parent.cid and not info.notes


def test_backing_declared_in_another_format_is_refused(tmp_path: Path) -> None:
    create(tmp_path, "base.qcow2", "qcow2", "20M")
    result = qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", "base.qcow2", "-F", "raw", "-o", "size=20M",
                      "overlay.qcow2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with pytest.raises(UnsafeInputError, match="declared raw but is a qcow2"):
        read_image(tmp_path / "overlay.qcow2", allow_backing=True)


def test_backing_outside_the_folder_is_refused_even_when_allowed(tmp_path: Path) -> None:
    base = create(tmp_path, "base.qcow2", "qcow2", "20M")
    (tmp_path / "jobs").mkdir()
    result = qemu_img("create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", "jobs/o.qcow2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with pytest.raises(UnsafeInputError, match="absolute path"):
        read_image(tmp_path / "jobs" / "o.qcow2", allow_backing=True)


def test_backing_loop_is_refused(tmp_path: Path) -> None:
    for name, parent in (("a.qcow2", "b.qcow2"), ("b.qcow2", "a.qcow2")):
        result = qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", parent, "-F", "qcow2", name, "1M", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    with pytest.raises(UnsafeInputError, match="loops"):
        read_image(tmp_path / "a.qcow2", allow_backing=True)


def test_qcow2_external_data_file_is_refused(tmp_path: Path) -> None:
    create(tmp_path, "d.qcow2", "qcow2", "10M", "data_file=d.data")
    with pytest.raises(UnsafeInputError, match="external file 'd.data'"):
        read_image(tmp_path / "d.qcow2")


def test_encrypted_qcow2_is_reported(tmp_path: Path) -> None:
    result = qemu_img("create", "-q", "--object", "secret,id=s0,data=pw", "-f", "qcow2", "-o",
                      "encrypt.format=aes,encrypt.key-secret=s0", "e.qcow2", "10M", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert read_image(tmp_path / "e.qcow2").encrypted


def test_a_raw_disk_holding_a_qcow2_header_is_taken_as_qcow2(tmp_path: Path) -> None:
    """Format by content, as QEMU would probe it: a guest-written header cannot pass as raw."""
    create(tmp_path, "base.qcow2", "qcow2", "1M")
    result = qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", "/etc/shadow", "-F", "raw", "evil.img", "1M",
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with pytest.raises(UnsafeInputError, match="backing file '/etc/shadow'"):
        read_image(tmp_path / "evil.img")


def _mutate_binary(data: bytearray, rng: random.Random) -> bytearray:
    for _ in range(rng.randint(1, 3)):
        choice = rng.random()
        if choice < 0.5:
            data[rng.randrange(80 if rng.random() < 0.7 else min(len(data), 2048))] = rng.randrange(256)
        elif choice < 0.8:
            value = rng.choice([0, 1, 2, 3, 4, 512, 513, 0xFFFFFFFF, rng.randrange(2**32)])
            struct.pack_into("<I", data, rng.randrange(0, 72, 4), value)
        else:
            data = data[:rng.randrange(len(data))]
    return data


def _mutate_text(text: str, rng: random.Random) -> str:
    tokens = ['RW', 'RDONLY', 'FLAT', 'SPARSE', 'VMFS', '"', '0', '-1', '20480', ' ', '\n', '#', 'CID=',
              'createType="', 'vmfs', 'd-flat.vmdk', 's-s001.vmdk', '\r', '=']
    for _ in range(rng.randint(1, 3)):
        at, choice = rng.randrange(len(text)), rng.random()
        if choice < 0.4:
            text = text[:at] + rng.choice(tokens) + text[at:]
        elif choice < 0.7:
            text = text[:at] + text[at + rng.randint(1, 5):]
        else:
            lines = text.split("\n")
            lines.insert(rng.randrange(len(lines)), rng.choice(lines))
            text = "\n".join(lines)
    return text


def test_random_damage_is_judged_like_qemu_img(tmp_path: Path) -> None:
    """Differential fuzzing with a fixed seed: damaged sparse/stream/qcow2 headers and edited
    descriptors; no Python exception escapes, and qemu-img and we agree on every one."""
    rng = random.Random(20261124)
    sources = [create(tmp_path, "m.vmdk", "vmdk", "1M"),
               create(tmp_path, "st.vmdk", "vmdk", "3M", "subformat=streamOptimized"),
               create(tmp_path, "q.qcow2", "qcow2", "10M")]
    create(tmp_path, "d.vmdk", "vmdk", "10M", "subformat=monolithicFlat")
    create(tmp_path, "s.vmdk", "vmdk", "3G", "subformat=twoGbMaxExtentSparse")
    texts = [(tmp_path / "d.vmdk").read_text(), (tmp_path / "s.vmdk").read_text()]
    for number in range(120):
        target = tmp_path / "fuzzed.vmdk"
        if number % 2:
            target.write_text(_mutate_text(rng.choice(texts), rng))
        else:
            target.write_bytes(_mutate_binary(bytearray(rng.choice(sources).read_bytes()), rng))
        theirs = qemu_info(target)
        try:
            ours = read_image(target)
        except UnsafeInputError as error:
            assert "backing file" in error.message   # refused by design where qemu-img only reports it
            continue
        except VMSubmitError:
            assert theirs is None, target.read_bytes()[:600]
            continue
        assert theirs is not None and (ours.format, ours.virtual_size) == (theirs["format"], theirs["virtual-size"])


def test_a_parent_changed_after_the_delta_is_noted(tmp_path: Path) -> None:
    base = create(tmp_path, "base.vmdk", "vmdk", "20M")
    result = qemu_img("create", "-q", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", "delta.vmdk", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = base.read_bytes()
    # qemu-img writes the random CID without leading zeros: the new one may be longer, so it takes
    # that many bytes of the NUL padding after the embedded descriptor (every offset stays)
    at = data.index(b"CID=") + 4
    end, padding = data.index(b"\n", at), data.index(b"\0", at)
    longer = 8 - (end - at)
    base.write_bytes(data[:at] + b"0badc0de" + data[end:padding] + data[padding + longer:])
    info = read_image(tmp_path / "delta.vmdk", allow_backing=True)
    assert info.parent.cid == 0x0BADC0DE
    assert any("does not match the parent's CID 0badc0de" in note for note in info.notes)


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.vmdk")
    with pytest.raises(UnsafeInputError, match="not a regular file"):
        read_image(tmp_path / "pipe.vmdk")
    image = _descriptor_naming(tmp_path, "pipe.vmdk")
    with pytest.raises(UnsafeInputError, match="not a regular file"):
        read_image(image)


def test_a_short_flat_extent_is_noted(tmp_path: Path) -> None:
    create(tmp_path, "d.vmdk", "vmdk", "10M", "subformat=monolithicFlat")
    assert read_image(tmp_path / "d.vmdk").notes == ()
    os.truncate(tmp_path / "d-flat.vmdk", 4096)
    assert_agrees(tmp_path / "d.vmdk")
    assert "shorter than the descriptor says" in read_image(tmp_path / "d.vmdk").notes[0]
