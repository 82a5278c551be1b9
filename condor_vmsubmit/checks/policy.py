"""The execute node admin's policy, applied to a domain XML before it starts (and at submit time).

A :class:`Policy` is a list of XSLT stylesheets plus simple limits, read from HTCondor
configuration knobs (:meth:`Policy.from_config`) or given on the command line.
:func:`apply_policy` runs the stylesheets in order, then checks the limits, and says
what happened in a :class:`PolicyResult`: ``accepted`` (nothing changed), ``modified``
(with the changes in human terms, e.g. ``memory 8 GiB -> 4 GiB``) or ``rejected``
(with the reason: a stylesheet's ``<xsl:message terminate="yes">`` text or a limit).

Stylesheets run with lxml's ``XSLTAccessControl.DENY_ALL``: ``document()`` and
``exsl:document`` cannot read or write files or reach the network.  ``xsl:include`` and
``xsl:import`` are resolved when a stylesheet is compiled, outside that control, so a
stylesheet that uses them is refused: policy stylesheets must be self-contained.
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lxml import etree

from ..errors import InputError, UnsafeInputError
from ..formats.libvirt import spec_from_domain
from ..spec import VMSpec
from ..units import UnitError, human_bytes, libvirt_bytes
from ..xmlsafe import parse_file
from . import knobs

XSL_NS = "http://www.w3.org/1999/XSL/Transform"

Verdict = Literal["accepted", "modified", "rejected"]
_SIZE_ELEMENTS = ("memory", "currentMemory", "maxMemory")
# libxslt's words when XSLTAccessControl stops document(), exsl:document and friends.
_ACCESS_DENIED = re.compile(r"(read|write|create) rights for .* denied$|^(Local|Network) file read for .* refused$"
                            r"|^(File write|Directory creation) for .* refused$")


@dataclass(frozen=True)
class Policy:
    """What the admin allows.  Empty ``allowed_networks``: user-mode networking only;
    empty ``allowed_buses``: any disk bus."""

    stylesheets: tuple[Path, ...] = ()
    max_memory_bytes: int | None = None
    max_vcpus: int | None = None
    allowed_networks: frozenset[str] = frozenset()
    allowed_buses: frozenset[str] = frozenset()
    allow_host_media: bool = False  # host cdrom/floppy drives in user XML

    @classmethod
    def from_config(cls, params: Mapping[str, str] | None = None) -> Policy:
        """The policy the HTCondor configuration knobs describe (``htcondor2.param`` by default).

        >>> policy = Policy.from_config({"VMSUBMIT_MAX_MEMORY_MB": "4096", "VMSUBMIT_ALLOWED_BUSES": "virtio, sata"})
        >>> policy.max_memory_bytes, sorted(policy.allowed_buses), policy.allowed_networks
        (4294967296, ['sata', 'virtio'], frozenset())
        """
        used = (knobs.POLICY_XSLT, knobs.MAX_MEMORY_MB, knobs.MAX_VCPUS, knobs.ALLOWED_NETWORKS,
                knobs.ALLOWED_BUSES, knobs.ALLOW_HOST_MEDIA)
        if params is None:
            params = knobs.read(used)
        memory_mib = knobs.MAX_MEMORY_MB.value(params)
        return cls(
            stylesheets=knobs.POLICY_XSLT.value(params),
            max_memory_bytes=memory_mib * 1024**2 if memory_mib is not None else None,
            max_vcpus=knobs.MAX_VCPUS.value(params),
            allowed_networks=frozenset(knobs.ALLOWED_NETWORKS.value(params)),
            allowed_buses=frozenset(knobs.ALLOWED_BUSES.value(params)),
            allow_host_media=knobs.ALLOW_HOST_MEDIA.value(params),
        )


@dataclass(frozen=True)
class PolicyResult:
    """The verdict; ``root`` is the domain to start (None when rejected)."""

    verdict: Verdict
    root: etree._Element | None
    changes: tuple[str, ...] = ()
    reason: str | None = None
    notes: tuple[str, ...] = field(default=())  # non-terminating <xsl:message> texts

    def summary(self, limit: int = 20) -> str:
        """One line for the job ad (VMPolicyChanges) and the job's log, at most ``limit`` changes."""
        if self.verdict == "rejected":
            return f"rejected: {self.reason}"
        if not self.changes:
            return "accepted unchanged"
        more = len(self.changes) - limit
        return "; ".join(self.changes[:limit]) + (f"; and {more} more" if more > 0 else "")


