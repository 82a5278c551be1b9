"""OVF 0.9/1.x/2.x descriptors and OVA appliances, read into a :class:`VMSpec`.

The flow: :mod:`.ova` indexes an OVA's tar headers, :mod:`.envelope` reads the descriptor's
sections, :mod:`.hardware` its VirtualHardwareSection, :mod:`.product` its ProductSection,
:mod:`.appliance` puts them together into the spec, and :mod:`.extract` checks the
:mod:`.manifest` and turns the disks the spec names into files for the job.
"""

from .appliance import Appliance, choose_profile, load, open_appliance, spec_from_appliance

__all__ = ["Appliance", "choose_profile", "load", "open_appliance", "spec_from_appliance"]
