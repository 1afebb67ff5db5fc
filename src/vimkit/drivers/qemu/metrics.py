"""Real metrics: CPU time from /proc, memory from RSS, disks from their allocated size, NIC
counters from the host side of each tap (so the guest's receive is the tap's transmit)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from vimkit.drivers.base import MetricName, MetricSample, ObjectType
from vimkit.drivers.qemu.core import QemuCore, R
from vimkit.drivers.qemu.host import cpu_seconds, rss_mb, tap_name

_COMPUTE = ObjectType.COMPUTE


def _used_share(path: Path, size_gb: int) -> float:
    """Allocated bytes of a thin qcow2 file against its virtual size, in percent."""
    try:
        used = path.stat().st_blocks * 512
    except OSError:
        return 0.0
    return round(min(100.0, 100.0 * used / max(1, size_gb << 30)), 3)


class MetricOps(QemuCore):
    async def sample_metrics(self, object_ids: Sequence[str] | None = None) -> list[MetricSample]:
        wanted = None if object_ids is None else set(object_ids)
        stamp = datetime.now(timezone.utc)
        now = time.monotonic()
        samples: list[MetricSample] = []
        links = await self.namespace.links()
        for compute_id, vm in list(self._vms.items()):
            record = vm.record
            if (wanted is not None and compute_id not in wanted) or record.state not in (R.RUNNING.value,
                                                                                         R.PAUSED.value):
                continue
            if not vm.alive() or record.pid is None:
                continue
            cpu = cpu_seconds(record.pid)
            previous = self._cpu_prev.get(compute_id)
            utilisation = 0.0
            if cpu is not None:
                if previous is not None and previous[0] == record.pid and now > previous[1]:
                    utilisation = 100.0 * (cpu - previous[2]) / (now - previous[1]) / max(1, record.vcpus)
                self._cpu_prev[compute_id] = (record.pid, now, cpu)
            memory = rss_mb(record.pid) or 0.0
            epoch = record.epoch
            for metric, value in ((MetricName.CPU_UTILISATION, min(100.0, max(0.0, utilisation))),
                                  (MetricName.MEMORY_UTILISATION, min(100.0, 100.0 * memory / max(1, record.memory_mb))),
                                  (MetricName.DISK_UTILISATION, _used_share(vm.root_disk, record.disk_gb))):
                samples.append(MetricSample(_COMPUTE, compute_id, metric, round(value, 3), stamp, None, epoch))
            for port_id in record.ports:
                link = links.get(tap_name(port_id))
                port = self._state.ports.get(port_id)
                if link is None or port is None:
                    continue
                stats = link.get("stats64") or {}
                rx, tx = stats.get("rx") or {}, stats.get("tx") or {}
                for metric, value in ((MetricName.NET_RX_BYTES, tx.get("bytes", 0)),
                                      (MetricName.NET_TX_BYTES, rx.get("bytes", 0)),
                                      (MetricName.NET_RX_PACKETS, tx.get("packets", 0)),
                                      (MetricName.NET_TX_PACKETS, rx.get("packets", 0))):
                    samples.append(MetricSample(_COMPUTE, compute_id, metric, float(value), stamp, port_id,
                                                port.tap_epoch))
        for volume in self._state.volumes.values():
            if wanted is not None and volume.volume_id not in wanted:
                continue
            samples.append(MetricSample(ObjectType.STORAGE, volume.volume_id, MetricName.STORAGE_UTILISATION,
                                        _used_share(Path(volume.path), volume.size_gb), stamp))
        return samples
