"""The execute side's checks, run on the submit side before anything is written or submitted.

:func:`preflight_spec` builds the domain the runner would start for a spec (the user's XML
replayed, or the spec rendered, with the job's shared folders), runs the admin's policy over it and
then the safety rules, whose file rules see the files the job will transfer
(:class:`~condor_vmsubmit.checks.safety.TransferredFiles`).  The runner runs the same code again on
the execute node, against the sandbox (docs/policy.md says what each side can and cannot see).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from lxml import etree

from ..domain.render import job_domain
from ..domain.sandbox import Sandbox
from ..domain.shares import add_filesystems, plan_shares
from ..spec import VMSpec
from ..xmlsafe import parse_file
from .policy import Policy, PolicyResult, apply_policy
from .safety import Files, Refusal, TransferredFiles, check_domain, declared_backing

PREFLIGHT_JOB_ID = "policy-check"  # stands in for the job id the runner derives names and MACs from
# The job's sandbox as the submit side pictures it: a folder no submit host has, so that no path the
# user's XML names is mistaken for a file the job will have (the runner's sandbox is only known there).
JOB_SANDBOX = Path("/condor-job-sandbox")


@dataclass(frozen=True)
class Preflight:
    """The policy's verdict and, when it did not reject the VM, every safety refusal."""

    policy: PolicyResult
    refusals: tuple[Refusal, ...] = ()


def preflight(path: str | Path, policy: Policy) -> Preflight:
    """The verdict the execute side would reach for the VM in ``path`` (libvirt XML, OVF/OVA or a
    disk image) submitted with the runner target's defaults, before anything is submitted."""
    from ..formats import load
    from ..translate import TranslateOptions, translate

    spec = load(path)
    return preflight_spec(spec, policy, translate(spec, TranslateOptions()).input_files)


def preflight_spec(spec: VMSpec, policy: Policy, input_files: Iterable[str], *,
                   node_settings: bool = True) -> Preflight:
    """The verdict the execute side would reach for ``spec`` whose job transfers ``input_files``
    (paths on this host; HTCondor puts each into the sandbox under its base name).

    ``node_settings``: whether ``policy`` holds the execute node's networks and host-media setting
    (``policy-check`` reads them from the configuration); a frontend, which reads no configuration,
    leaves what they decide to the runner."""
    sandbox = Sandbox(JOB_SANDBOX)
    user = parse_file(spec.source_path) if spec.source_format == "libvirt" and spec.source_path else None
    root, _notes = job_domain(spec, sandbox, user, domain_type=_domain_type(spec), job_id=PREFLIGHT_JOB_ID)
    add_filesystems(root, plan_shares(spec, sandbox, virtiofs_available=False))
    files = TransferredFiles(JOB_SANDBOX, {PurePosixPath(path).name: Path(path) for path in input_files})
    return judge(root, spec, policy, files, path=spec.source_path or spec.name, node_settings=node_settings)


def judge(root: etree._Element, spec: VMSpec, policy: Policy, files: Files, *, path: str | Path,
          image_dir: str | Path | None = None, node_settings: bool = True) -> Preflight:
    """The admin's ``policy`` over the job's domain ``root`` (read from ``path``), then the safety
    rules over what the policy let through, their file rules asking ``files``: the one verdict
    both sides reach (the runner with the sandbox, the submit side with the files it transfers)."""
    result = apply_policy(root, policy, path=path)
    if result.root is None:
        return Preflight(result)
    return Preflight(result, tuple(safety_refusals(result.root, spec, policy, files, image_dir=image_dir,
                                                   node_settings=node_settings)))


def safety_refusals(root: etree._Element, spec: VMSpec, policy: Policy, files: Files, *,
                    image_dir: str | Path | None = None, node_settings: bool = True) -> list[Refusal]:
    """The safety rules over a domain the policy already let through (``root``), with the node's
    settings from ``policy`` where ``node_settings``."""
    return check_domain(root, files, allowed_networks=policy.allowed_networks if node_settings else None,
                        allow_host_media=policy.allow_host_media if node_settings else None, image_dir=image_dir,
                        declared_backing=declared_backing(spec))


def _domain_type(spec: VMSpec) -> str:
    """The domain type the runner would choose, assuming KVM works where the job asks for it."""
    return "kvm" if spec.hypervisor == "kvm" else "qemu"
