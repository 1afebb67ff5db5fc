"""The QEMU/KVM backend for a single host (needs the ``qemu`` extra: ``pip install vimkit[qemu]``)."""

from vimkit.drivers.qemu.config import (
    LOCAL_HOST_ID,
    LOCAL_POOL_ID,
    LOCAL_ZONE_ID,
    READY_MARKER,
    QemuConfig,
    local_inventory_toml,
    resolve_accel,
)
from vimkit.drivers.qemu.driver import COMPUTE_OPERATIONS, QemuDriver

__all__ = [
    "COMPUTE_OPERATIONS",
    "LOCAL_HOST_ID",
    "LOCAL_POOL_ID",
    "LOCAL_ZONE_ID",
    "READY_MARKER",
    "QemuConfig",
    "QemuDriver",
    "local_inventory_toml",
    "resolve_accel",
]
