"""OVA packages: header-only reading, manifests in every spelling, extraction, hostile members.

The packages are built in tmp_path from the real ttylinux appliance of the corpus
(govmomi's test data): its descriptor, disk and manifest, re-packed in the shapes
found in the wild.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from condor_vmsubmit.errors import InputError, UnsafeInputError
from condor_vmsubmit.formats import load
from condor_vmsubmit.formats.ovf import ova
from condor_vmsubmit.formats.ovf.extract import extract_disks, plan_disks

from conftest import corpus_folder

STEM = "ttylinux-pc_i486-16.1"
DISK = f"{STEM}-disk1.vmdk"


@pytest.fixture(scope="module")
def package() -> Path:
    return corpus_folder("ovf") / f"govmomi__{STEM}"


def descriptor(package: Path) -> bytes:
    return (package / f"{STEM}.ovf").read_bytes()


def disk(package: Path) -> bytes:
    return (package / DISK).read_bytes()


def make_ova(path: Path, members: list[tuple[str, bytes]], links: dict[str, tuple[bytes, str]] | None = None) -> Path:
    """A tar of ``members`` (name, data) in order; ``links`` adds symlink/hardlink members."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, (kind, target) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tar.addfile(info)
    return path


def manifest(entries: dict[str, bytes], style: str = "SHA1({name})= {hex}", algorithm: str = "sha1",
             newline: str = "\n", upper: bool = False) -> bytes:
    lines = []
    for name, data in entries.items():
        hexdigest = hashlib.new(algorithm, data).hexdigest()
        lines.append(style.format(name=name, hex=hexdigest.upper() if upper else hexdigest))
    return (newline.join(lines) + newline).encode()


def test_the_real_ova_loads_and_its_disk_streams_out_verified(package: Path, tmp_path: Path) -> None:
    spec = load(package / f"{STEM}.ova")
    assert (spec.source_format, spec.vcpus, spec.memory_bytes) == ("ovf", 1, 32 * 2**20)
    assert [(d.source, d.format, d.bus) for d in spec.disks] == [(DISK, "vmdk", "ide")]
    files = extract_disks(spec, tmp_path / "out")
    local = files.paths[DISK]
    assert local == tmp_path / "out" / DISK
    assert local.read_bytes() == disk(package)
    assert files.warnings == ()
    assert files.apply(spec).disks[0].source == str(local)


@pytest.mark.parametrize("style,algorithm,newline,upper", [
    ("SHA1({name})= {hex}", "sha1", "\n", False),
    ("SHA256 ({name}) = {hex}", "sha256", "\r\n", True),
    ("SHA512({name})={hex}", "sha512", "\n", False),
    ("sha256 ( {name} ) =  {hex}", "sha256", "\r\n", False),
])
def test_manifest_spellings_in_the_wild_verify(package: Path, tmp_path: Path, style: str,
                                               algorithm: str, newline: str, upper: bool) -> None:
    ovf_bytes, disk_bytes = descriptor(package), disk(package)
    mf = manifest({f"{STEM}.ovf": ovf_bytes, DISK: disk_bytes}, style, algorithm, newline, upper)
    # descriptor not first, a subfolder, a macOS resource fork and a folder entry
    path = make_ova(tmp_path / "a.ova", [("appliance/._" + DISK, b"junk"), (f"appliance/{DISK}", disk_bytes),
                                         (f"appliance/{STEM}.mf", mf), (f"appliance/{STEM}.ovf", ovf_bytes)])
    index = ova.index(path)
    assert index.descriptor.name == f"appliance/{STEM}.ovf" and index.base == "appliance"
    assert f"appliance/._{DISK}" not in index.members
    files = extract_disks(load(path), tmp_path / "out")
    assert files.paths[DISK].read_bytes() == disk_bytes
    assert files.warnings == ()


def test_a_tampered_disk_is_an_error_naming_it(package: Path, tmp_path: Path) -> None:
    ovf_bytes, disk_bytes = descriptor(package), disk(package)
    mf = manifest({f"{STEM}.ovf": ovf_bytes, DISK: disk_bytes})
    tampered = disk_bytes[:-1] + bytes([disk_bytes[-1] ^ 1])
    path = make_ova(tmp_path / "t.ova", [(f"{STEM}.ovf", ovf_bytes), (f"{STEM}.mf", mf), (DISK, tampered)])
    with pytest.raises(InputError, match=f"'{DISK}' does not match its SHA1 digest") as error:
        extract_disks(load(path), tmp_path / "out")
    assert error.value.line == 2
    assert not (tmp_path / "out" / DISK).exists()


