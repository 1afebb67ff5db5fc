"""Infrastructure backends behind one async protocol (:mod:`vimkit.drivers.base`).

``sim`` (:mod:`vimkit.drivers.sim`) is the embedded default; the QEMU and OpenStack backends
implement the same :class:`~vimkit.drivers.base.Driver` protocol.
"""

from vimkit.drivers.base import *  # noqa: F403  (the protocol module defines the public names)
from vimkit.drivers.base import __all__  # noqa: F401
