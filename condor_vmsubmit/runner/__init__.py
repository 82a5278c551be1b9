"""The execute side: the job's executable on the execute node (``condor_vm_runner``).

It reads the job (:mod:`.sandbox`, :mod:`.job`), checks it against the slot (:mod:`.verify`),
chooses the hypervisor and the backend and sees the job to its end (:mod:`.lifecycle`). The
backends implement one interface (:mod:`.backend`): :mod:`.libvirt_backend` renders the domain
for this host (:mod:`condor_vmsubmit.domain`), runs the checks over it
(:mod:`condor_vmsubmit.checks`) and runs it in a per-job libvirt session (:mod:`.session`,
:mod:`.guard`); :mod:`.script_backend` runs an admin's script (:mod:`.script_protocol`).
:mod:`.local` does the same on the submit machine for ``--local``.
"""
