"""Sampling the simulated workloads (see :mod:`vimkit.drivers.sim.workload`)."""

from __future__ import annotations

from collections.abc import Sequence

from vimkit.drivers.base import (
    MetricName,
    MetricSample,
    ObjectType,
)
from vimkit.drivers.sim.core import R, SimCore
from vimkit.drivers.sim.workload import nic_increments, sample_compute, volume_growth


class MetricOps(SimCore):
    # ------------------------------------------------------------------ metrics

    async def sample_metrics(self, object_ids: Sequence[str] | None = None) -> list[MetricSample]:
        """Sample running/paused computes on live hosts and volumes that have not failed."""
        wanted = None if object_ids is None else set(object_ids)
        now = self._now()
        stamp = self._ts(now)
        samples: list[MetricSample] = []
        seed = self.config.seed
        for compute in self._state.computes.values():
            if wanted is not None and compute.compute_id not in wanted:
                continue
            if compute.state not in (R.RUNNING.value, R.PAUSED.value) or self._host_down(compute.host_id):
                continue
            paused = compute.state == R.PAUSED.value
            profile = self._profile(compute.compute_id)
            compute.tick += 1
            result = sample_compute(profile, seed, compute.compute_id, compute.epoch, compute.tick,
                                    now - compute.booted_at, compute.ar_state, paused, self._cpu_load(compute))
            compute.ar_state = result.ar_state
            elapsed = 0.0 if paused else now - (compute.last_sample_at if compute.last_sample_at is not None
                                                 else compute.booted_at)
            compute.last_sample_at = now
            base = (ObjectType.COMPUTE, compute.compute_id)
            for metric, value in ((MetricName.CPU_UTILISATION, result.cpu),
                                  (MetricName.MEMORY_UTILISATION, result.memory),
                                  (MetricName.DISK_UTILISATION, result.disk)):
                samples.append(MetricSample(*base, metric, value, stamp, None, compute.epoch))
            for port_id in compute.ports:
                counters = compute.counters.setdefault(port_id, [0, 0, 0, 0])
                port = self._state.ports.get(port_id)
                if port is not None and self._link_up(port):
                    increments = nic_increments(profile, seed, compute.compute_id, port_id, compute.epoch,
                                                compute.tick, result.cpu, elapsed)
                    for position, value in enumerate(increments):
                        counters[position] += value
                for metric, value in zip((MetricName.NET_RX_BYTES, MetricName.NET_TX_BYTES,
                                          MetricName.NET_RX_PACKETS, MetricName.NET_TX_PACKETS), counters):
                    samples.append(MetricSample(*base, metric, float(value), stamp, port_id, compute.epoch))
        running = {c.compute_id for c in self._state.computes.values()
                   if c.state == R.RUNNING.value and not self._host_down(c.host_id)}
        for volume in self._state.volumes.values():
            if (wanted is not None and volume.volume_id not in wanted) or self._volume_failed(volume):
                continue
            volume.tick += 1
            if volume.last_sample_at is not None and any(c in running for c, _ in volume.attachments):
                volume.used_pct = round(min(99.5, volume.used_pct + volume_growth(
                    seed, volume.volume_id, volume.tick, now - volume.last_sample_at)), 3)
            volume.last_sample_at = now
            samples.append(MetricSample(ObjectType.STORAGE, volume.volume_id, MetricName.STORAGE_UTILISATION,
                                        volume.used_pct, stamp))
        self._save()
        return samples
