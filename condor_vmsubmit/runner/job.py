"""The job as the starter hands it to the runner: its sandbox and spec, job ad, machine ad and,
for libvirt-sourced jobs, the user's domain XML.

The starter names the ad files in ``$_CONDOR_JOB_AD`` and ``$_CONDOR_MACHINE_AD``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import classad2
from lxml import etree

from ..domain.sandbox import Sandbox
from ..errors import InputError
from ..spec import VMSpec
from ..xmlsafe import parse_file
from .sandbox import read_spec


@dataclass(frozen=True)
class Job:
    """Everything the runner knows about the job before it starts anything."""

    sandbox: Sandbox
    spec: VMSpec
    job_ad: classad2.ClassAd
    machine_ad: classad2.ClassAd
    user_domain: etree._Element | None

    @property
    def job_id(self) -> str:
        """The job's global id (stable across restarts), or cluster.proc, or the sandbox path."""
        if "GlobalJobId" in self.job_ad:
            return str(self.job_ad["GlobalJobId"])
        if "ClusterId" in self.job_ad:
            return f"{self.job_ad['ClusterId']}.{self.job_ad.get('ProcId', 0)}"
        return str(self.sandbox.root)


def read_ad(path: str | Path) -> classad2.ClassAd:
    """A ClassAd file as the starter writes it (``Name = value`` lines)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InputError(f"cannot read the ad: {exc.strerror}", path=path) from None
    try:
        return classad2.parseOne(text)
    except Exception as exc:  # classad2 raises plain ValueError/ClassAdException subclasses
        raise InputError(f"not a ClassAd: {exc}", path=path) from None


def load_job(ads: tuple[Path, Path], sandbox: Sandbox, spec: VMSpec | None = None) -> Job:
    """Read the job ad and the machine ad (:func:`.sandbox.ad_files`) and the user's domain XML
    for the runner (and the spec, unless the caller has read it already)."""
    job_ad, machine_ad = (read_ad(path) for path in ads)
    spec = spec or read_spec(sandbox)
    user_domain = None
    if spec.source_format == "libvirt" and sandbox.domain_xml_file.exists():
        user_domain = parse_file(sandbox.domain_xml_file)
    return Job(sandbox, spec, job_ad, machine_ad, user_domain)
