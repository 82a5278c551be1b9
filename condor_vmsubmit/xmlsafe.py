"""Hardened XML parsing for untrusted descriptions (libvirt XML, OVF envelopes).

No entity expansion, no DTD loading, no network access, a size limit, and every
failure reported as one line naming the file and the line.
"""

from __future__ import annotations

import os
from pathlib import Path

from lxml import etree

from .errors import InputError, UnsafeInputError

MAX_XML_BYTES = 32 * 1024 * 1024


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


def parse_bytes(data: bytes, path: str | Path) -> etree._Element:
    """Parse ``data`` (read from ``path``) into its root element, refusing anything risky."""
    if len(data) > MAX_XML_BYTES:
        raise UnsafeInputError(
            f"XML document is {len(data)} bytes, larger than the {MAX_XML_BYTES} byte limit", path=path
        )
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        msg = exc.msg or str(exc)
        # lxml appends "(<string>, line N)"; we print the real file and line ourselves.
        msg = msg.split(", line ")[0].removesuffix(" (<string>").strip()
        if "entity amplification" in msg or "entity reference loop" in msg:  # billion laughs and kin
            raise UnsafeInputError("XML expands entities without bound (a 'billion laughs' document); "
                                   "refusing it", path=path, line=exc.lineno) from None
        raise InputError(f"malformed XML: {msg}", path=path, line=exc.lineno) from None
    except ValueError as exc:  # e.g. unicode strings with an encoding declaration
        raise InputError(f"malformed XML: {exc}", path=path) from None
    docinfo = root.getroottree().docinfo
    if docinfo.system_url or docinfo.public_id:
        raise UnsafeInputError("XML refers to an external DTD; refusing to load it", path=path, line=1)
    dtd = docinfo.internalDTD
    if dtd is not None and any(True for _ in dtd.iterentities()):
        raise UnsafeInputError("XML declares entities in a DTD; refusing to expand them", path=path, line=1)
    return root


def parse_file(path: str | Path) -> etree._Element:
    """Read ``path`` (at most the size limit) and parse it with :func:`parse_bytes`."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > MAX_XML_BYTES:
                raise UnsafeInputError(f"XML document is {size} bytes, larger than the {MAX_XML_BYTES} byte limit",
                                       path=path)
            # Ask for the file's size, not the limit: read(n) allocates n bytes up front.
            # Pipes and devices report 0 and may fill the limit (parse_bytes refuses more).
            data = handle.read((size or MAX_XML_BYTES) + 1)
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", path=path) from None
    return parse_bytes(data, path)


def localname(element: etree._Element) -> str:
    """The tag of ``element`` without its namespace."""
    return etree.QName(element).localname
