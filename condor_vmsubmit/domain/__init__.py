"""The domain a job starts, as both sides build it from the spec: the spec rendered or the user's
XML replayed for the job's sandbox (:mod:`.render`, :mod:`.adapt`), with its shared folders
(:mod:`.shares`), every file where the sandbox holds it (:mod:`.sandbox`).

The runner starts this domain on the execute node; the submit side renders the same one to run
the checks over it before anything is submitted (:mod:`condor_vmsubmit.checks.preflight`).
Nothing here touches libvirt or the execute node.
"""