def test_a_file_missing_from_the_manifest_is_a_warning(package: Path, tmp_path: Path) -> None:
    ovf_bytes = descriptor(package)
    mf = manifest({f"{STEM}.ovf": ovf_bytes})
    path = make_ova(tmp_path / "m.ova", [(f"{STEM}.ovf", ovf_bytes), (f"{STEM}.mf", mf), (DISK, disk(package))])
    files = extract_disks(load(path), tmp_path / "out")
    assert files.warnings == (f"the manifest does not list '{DISK}'; it is not verified",)


def test_a_gzip_compressed_disk_is_verified_compressed_and_extracted_plain(package: Path, tmp_path: Path) -> None:
    disk_bytes = disk(package)
    packed = gzip.compress(disk_bytes)
    ovf_bytes = descriptor(package).replace(f'ovf:href="{DISK}"'.encode(),
                                            f'ovf:href="{DISK}.gz" ovf:compression="gzip"'.encode())
    mf = manifest({f"{STEM}.ovf": ovf_bytes, f"{DISK}.gz": packed}, "SHA256({name})= {hex}", "sha256")
    path = make_ova(tmp_path / "z.ova", [(f"{STEM}.ovf", ovf_bytes), (f"{STEM}.mf", mf), (f"{DISK}.gz", packed)])
    spec = load(path)
    assert spec.disks[0].source == f"{DISK}.gz"
    files = extract_disks(spec, tmp_path / "out")
    assert files.paths[f"{DISK}.gz"] == tmp_path / "out" / DISK
    assert (tmp_path / "out" / DISK).read_bytes() == disk_bytes
    assert plan_disks(spec, tmp_path / "plan").paths[f"{DISK}.gz"] == tmp_path / "plan" / DISK


def test_a_gzip_disk_next_to_an_ovf_is_gunzipped_into_the_output_folder(package: Path, tmp_path: Path) -> None:
    disk_bytes = disk(package)
    ovf_bytes = descriptor(package).replace(f'ovf:href="{DISK}"'.encode(),
                                            f'ovf:href="{DISK}.gz" ovf:compression="gzip"'.encode())
    (tmp_path / f"{STEM}.ovf").write_bytes(ovf_bytes)
    (tmp_path / f"{DISK}.gz").write_bytes(gzip.compress(disk_bytes))
    files = extract_disks(load(tmp_path / f"{STEM}.ovf"), tmp_path / "out")
    assert files.paths[f"{DISK}.gz"].read_bytes() == disk_bytes


def test_ovf_files_are_used_in_place_and_verified(package: Path, tmp_path: Path) -> None:
    files = extract_disks(load(package / f"{STEM}.ovf"), tmp_path)
    assert files.paths[DISK] == (package / DISK).resolve()
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "p").mkdir()
    for name in (f"{STEM}.ovf", f"{STEM}.mf"):
        (tmp_path / "p" / name).write_bytes((package / name).read_bytes())
    (tmp_path / "p" / DISK).write_bytes(disk(package)[:-1] + b"\0")
    with pytest.raises(InputError, match="does not match"):
        extract_disks(load(tmp_path / "p" / f"{STEM}.ovf"), tmp_path / "out")


@pytest.mark.parametrize("member", ["../evil.vmdk", "/etc/evil.vmdk", "a/../../evil.vmdk"])
def test_members_that_escape_are_refused(package: Path, tmp_path: Path, member: str) -> None:
    path = make_ova(tmp_path / "e.ova", [(f"{STEM}.ovf", descriptor(package)), (member, b"x")])
    with pytest.raises(UnsafeInputError, match="escapes"):
        load(path)


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_link_members_are_refused(package: Path, tmp_path: Path, kind: bytes) -> None:
    path = make_ova(tmp_path / "l.ova", [(f"{STEM}.ovf", descriptor(package))],
                    links={DISK: (kind, "/etc/shadow")})
    with pytest.raises(UnsafeInputError, match="link"):
        load(path)


@pytest.mark.parametrize("href", ["../outside.vmdk", "/etc/passwd", "http://example.com/d.vmdk"])
def test_hrefs_that_escape_are_refused_before_any_file_is_read(package: Path, tmp_path: Path, href: str) -> None:
    ovf_bytes = descriptor(package).replace(f'ovf:href="{DISK}"'.encode(), f'ovf:href="{href}"'.encode())
    path = make_ova(tmp_path / "h.ova", [(f"{STEM}.ovf", ovf_bytes), (DISK, disk(package))])
    spec = load(path)
    with pytest.raises(UnsafeInputError):
        plan_disks(spec, tmp_path / "out")
    with pytest.raises(UnsafeInputError):
        extract_disks(spec, tmp_path / "out")


