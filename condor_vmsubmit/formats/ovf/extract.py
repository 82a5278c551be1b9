"""Extract an appliance's disk files for the job, verified against its manifest.

For a ``.ovf`` the files next to the descriptor are used in place (gzip-compressed ones
are decompressed into the output folder); for a ``.ova`` only the members the disks
name are streamed, once each, out of the tar into the output folder.  Every byte is
hashed as it streams past when the manifest lists the file: a mismatch is an error
naming the file, a file the manifest omits a warning.  References that escape the
package (``../``, absolute paths, symlinks pointing outside) are refused.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ...errors import InputError, UnsafeInputError
from ...spec import VMSpec
from . import ova
from .appliance import open_appliance
from .envelope import FileRef, member_path, references
from .manifest import CHUNK, Digest, check, hash_stream, parse_manifest


@dataclass(frozen=True)
class DiskFiles:
    """Local paths of the disk files, by the href the spec names them with."""

    paths: dict[str, Path]
    warnings: tuple[str, ...]

    def apply(self, spec: VMSpec) -> VMSpec:
        """``spec`` with each disk source replaced by its local file."""
        from dataclasses import replace

        disks = tuple(replace(d, source=str(self.paths[d.source])) if d.source in self.paths else d
                      for d in spec.disks)
        return replace(spec, disks=disks)


def extract_disks(spec: VMSpec, out_dir: str | Path, *, progress: bool = False) -> DiskFiles:
    """Verify and make available every file the disks of ``spec`` (read from an appliance) name."""
    if spec.source_path is None:
        raise InputError("the spec does not say which appliance it was read from")
    package = spec.source_path
    appliance = open_appliance(package, system=spec.extras.get("ovf_system") or None)
    files = {ref.href: ref for ref in references(appliance.root).values()}
    hrefs = list(dict.fromkeys(d.source for d in spec.disks if d.source))
    for href in hrefs:
        _supported(files.get(href), href, package)
    warnings: list[str] = []
    out_folder = Path(out_dir)
    if appliance.ova is not None:
        paths = _extract_from_ova(appliance.ova, hrefs, files, out_folder, warnings, progress)
    else:
        paths = _extract_from_folder(Path(package), hrefs, files, out_folder, warnings, progress)
    return DiskFiles(paths, tuple(warnings))


def plan_disks(spec: VMSpec, out_dir: str | Path) -> DiskFiles:
    """Where :func:`extract_disks` would put each file, checking names but reading no file data."""
    if spec.source_path is None:
        raise InputError("the spec does not say which appliance it was read from")
    appliance = open_appliance(spec.source_path, system=spec.extras.get("ovf_system") or None)
    files = {ref.href: ref for ref in references(appliance.root).values()}
    paths = {}
    for href in dict.fromkeys(d.source for d in spec.disks if d.source):
        ref = _supported(files.get(href), href, spec.source_path)
        if appliance.ova is not None:
            name = member_path(appliance.ova.base, href, spec.source_path)
            if name not in appliance.ova.members:
                raise InputError(f"the OVA has no member '{name}' for file reference '{href}'",
                                 path=spec.source_path)
            paths[href] = Path(out_dir) / _extracted_name(name, ref)
        elif _is_gzip(ref):
            _local_file(Path(spec.source_path), href)
            paths[href] = Path(out_dir) / _extracted_name(member_path("", href, spec.source_path), ref)
        else:
            paths[href] = _local_file(Path(spec.source_path), href)
    return DiskFiles(paths, ())


def _supported(ref: FileRef | None, href: str, package: str | Path) -> FileRef | None:
    """``ref`` when we can read its file: plain or gzip, in one piece."""
    if ref is not None and ref.compression not in (None, "", "identity", "gzip"):
        raise InputError(f"file '{href}' uses compression '{ref.compression}'; only gzip is supported",
                         path=package)
    if ref is not None and ref.chunk_size:
        raise InputError(f"file '{href}' is split into chunks (ovf:chunkSize), which is not supported",
                         path=package)
    return ref


def _is_gzip(ref: FileRef | None) -> bool:
    return ref is not None and ref.compression == "gzip"


def _extracted_name(name: str, ref: FileRef | None) -> str:
    """The file name in the output folder: the member name, without ``.gz`` once gunzipped."""
    return name[:-3] if _is_gzip(ref) and name.endswith(".gz") else name


def _local_file(descriptor: Path, href: str) -> Path:
    """The file ``href`` names next to ``descriptor``; refuses what resolves outside its folder."""
    folder = descriptor.resolve().parent
    local = (folder / member_path("", href, descriptor)).resolve()
    if folder not in local.parents:
        raise UnsafeInputError(f"file reference '{href}' resolves to {local}, outside {folder}",
                               path=descriptor)
    if not local.is_file():
        raise InputError(f"file '{href}' named by the descriptor is missing", path=descriptor)
    return local


def _extract_from_ova(index: ova.OvaIndex, hrefs: list[str], files: dict[str, FileRef], out_folder: Path,
                      warnings: list[str], progress: bool) -> dict[str, Path]:
    manifest_name = f"{index.path}!{index.manifest.name}" if index.manifest else index.path
    digests = _ova_manifest(index)
    if digests is not None:
        descriptor = ova.read_member(index, index.descriptor)
        _verify_bytes(posixpath.basename(index.descriptor.name), descriptor, digests, manifest_name, warnings)
    paths = {}
    with open(index.path, "rb") as handle:
        for href in hrefs:
            name = member_path(index.base, href, index.path)
            member = index.members.get(name)
            if member is None:
                raise InputError(f"the OVA has no member '{name}' for file reference '{href}'", path=index.path)
            expected = _expected(digests, href, warnings)
            with ova.open_member(index, member, handle) as stream:
                paths[href] = _copy(stream, member.size, out_folder, name, files.get(href), expected,
                                    manifest_name, href, progress)
    if digests is None:
        warnings.append("the OVA has no manifest; its files are not verified")
    return paths


def _ova_manifest(index: ova.OvaIndex) -> dict[str, Digest] | None:
    if index.manifest is None:
        return None
    text = ova.read_member(index, index.manifest).decode("utf-8", "replace")
    return parse_manifest(text, f"{index.path}!{index.manifest.name}")


def _extract_from_folder(descriptor: Path, hrefs: list[str], files: dict[str, FileRef], out_folder: Path,
                         warnings: list[str], progress: bool) -> dict[str, Path]:
    manifest = next((p for p in (descriptor.with_suffix(".mf"), descriptor.with_suffix(".MF")) if p.exists()), None)
    digests = parse_manifest(manifest.read_text(errors="replace"), manifest) if manifest else None
    if digests is not None:
        _verify_bytes(descriptor.name, descriptor.read_bytes(), digests, manifest, warnings)
    else:
        warnings.append(f"no manifest {descriptor.with_suffix('.mf').name}; the files are not verified")
    paths = {}
    for href in hrefs:
        local = _local_file(descriptor, href)
        expected = _expected(digests, href, warnings)
        ref = files.get(href)
        if _is_gzip(ref):
            with open(local, "rb") as stream:
                paths[href] = _copy(stream, local.stat().st_size, out_folder, member_path("", href, descriptor),
                                    ref, expected, manifest or descriptor, href, progress)
            continue
        if expected is not None:
            with open(local, "rb") as stream:
                actual = hash_stream(stream, expected.algorithm, local.stat().st_size, f"verifying {href}",
                                     progress=progress)
            check(href, expected, actual, manifest or descriptor, warnings)
        paths[href] = local
    return paths


def _expected(digests: dict[str, Digest] | None, href: str, warnings: list[str]) -> Digest | None:
    if digests is None:
        return None
    found = digests.get(href) or digests.get(posixpath.normpath(href))
    if found is None:
        check(href, None, None, "", warnings)
    return found


def _verify_bytes(name: str, data: bytes, digests: dict[str, Digest], manifest: str | Path,
                  warnings: list[str]) -> None:
    expected = digests.get(name)
    actual = hashlib.new(expected.algorithm, data).hexdigest() if expected else None
    check(name, expected, actual, manifest, warnings)


def _copy(stream: BinaryIO, size: int, out_folder: Path, name: str, ref: FileRef | None,
          expected: Digest | None, manifest: str | Path, href: str, progress: bool) -> Path:
    """Stream ``stream`` into the output folder (gunzipped when the reference says gzip),
    hashing the stored bytes; returns the local file."""
    compressed = _is_gzip(ref)
    target = out_folder / _extracted_name(name, ref)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)  # replace, never write through, whatever is there (a symlink, a stale copy)
    algorithm = expected.algorithm if expected else "sha1"
    with open(target, "wb") as out:
        if compressed:
            sink = _Gunzip(out, href, manifest)
            actual = hash_stream(stream, algorithm, size, f"extracting {href}", sink=sink.write,
                                 progress=progress)
            sink.finish()
        else:
            actual = hash_stream(stream, algorithm, size, f"extracting {href}", sink=out.write,
                                 progress=progress)
    if expected is not None:
        try:
            check(href, expected, actual, manifest, [])
        except InputError:
            os.unlink(target)
            raise
    return target


class _Gunzip:
    """A writer that decompresses gzip data (all members) into ``out``."""

    def __init__(self, out: BinaryIO, href: str, where: str | Path):
        self._out, self._href, self._where = out, href, where
        self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def write(self, chunk: memoryview) -> None:
        data = bytes(chunk)
        try:
            while data:
                if self._inflater.eof:  # the next member of a multi-member gzip file
                    self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self._out.write(self._inflater.decompress(data, CHUNK))
                data = self._inflater.unconsumed_tail + self._inflater.unused_data
        except zlib.error as exc:
            raise InputError(f"file '{self._href}' is not valid gzip data: {exc}", path=self._where) from None

    def finish(self) -> None:
        self._out.write(self._inflater.flush())
        if not self._inflater.eof:
            raise InputError(f"file '{self._href}' ends before its gzip data does", path=self._where)

