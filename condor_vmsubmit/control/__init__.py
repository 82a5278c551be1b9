"""``condor_vm_control``'s machinery: find the VM running in a job's sandbox and act on it.

:mod:`.locate` finds the runner and its libvirt session, :mod:`.guests` pauses, resumes,
stops and checkpoints the guest (libvirt or an admin script), :mod:`.console` attaches to
its serial console and :mod:`.sshfwd` forwards its ssh port onto a UNIX socket.
"""