def test_a_symlink_next_to_an_ovf_pointing_outside_is_refused(package: Path, tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / f"{STEM}.ovf").write_bytes(descriptor(package))
    (tmp_path / "secret.vmdk").write_bytes(b"secret")
    os.symlink(tmp_path / "secret.vmdk", tmp_path / "p" / DISK)
    with pytest.raises(UnsafeInputError, match="outside"):
        extract_disks(load(tmp_path / "p" / f"{STEM}.ovf"), tmp_path / "out")


def test_a_missing_member_is_an_input_error(package: Path, tmp_path: Path) -> None:
    path = make_ova(tmp_path / "n.ova", [(f"{STEM}.ovf", descriptor(package))])
    with pytest.raises(InputError, match=f"no member '{DISK}'"):
        extract_disks(load(path), tmp_path / "out")


def test_not_a_tar_and_no_descriptor_are_input_errors(tmp_path: Path) -> None:
    (tmp_path / "x.ova").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(InputError, match="not a readable OVA"):
        load(tmp_path / "x.ova")
    with pytest.raises(InputError, match="no .ovf descriptor"):
        load(make_ova(tmp_path / "y.ova", [("disk.vmdk", b"x")]))


class CountingFile(io.FileIO):
    """A file that counts the bytes read through it."""

    bytes_read = 0

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def,override]
        count = super().readinto(buffer)
        CountingFile.bytes_read += count or 0
        return count

    def read(self, size: int = -1) -> bytes:
        data = super().read(size)
        CountingFile.bytes_read += len(data)
        return data


def test_indexing_reads_headers_not_disk_data(package: Path, tmp_path: Path) -> None:
    path = tmp_path / "big.ova"
    with open(path, "wb") as out:  # a 256 MiB member that is a hole on disk, then the descriptor
        big = tarfile.TarInfo(DISK)
        big.size = 256 * 2**20
        out.write(big.tobuf(format=tarfile.USTAR_FORMAT))
        out.seek(big.size, os.SEEK_CUR)
        data = descriptor(package)
        info = tarfile.TarInfo(f"{STEM}.ovf")
        info.size = len(data)
        out.write(info.tobuf(format=tarfile.USTAR_FORMAT) + data + b"\0" * (-len(data) % 512) + b"\0" * 1024)
    CountingFile.bytes_read = 0
    with CountingFile(path) as counted:
        index = ova.index(path, counted)
        ova.read_member(index, index.descriptor, fileobj=counted)
    assert index.members[DISK].size == 256 * 2**20
    assert CountingFile.bytes_read < 64 * 1024


@pytest.mark.parametrize("attributes,message", [
    ('ovf:chunkSize="1048576"', "split into chunks"),
    ('ovf:compression="bzip2"', "only gzip is supported"),
])
def test_chunked_and_non_gzip_files_are_clear_errors(package: Path, tmp_path: Path, attributes: str,
                                                     message: str) -> None:
    ovf_bytes = descriptor(package).replace(f'ovf:href="{DISK}"'.encode(), f'ovf:href="{DISK}" {attributes}'.encode())
    path = make_ova(tmp_path / "c.ova", [(f"{STEM}.ovf", ovf_bytes), (DISK, disk(package))])
    spec = load(path)
    for function in (plan_disks, extract_disks):
        with pytest.raises(InputError, match=message):
            function(spec, tmp_path / "out")


def test_gzip_data_that_is_not_gzip_is_an_input_error(package: Path, tmp_path: Path) -> None:
    ovf_bytes = descriptor(package).replace(f'ovf:href="{DISK}"'.encode(),
                                            f'ovf:href="{DISK}" ovf:compression="gzip"'.encode())
    path = make_ova(tmp_path / "g.ova", [(f"{STEM}.ovf", ovf_bytes), (DISK, disk(package))])
    with pytest.raises(InputError, match="not valid gzip data"):
        extract_disks(load(path), tmp_path / "out")


def test_extraction_replaces_a_planted_symlink_instead_of_writing_through_it(package: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "out").mkdir()
    os.symlink(victim, tmp_path / "out" / DISK)
    files = extract_disks(load(package / f"{STEM}.ova"), tmp_path / "out")
    assert victim.read_text() == "precious"
    assert not files.paths[DISK].is_symlink() and files.paths[DISK].read_bytes() == disk(package)
