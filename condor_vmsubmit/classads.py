"""Names and values that job ads and machine ads share: the submit side writes them, discovery
advertises them, the runner reads them: hypervisor names, VM types, the ``VM_<HV>_ATTR_`` names and
ClassAd quoting.  The attributes themselves are defined in :mod:`.attributes`; see docs/attributes.md.
"""

from __future__ import annotations

import re

from .errors import InputError

ANY_HYPERVISOR = "any"
LIBVIRT_MANAGED = "libvirt-managed"
SCRIPT_MANAGED = "script-managed"
# libvirt's domain types (domain.rng): a hypervisor outside this set is script-managed.
LIBVIRT_HYPERVISORS = frozenset({
    "qemu", "kqemu", "kvm", "xen", "lxc", "uml", "openvz", "test", "vmware", "hyperv",
    "vbox", "phyp", "vz", "bhyve", "ch",
})

_CLASSAD_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def classad_string(text: str) -> str:
    r"""A ClassAd string literal for ``text``, safe as a submit-file value.

    ``$`` becomes ``$(DOLLAR)`` so condor_submit does not expand macros in it.

    >>> print(classad_string('say "hi" \\ $(HOME)'))
    "say \"hi\" \\ $(DOLLAR)(HOME)"
    """
    quoted = "".join(_CLASSAD_ESCAPES.get(ch, ch) for ch in text)
    return '"' + submit_safe(quoted) + '"'


def submit_safe(text: str) -> str:
    """A plain submit-file value: ``$`` kept literal, no line breaks allowed.

    >>> submit_safe("/data/$x/disk.img")
    '/data/$(DOLLAR)x/disk.img'
    """
    if "\n" in text or "\r" in text:
        raise InputError(f"a line break cannot appear in a submit command value: {text!r}")
    return text.replace("$", "$(DOLLAR)")


def attribute_part(name: str) -> str:
    """An upper-case ClassAd attribute name fragment.

    >>> attribute_part("qemu-direct")
    'QEMU_DIRECT'
    """
    part = re.sub(r"[^A-Za-z0-9_]", "_", name).upper()
    return part if part and not part[0].isdigit() else f"_{part}"


def hypervisor_attr(hypervisor: str, name: str) -> str:
    """``VM_<HV>_ATTR_<NAME>``, the name of a hypervisor-specific fact or wish.

    >>> hypervisor_attr("qemu", "max_vcpus")
    'VM_QEMU_ATTR_MAX_VCPUS'
    """
    return hypervisor_prefix(hypervisor) + attribute_part(name)


def hypervisor_prefix(hypervisor: str) -> str:
    """``VM_<HV>_ATTR_``: what every fact or wish about ``hypervisor`` starts with.

    >>> hypervisor_prefix("qemu-direct")
    'VM_QEMU_DIRECT_ATTR_'
    """
    return f"VM_{attribute_part(hypervisor)}_ATTR_"


def hypervisor_names(hypervisor: str | None) -> tuple[str, ...]:
    """The hypervisors a job accepts, in its order of preference: ``--hypervisor kvm,qemu`` means
    either; ``any`` (or nothing) is the wildcard, in a list too.

    >>> hypervisor_names("kvm, QEMU,kvm"), hypervisor_names(None), hypervisor_names("qemu,any")
    (('kvm', 'qemu'), ('any',), ('any',))
    """
    names = tuple(dict.fromkeys(name.strip().lower() for name in (hypervisor or "").split(",") if name.strip()))
    return (ANY_HYPERVISOR,) if not names or ANY_HYPERVISOR in names else names


def vm_type_for(hypervisor: str) -> str:
    """``libvirt-managed`` for libvirt's domain types and ``any``, else ``script-managed``."""
    if hypervisor == ANY_HYPERVISOR or hypervisor in LIBVIRT_HYPERVISORS:
        return LIBVIRT_MANAGED
    return SCRIPT_MANAGED


def script_managed(hypervisor: str | None) -> bool:
    """Whether an admin's script runs the guest of a spec naming ``hypervisor`` (None: any; a list:
    every one of them is script-managed).

    >>> script_managed("virtualbox"), script_managed("kvm"), script_managed(None), script_managed("kvm,vbox")
    (True, False, False, False)
    """
    return all(vm_type_for(name) == SCRIPT_MANAGED for name in hypervisor_names(hypervisor))
