"""dfi_wire: the one wire protocol (``protocol``) and its client (``client``).

Stdlib, pyzmq and msgpack only: the GIMP plug-in and the ``dfi`` CLI import it,
and the installer copies this folder into GIMP's plug-in folder unchanged.
"""

from . import protocol  # noqa: F401 (protocol first: it loads validation at its end, whatever is imported first)
