"""The checks both sides apply to a VM: the safety rules (:mod:`.safety`), the admin's policy
(:mod:`.policy`) and the ``VMSUBMIT_*`` knobs they read (:mod:`.knobs`).

The submit side runs them before anything is written or submitted; the runner runs them again on
the execute node, against the job's sandbox, before the guest starts.
"""
