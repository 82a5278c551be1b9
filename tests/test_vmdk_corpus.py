"""The disk-image reader against qemu-img on the real-world VMDK corpus.

../shared/corpus/vmdk/EXPECTED.json holds `qemu-img info --output=json` for every file (or
qemu-img's error).  For every file qemu-img reads, our reader must agree on the format, the
virtual size, the create type, the extents (count, file names, formats) and the CIDs; every
file qemu-img refuses we must refuse with a one-line reason.  Each file is read with at most
64 KiB of reads.  The .bz2 samples are decompressed here (holes kept sparse) and the omitted
zero-filled flat extents recreated exactly as MANIFEST.tsv's notes say.
"""

from __future__ import annotations

import bz2
import re
import shutil
from pathlib import Path

import pytest

from condor_vmsubmit.errors import UnsafeInputError, VMSubmitError
from condor_vmsubmit.images.diskimage import read_header, read_image
from condor_vmsubmit.images.imageio import MAX_HEADER_BYTES

from conftest import corpus_folder, expected

RUNNABLE = ("vmdk", "qcow2", "raw")
_TRUNCATE = re.compile(r"truncate -s (\d+) ([^\s);]+)")


def _decompress(source: Path, target: Path) -> None:
    """bunzip2 ``source`` into ``target``, seeking over zero blocks so 2 TiB images stay sparse."""
    with bz2.open(source) as compressed, open(target, "wb") as out:
        while block := compressed.read(1 << 20):
            if block.strip(b"\x00"):
                out.write(block)
            else:
                out.seek(len(block), 1)
        out.truncate()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch copy of the corpus as qemu-img saw it: decompressed, flat extents recreated."""
    source = corpus_folder("vmdk")
    scratch = tmp_path_factory.mktemp("vmdk-corpus")
    for item in source.iterdir():
        if item.name in ("EXPECTED.json", "MANIFEST.tsv"):
            continue
        if item.suffix == ".bz2":
            _decompress(item, scratch / item.stem)
        else:
            shutil.copyfile(item, scratch / item.name)
    for line in (source / "MANIFEST.tsv").read_text().splitlines()[1:]:
        for size, name in _TRUNCATE.findall(line.split("\t")[-1]):
            with open(scratch / name, "wb") as extent:
                extent.truncate(int(size))
    return scratch


def _ours(path: Path) -> dict:
    info = read_header(path)
    if info.backing is not None:   # qemu-img info reports a backing file; running one needs --allow-backing
        with pytest.raises(UnsafeInputError, match="backing file"):
            read_image(path)
    return {
        "format": info.format,
        "virtual-size": info.virtual_size,
        "create-type": info.create_type,
        "extents": [(Path(e.file).name, e.kind, e.size_bytes) for e in info.extents],
        "cid": info.cid,
        "parent-cid": info.parent_cid,
        "backing-filename": info.backing,
        "bytes_read": info.bytes_read,
    }


def _theirs(qemu: dict) -> dict:
    data = qemu.get("format-specific", {}).get("data", {})
    return {
        "format": qemu["format"],
        "virtual-size": qemu["virtual-size"],
        "create-type": data.get("create-type"),
        "extents": [(Path(e["filename"]).name, e["format"], e["virtual-size"]) for e in data.get("extents", [])],
        "cid": data.get("cid"),
        "parent-cid": data.get("parent-cid"),
        "backing-filename": qemu.get("backing-filename"),
    }


def _verdict(name: str, entry: dict, corpus: Path) -> str | None:
    """None when we agree with qemu-img on ``name``, else what differs."""
    path = corpus / (name[:-4] if name.endswith(".bz2") else name)
    qemu = entry.get("qemu_img_info")
    try:
        ours = _ours(path)
    except VMSubmitError as error:
        line = error.one_line()
        if "\n" in line or not error.message:
            return f"refusal is not one clear line: {line!r}"
        if qemu is None:
            return None
        if qemu["format"] not in RUNNABLE and qemu["format"] in error.message:
            return None   # a format this tool does not run, refused by its name
        return f"qemu-img reads it, we refuse: {line}"
    if qemu is None:
        return f"qemu-img refuses it ({entry.get('qemu_img_error')}), we read {ours}"
    if ours["bytes_read"] > MAX_HEADER_BYTES:
        return f"read {ours['bytes_read']} bytes"
    theirs = _theirs(qemu)
    differing = {key: (ours[key], value) for key, value in theirs.items() if ours[key] != value}
    return f"differs (ours, qemu-img): {differing}" if differing else None


def test_agreement_with_qemu_img(corpus: Path, capsys: pytest.CaptureFixture) -> None:
    cases = expected("vmdk")
    verdicts = {name: _verdict(name, entry, corpus) for name, entry in sorted(cases.items())}
    agreed = sum(verdict is None for verdict in verdicts.values())
    with capsys.disabled():
        print(f"\nvmdk corpus: {agreed}/{len(cases)} files agree with qemu-img info "
              f"({100 * agreed / len(cases):.1f}%)")
    assert {name: verdict for name, verdict in verdicts.items() if verdict} == {}
    assert len(cases) >= 60


def test_refusals_name_the_reason(corpus: Path) -> None:
    """Extents of split images are refused as such, not as garbage."""
    refused = [name for name, entry in expected("vmdk").items() if "role" in entry and "qemu_img_error" in entry]
    assert refused
    for name in refused:
        with pytest.raises(VMSubmitError, match="extent of a split image"):
            read_image(corpus / name)


def test_two_tib_images_read_in_a_few_kib(corpus: Path) -> None:
    for name in ("gen__msparse-2T.vmdk", "gen__stream-2T.vmdk"):
        info = read_image(corpus / name)
        assert info.virtual_size == 2 * 1024**4
        assert info.bytes_read <= 16 * 1024