def load_stylesheet(path: Path) -> etree.XSLT:
    """Compile the stylesheet at ``path`` with no file or network access."""
    tree = parse_file(path)
    for element in tree.iter(f"{{{XSL_NS}}}include", f"{{{XSL_NS}}}import"):
        raise UnsafeInputError(f"policy stylesheets must be self-contained: <xsl:{etree.QName(element).localname} "
                               f"href='{element.get('href')}'> is refused", path=path, line=element.sourceline)
    try:
        return etree.XSLT(tree, access_control=etree.XSLTAccessControl.DENY_ALL)
    except etree.XSLTParseError as exc:
        raise InputError(f"not a usable XSLT stylesheet: {exc}", path=path) from None


def apply_policy(domain_root: etree._Element, policy: Policy, *, path: str | Path = "domain.xml") -> PolicyResult:
    """Run ``policy`` over a copy of ``domain_root`` (the domain XML read from ``path``)."""
    before = copy.deepcopy(domain_root)
    current = before
    notes: list[str] = []
    for sheet in policy.stylesheets:
        xslt = load_stylesheet(sheet)
        try:
            output = xslt(current)
        except etree.XSLTApplyError as exc:
            messages = [entry.message for entry in xslt.error_log]
            if not any(message.startswith("runtime error") for message in messages):
                # <xsl:message terminate="yes">: the last message is the reason, earlier ones are notes.
                return PolicyResult("rejected", None, reason=f"{str(exc).strip()} ({sheet.name})",
                                    notes=tuple(notes + messages[:-1]))
            detail = next((m for m in messages if not m.startswith("runtime error") and m != "unknown error"),
                          str(exc))
            if any(_ACCESS_DENIED.search(message) for message in messages):
                raise UnsafeInputError(f"policy stylesheet tried to reach a file or the network: {detail}",
                                       path=sheet) from None
            raise InputError(f"policy stylesheet failed: {detail}", path=sheet) from None
        notes.extend(entry.message for entry in xslt.error_log)
        result = output.getroot()
        if result is None or result.tag != "domain":
            return PolicyResult("rejected", None, reason=f"policy stylesheet {sheet.name} produced no <domain>",
                                notes=tuple(notes))
        current = result
    problems = limit_problems(spec_from_domain(current, path), policy)
    if problems:
        return PolicyResult("rejected", None, reason="; ".join(problems), notes=tuple(notes))
    changes = tuple(describe_changes(domain_root, current))
    return PolicyResult("modified" if changes else "accepted", current, changes, notes=tuple(notes))


def limit_problems(spec: VMSpec, policy: Policy) -> list[str]:
    """How ``spec`` exceeds the policy's simple limits (empty when it does not)."""
    problems = []
    if policy.max_memory_bytes is not None and spec.memory_bytes > policy.max_memory_bytes:
        problems.append(f"memory {human_bytes(spec.memory_bytes)} exceeds the admin's limit of "
                        f"{human_bytes(policy.max_memory_bytes)} ({knobs.MAX_MEMORY_MB.name})")
    if policy.max_vcpus is not None and spec.vcpus > policy.max_vcpus:
        problems.append(f"{spec.vcpus} vcpus exceed the admin's limit of {policy.max_vcpus} ({knobs.MAX_VCPUS.name})")
    networks = ", ".join(sorted(policy.allowed_networks)) or "none"
    for number, nic in enumerate(spec.nics, 1):
        if nic.network_kind in ("network", "bridge") and nic.network not in policy.allowed_networks:
            problems.append(f"interface {number} joins {nic.network_kind} '{nic.network}', not one the admin "
                            f"allows ({knobs.ALLOWED_NETWORKS.name}: {networks})")
    if policy.allowed_buses:
        buses = ", ".join(sorted(policy.allowed_buses))
        for number, disk in enumerate(spec.disks, 1):
            if disk.bus not in policy.allowed_buses:
                problems.append(f"disk {number} ({disk.target or disk.device}) uses bus '{disk.bus}', not one the "
                                f"admin allows ({knobs.ALLOWED_BUSES.name}: {buses})")
    return problems


# --- what changed, in human terms -------------------------------------------------------------

def describe_changes(before: etree._Element, after: etree._Element) -> list[str]:
    """The differences between two domain XMLs, one short phrase each.

    >>> old = etree.fromstring("<domain><memory unit='GiB'>8</memory><devices>"
    ...     "<interface type='user'><mac address='52:54:00:00:00:01'/></interface></devices></domain>")
    >>> new = etree.fromstring("<domain><memory unit='MiB'>4096</memory><devices>"
    ...     "<interface type='user'><link state='down'/></interface></devices></domain>")
    >>> describe_changes(old, new)
    ['memory 8 GiB -> 4 GiB', 'interface 1 MAC removed', 'interface 1 link up -> down']
    """
    changes: list[str] = []
    _diff(before, after, "domain", changes)
    return changes


