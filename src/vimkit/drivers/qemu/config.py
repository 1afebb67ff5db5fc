"""QEMU backend settings, accelerator detection and the local host's inventory."""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path

#: What the test guest (scripts/build-test-guest.sh) prints on its serial console when it is up.
READY_MARKER = "VIMKIT-READY"
#: The Debian kernel writes past guest RAM while unpacking its initramfs below this.
MIN_MEMORY_MB = 128


@dataclass(frozen=True, slots=True)
class QemuConfig:
    """How the QEMU backend runs its VMs.

    ``state_dir`` holds everything the backend owns (state file, per-VM sockets, logs, volumes);
    ``guest_dir`` the default guest (``vmlinuz`` + ``initramfs.img``, see
    scripts/build-test-guest.sh) — an image id naming a sub-directory of it with the same two files
    selects that guest instead. ``accel`` is ``auto`` (KVM only where the CPU has VT-x/SVM and
    ``/dev/kvm`` exists), ``kvm`` or ``tcg``. ``namespace`` defaults to ``vimkit-`` plus a hash of
    the state directory, so two VIMs (or two test runs) on one machine never share bridges.
    """

    state_dir: Path
    guest_dir: Path
    accel: str = "auto"
    boot_timeout: float = 120.0
    stop_timeout: float = 10.0          # how long a guest may take to honour an ACPI powerdown
    qemu_binary: str = "qemu-system-x86_64"
    qemu_img: str = "qemu-img"
    namespace: str | None = None
    max_concurrent_boots: int | None = None
    event_queue: int = 10_000
    watch_interval: float = 0.5         # seconds between liveness checks of the QEMU processes
    #: Niceness of the QEMU processes: a TCG guest booting takes a whole core, and the VIM's own
    #: work (API, database, taps, config drives) must not queue behind the guests' vCPUs.
    qemu_nice: int = 5

    @property
    def netns(self) -> str:
        if self.namespace:
            return self.namespace
        digest = hashlib.sha1(str(self.state_dir.resolve()).encode()).hexdigest()[:8]
        return f"vimkit-{digest}"

    @property
    def boot_slots(self) -> int:
        # Under TCG a boot is CPU-bound: more than one per core only makes every boot slower.
        return self.max_concurrent_boots or max(1, os.cpu_count() or 1)


def kvm_usable() -> bool:
    """``/dev/kvm`` alone is not enough: nested, hardware-less KVM (kvm-pvm) exposes it but cannot
    boot a stock kernel, and such hosts have no vmx/svm CPU flag."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " vmx" in flags or " svm" in flags


def resolve_accel(accel: str) -> str:
    if accel == "auto":
        return "kvm" if kvm_usable() else "tcg"
    if accel not in ("kvm", "tcg"):
        raise ValueError(f"unknown accelerator {accel!r} (auto, kvm or tcg)")
    return accel


def accel_args(accel: str) -> list[str]:
    if accel == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    # One TCG thread and a small translation cache: several guests on a 2-core host stay usable and
    # each costs ~190 MiB instead of the default 1 GiB translation buffer.
    return ["-accel", "tcg,thread=single,tb-size=32", "-cpu", "max"]


def missing_tools(config: QemuConfig) -> list[str]:
    wanted = [config.qemu_binary, config.qemu_img, "ip", "nsenter"]
    return [tool for tool in wanted if shutil.which(tool) is None]


def host_memory_mb() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 4096


LOCAL_HOST_ID = "local-host"
LOCAL_ZONE_ID = "local"
LOCAL_POOL_ID = "local-pool"


def local_inventory_toml(state_dir: Path | None = None) -> str:
    """The inventory of a single-host QEMU VIM: one zone, this machine as its one host, one pool
    in the state directory's file system and a VXLAN range (no VLAN: 802.1Q is not everywhere,
    and one host needs no provider VLANs). vCPUs are overcommitted 4:1 as in the default inventory;
    1 GiB or a quarter of the memory, whichever is less, stays with the host."""
    cpus = os.cpu_count() or 1
    memory = host_memory_mb()
    reserved = min(1024, memory // 4)
    disk_gb = 100
    if state_dir is not None:
        path = state_dir
        while not path.exists() and path != path.parent:
            path = path.parent
        disk_gb = max(1, shutil.disk_usage(path).total >> 30)
    return f"""\
# Single-host QEMU inventory for {platform.node() or 'this machine'}, derived from the machine.
[[zones]]
zoneId = "{LOCAL_ZONE_ID}"
zoneName = "Local host"
nfviPopId = "local-pop"

[[nfviPops]]
nfviPopId = "local-pop"
geographicalLocationInfo = "{platform.node() or 'local'}"

[[hosts]]
hostId = "{LOCAL_HOST_ID}"
zoneId = "{LOCAL_ZONE_ID}"
vcpus = {cpus}
memoryMb = {memory}
diskGb = {disk_gb}
reservedMemoryMb = {reserved}
cpuAllocationRatio = 4.0

[[storagePools]]
poolId = "{LOCAL_POOL_ID}"
zoneId = "{LOCAL_ZONE_ID}"
typeOfStorage = "volume"
capacityGb = {disk_gb}
multiAttach = false

[[providerNetworks]]
providerNetworkId = "local-vxlan"
networkType = "vxlan"
segmentationRanges = [[10000, 19999]]
mtu = 1450
"""
