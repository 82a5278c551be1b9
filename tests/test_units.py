"""Memory units as libvirt reads them, checked against libvirt itself (its test driver).

libvirt-python's ``test:///default`` driver runs libvirt's own domain parser in
process: whatever ``<memory>`` it accepts, ``maxMemory()`` gives back in KiB.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from condor_vmsubmit.errors import InputError
from condor_vmsubmit.formats.libvirt import load
from condor_vmsubmit.units import UnitError, human_bytes, libvirt_bytes, parse_size, programmatic_multiplier

libvirt = pytest.importorskip("libvirt")

SPELLINGS = ["b", "bytes", "KB", "k", "KiB", "MB", "M", "MiB", "GB", "G", "GiB", "TB", "T", "TiB"]
# Each spelling as written, all lower case, all upper case and in a mixed case.
ALL_CASES = sorted({variant for unit in SPELLINGS
                    for variant in (unit, unit.lower(), unit.upper(), unit.swapcase())})
BYTES_PER_UNIT = {"b": 1, "bytes": 1, "kb": 1000, "k": 1024, "kib": 1024, "mb": 1000**2, "m": 1024**2,
                  "mib": 1024**2, "gb": 1000**3, "g": 1024**3, "gib": 1024**3, "tb": 1000**4,
                  "t": 1024**4, "tib": 1024**4}


def domain_xml(memory: str, name: str = "units") -> str:
    return (f"<domain type='test'><name>{name}</name>{memory}"
            "<os><type>hvm</type></os></domain>")


@pytest.fixture(scope="module")
def libvirt_kib():
    """A function: the KiB libvirt's parser makes of a ``<memory>`` element, or its error."""
    libvirt.registerErrorHandler(lambda *_: None, None)  # keep libvirt's own stderr quiet
    connection = libvirt.open("test:///default")

    def kib(memory: str) -> int | str:
        try:
            domain = connection.defineXML(domain_xml(memory))
        except libvirt.libvirtError as error:
            return f"error: {error.get_error_message()}"
        try:
            return domain.maxMemory()
        finally:
            domain.undefine()

    yield kib
    connection.close()


def our_bytes(tmp_path: Path, memory: str) -> int:
    path = tmp_path / "domain.xml"
    path.write_text(domain_xml(memory))
    return load(path).memory_bytes


@pytest.mark.parametrize("unit", ALL_CASES)
def test_every_spelling_in_any_case_matches_libvirt(unit: str, tmp_path: Path, libvirt_kib) -> None:
    memory = f"<memory unit='{unit}'>1025</memory>"  # 1025 of anything is never whole KiB for B units
    assert our_bytes(tmp_path, memory) == libvirt_kib(memory) * 1024


@pytest.mark.parametrize("unit", ALL_CASES)
def test_scale_of_every_spelling(unit: str) -> None:
    assert libvirt_bytes("3", unit) == 3 * BYTES_PER_UNIT[unit.lower()]


def test_no_unit_means_kib(tmp_path: Path, libvirt_kib) -> None:
    assert our_bytes(tmp_path, "<memory>524288</memory>") == 512 * 1024**2
    assert libvirt_kib("<memory>524288</memory>") == 524288


@pytest.mark.parametrize("memory, kib", [
    ("<memory unit='b'>1</memory>", 1),
    ("<memory unit='b'>1024</memory>", 1),
    ("<memory unit='b'>1025</memory>", 2),
    ("<memory unit='KB'>1</memory>", 1),         # 1000 bytes round up to one KiB
    ("<memory unit='MB'>1</memory>", 977),       # 1000000 / 1024 = 976.56
    ("<memory unit='GB'>4</memory>", 3906250),
])
def test_round_up_to_whole_kib_like_libvirt(memory: str, kib: int, tmp_path: Path, libvirt_kib) -> None:
    assert libvirt_kib(memory) == kib
    assert our_bytes(tmp_path, memory) == kib * 1024


def test_largest_size_libvirt_accepts(tmp_path: Path, libvirt_kib) -> None:
    largest = (2**53 - 1) * 1024
    memory = f"<memory unit='b'>{largest}</memory>"
    assert our_bytes(tmp_path, memory) == libvirt_kib(memory) * 1024 == largest


@pytest.mark.parametrize("memory", [
    f"<memory unit='b'>{(2**53 - 1) * 1024 + 1}</memory>",   # one byte past libvirt's limit
    "<memory unit='EiB'>8</memory>",                         # 2^63 bytes
    "<memory unit='TiB'>99999999999999</memory>",            # past 64 bits
    f"<memory>{2**70}</memory>",
])
def test_overflow_is_refused_like_libvirt(memory: str, tmp_path: Path, libvirt_kib) -> None:
    assert str(libvirt_kib(memory)).startswith("error:")
    with pytest.raises(InputError, match="more than libvirt accepts|overflows 64 bits"):
        our_bytes(tmp_path, memory)


@pytest.mark.parametrize("text, unit", [("12x", "KiB"), ("-1", "KiB"), ("1.5", "GiB"), ("0x10", None),
                                        ("1e3", "MiB"), ("1024", "KiBs"), ("1", "kbit")])
def test_bad_numbers_and_units_name_file_and_line(text: str, unit: str | None, tmp_path: Path,
                                                  libvirt_kib) -> None:
    unit_attr = f" unit='{unit}'" if unit is not None else ""
    memory = f"<memory{unit_attr}>{text}</memory>"
    path = tmp_path / "bad.xml"
    path.write_text(f"<domain type='test'>\n  <name>bad</name>\n  {memory}\n</domain>\n")
    assert str(libvirt_kib(memory)).startswith("error:")
    with pytest.raises(InputError) as caught:
        load(path)
    assert caught.value.one_line().startswith(f"{path}:3: <memory>: ")


def test_numa_cells_give_the_memory_when_memory_is_absent(tmp_path: Path, libvirt_kib) -> None:
    numa = ("<cpu><numa><cell id='0' cpus='0' memory='512' unit='MiB'/>"
            "<cell id='1' cpus='1' memory='1' unit='GB'/></numa></cpu><vcpu>2</vcpu>")
    assert our_bytes(tmp_path, numa) == libvirt_kib(numa) * 1024 == (512 * 1024 + 976563) * 1024


@pytest.mark.parametrize("text, expected", [("2GiB", 2 * 1024**3), ("512M", 512 * 1024**2),
                                            ("1024", 1024**3), ("1 TB", 1000**4), ("7b", 7)])
def test_parse_size_for_users(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "2.5G", "G", "12 parsecs", "-4M"])
def test_parse_size_refuses_nonsense(text: str) -> None:
    with pytest.raises(UnitError):
        parse_size(text)


@pytest.mark.parametrize("units, multiplier", [("byte", 1), ("byte * 2^20", 2**20), ("byte*1024*1024", 2**20),
                                               ("byte * 10^9", 10**9), ("MegaBytes", 2**20), ("KB", 1024)])
def test_ovf_allocation_units(units: str, multiplier: int) -> None:
    assert programmatic_multiplier(units) == multiplier


@pytest.mark.parametrize("units", ["hertz * 10^6", "byte * 2^-3", "byte * 2^99", "bananas"])
def test_ovf_allocation_units_refused(units: str) -> None:
    with pytest.raises(UnitError):
        programmatic_multiplier(units)


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (0, 1023, 1024, 3 * 1024**3, 1536 * 1024**2)] == \
        ["0 B", "1023 B", "1 KiB", "3 GiB", "1.5 GiB"]