def _diff(old: etree._Element, new: etree._Element, label: str, out: list[str]) -> None:
    if old.tag in _SIZE_ELEMENTS:
        old_size, new_size = _size(old), _size(new)
        if old_size != new_size:
            out.append(f"{label} {old_size} -> {new_size}")
        return
    old_text, new_text = (old.text or "").strip(), (new.text or "").strip()
    if old_text != new_text:
        out.append(f"{label} {_short(old_text) or '(empty)'} -> {_short(new_text) or '(empty)'}")
    for key in sorted(set(old.attrib) | set(new.attrib)):
        was, now = old.get(key), new.get(key)
        if was == now:
            continue
        if was is None:
            out.append(f"{label} {key} set to {now}")
        elif now is None:
            out.append(f"{label} {key} {was} removed")
        else:
            out.append(f"{label} {key} {was} -> {now}")
    _diff_children(old, new, label, out)


def _diff_children(old: etree._Element, new: etree._Element, label: str, out: list[str]) -> None:
    """Align the children tag by tag (libvirt rarely cares how different tags interleave)."""
    olds_by_tag: dict[str, list[etree._Element]] = {}
    news_by_tag: dict[str, list[etree._Element]] = {}
    for children, by_tag in ((old, olds_by_tag), (new, news_by_tag)):
        for child in children:
            if isinstance(child.tag, str):
                by_tag.setdefault(child.tag, []).append(child)
    for tag in dict.fromkeys([*olds_by_tag, *news_by_tag]):
        olds, news = olds_by_tag.get(tag, []), news_by_tag.get(tag, [])
        old_keys, new_keys = [_key(c) for c in olds], [_key(c) for c in news]
        if old_keys == new_keys:
            continue

        def name(element: etree._Element, index: int, siblings: list[etree._Element]) -> str:
            return _label(element, label, index + 1, len(siblings))

        # autojunk keeps the alignment near-linear when thousands of siblings look alike.
        for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old_keys, b=new_keys).get_opcodes():
            if op == "equal":
                continue
            pairs = min(i2 - i1, j2 - j1)
            for offset in range(pairs):
                _diff(olds[i1 + offset], news[j1 + offset], name(olds[i1 + offset], i1 + offset, olds), out)
            out.extend(_gone(olds[i], name(olds[i], i, olds)) for i in range(i1 + pairs, i2))
            out.extend(_came(news[j], name(news[j], j, news)) for j in range(j1 + pairs, j2))


def _gone(element: etree._Element, label: str) -> str:
    if element.tag == "link" and element.get("state") == "down":
        return f"{label} down -> up"
    return f"{label} removed"


def _came(element: etree._Element, label: str) -> str:
    if element.tag == "link" and element.get("state") == "down":
        return f"{label} up -> down"
    details = " ".join(f"{k}={v}" for k, v in element.attrib.items())
    text = _short((element.text or "").strip())
    return f"{label} added" + (f" ({' '.join(filter(None, (details, text)))})" if details or text else "")


def _label(element: etree._Element, parent_label: str, number: int, count: int) -> str:
    """``interface 2``, ``disk 1 (cdrom hdc)``, ``interface 2 MAC``, ``memory`` ...

    ``number`` is the element's place among the ``count`` siblings with its tag.
    """
    parent = element.getparent()
    if parent is None or parent.getparent() is None:
        parent_label = ""  # children of <domain> are named on their own: "memory", "vcpu"
    if element.tag == "devices":
        return parent_label
    name = {"mac": "MAC"}.get(element.tag, element.tag)
    if parent is not None and parent.tag == "devices":
        name = f"{name} {number}"
        if element.tag == "disk":
            target = element.find("target")
            name += f" ({element.get('device', 'disk')} {target.get('dev') if target is not None else '?'})"
    elif count > 1:
        name = f"{name} {number}"
    return f"{parent_label} {name}".strip()


def _key(element: etree._Element) -> tuple:
    """A hashable, whitespace-insensitive picture of ``element`` for aligning siblings."""
    return (element.tag, tuple(sorted(element.attrib.items())), (element.text or "").strip(),
            tuple(_key(c) for c in element if isinstance(c.tag, str)))


def _size(element: etree._Element) -> str:
    try:
        return human_bytes(libvirt_bytes(element.text or "", element.get("unit")))
    except UnitError:
        return f"{(element.text or '').strip()} {element.get('unit', '')}".strip()


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."
