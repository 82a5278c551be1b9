"""Admin-installed helper programs shipped with condor_vmsubmit (script-managed hypervisors)."""
