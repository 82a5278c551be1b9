"""Disk image headers, read by both sides: the frontends (what a disk is, how big, which files
it names) and the runner (that the transferred disk is the one the spec describes).

:mod:`.diskimage` tells the formats apart and dispatches to :mod:`.vmdkfile` and :mod:`.qcow2`;
:mod:`.imageio` holds what they share (bounded reads, :class:`~.imageio.ImageInfo`).
"""
