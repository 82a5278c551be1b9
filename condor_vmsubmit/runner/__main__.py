"""``python -m condor_vmsubmit.runner`` is ``condor_vm_runner``."""

from .cli import main

main()
