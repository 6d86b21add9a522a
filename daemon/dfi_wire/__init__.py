"""dfi_wire: the one wire protocol (``protocol``) and its client (``client``).

Stdlib, pyzmq and msgpack only: the GIMP plug-in and the ``dfi`` CLI import it,
and the installer copies this folder into GIMP's plug-in folder unchanged.
"""
