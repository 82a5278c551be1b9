"""Benchmark: reading a multi-GB OVA's descriptor, and manifest verification vs sha256sum.

Builds, in a temporary folder, a package whose disk is a sparse file of ``--size`` bytes
(default 4 GiB), once as an OVA (the disk member written as a tar header plus a hole)
and once as a folder (.ovf + .mf + disk).  Then:

1. reads the OVA's descriptor and manifest through a file object that counts bytes;
2. times condor_vmsubmit's manifest verification (``extract_disks`` on the folder, the
   same hashing code the OVA extraction uses) against ``sha256sum`` on the same disk
   file, alternating runs and keeping the best of each.

Prints the bytes read and the throughput ratio (target: < 1 MiB, >= 0.9x).
Usage: python3 bench/bench_ovf.py [--size BYTES] [--runs N]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

from condor_vmsubmit.formats import load
from condor_vmsubmit.formats.ovf import ova
from condor_vmsubmit.formats.ovf.extract import extract_disks

DESCRIPTOR = """<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
  <References><File ovf:id="file1" ovf:href="big-disk1.vmdk" ovf:size="{size}"/></References>
  <DiskSection><Info>disks</Info>
    <Disk ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:capacity="{size}"
          ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <VirtualSystem ovf:id="big"><Info>a big appliance</Info>
    <VirtualHardwareSection><Info>hw</Info>
      <Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>1024</rasd:VirtualQuantity></Item>
      <Item><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceType>6</rasd:ResourceType></Item>
      <Item><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"""


class CountingFile(io.FileIO):
    """A file object that counts every byte read through it."""

    def __init__(self, path: Path):
        super().__init__(path, "rb")
        self.bytes_read = 0

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def,override]
        count = super().readinto(buffer) or 0
        self.bytes_read += count
        return count

    def read(self, size: int = -1) -> bytes:
        data = super().read(size)
        self.bytes_read += len(data)
        return data


def sha256sum(path: Path) -> tuple[str, float]:
    start = time.perf_counter()
    out = subprocess.run(["sha256sum", str(path)], check=True, capture_output=True, text=True).stdout
    return out.split()[0], time.perf_counter() - start


def build(folder: Path, size: int) -> tuple[Path, Path]:
    """The package as a folder (.ovf, .mf, sparse disk) and as an OVA with the disk as a hole."""
    disk = folder / "big-disk1.vmdk"
    with open(disk, "wb") as handle:
        handle.truncate(size)
    digest, _ = sha256sum(disk)
    descriptor = DESCRIPTOR.format(size=size).encode()
    manifest = (f"SHA256(big.ovf)= {hashlib.sha256(descriptor).hexdigest()}\n"
                f"SHA256(big-disk1.vmdk)= {digest}\n").encode()
    (folder / "big.ovf").write_bytes(descriptor)
    (folder / "big.mf").write_bytes(manifest)
    ova_path = folder / "big.ova"
    with open(ova_path, "wb") as out:
        # the disk first, so the reader must seek over it to find the descriptor
        info = tarfile.TarInfo("big-disk1.vmdk")
        info.size = size
        out.write(info.tobuf(format=tarfile.USTAR_FORMAT))
        out.seek(size + (-size % 512), os.SEEK_CUR)
        for name, data in (("big.ovf", descriptor), ("big.mf", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.write(info.tobuf(format=tarfile.USTAR_FORMAT) + data + b"\0" * (-len(data) % 512))
        out.write(b"\0" * 1024)
    return folder / "big.ovf", ova_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4 * 2**30, help="disk size in bytes (default 4 GiB)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each side (best kept)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ovf-", dir=os.environ.get("TMPDIR")) as tmp:
        descriptor, ova_path = build(Path(tmp), args.size)

        with CountingFile(ova_path) as counted:
            index = ova.index(ova_path, counted)
            ova.read_member(index, index.descriptor, fileobj=counted)
            ova.read_member(index, index.manifest, fileobj=counted)  # type: ignore[arg-type]
        spec = load(ova_path)
        assert spec.disks[0].capacity_bytes == args.size
        print(f"OVA of {ova_path.stat().st_size / 2**30:.2f} GiB: descriptor and manifest found by reading "
              f"{counted.bytes_read} bytes ({counted.bytes_read / 2**20:.3f} MiB; target < 1 MiB)")

        spec = load(descriptor)
        disk = descriptor.with_name("big-disk1.vmdk")
        ours, theirs = [], []
        for _ in range(args.runs):
            start = time.perf_counter()
            files = extract_disks(spec, Path(tmp) / "unused")
            ours.append(time.perf_counter() - start)
            assert files.warnings == () and files.paths["big-disk1.vmdk"] == disk.resolve()
            theirs.append(sha256sum(disk)[1])
        mine, reference = args.size / min(ours) / 2**20, args.size / min(theirs) / 2**20
        print(f"manifest verification: {mine:.0f} MiB/s; sha256sum: {reference:.0f} MiB/s; "
              f"ratio {mine / reference:.2f}x (target >= 0.9x; best of {args.runs})")


if __name__ == "__main__":
    main()
