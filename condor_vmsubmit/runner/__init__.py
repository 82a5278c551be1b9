"""The execute side: the job's executable on the execute node (``condor_vm_runner``).

It reads the job (:mod:`.sandbox`), renders the domain for this host (:mod:`.render`),
checks it (:mod:`.verify`, the admin policy, :mod:`.safety`), runs it in a per-job
libvirt session (:mod:`.session`, :mod:`.guard`) and sees it to its end
(:mod:`.lifecycle`); :mod:`.local` does the same on the submit machine for ``--local``.
"""
