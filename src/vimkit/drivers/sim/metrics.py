"""Sampling the simulated workloads (see :mod:`vimkit.drivers.sim.workload`)."""

from __future__ import annotations

from collections.abc import Sequence

from vimkit.drivers.base import (
    FaultKind,
    MetricName,
    MetricSample,
    ObjectType,
)
from vimkit.drivers.sim.core import R, SimCore
from vimkit.drivers.sim.workload import nic_increments, sample_compute, volume_growth

_COMPUTE = ObjectType.COMPUTE
_GAUGES = (MetricName.CPU_UTILISATION, MetricName.MEMORY_UTILISATION, MetricName.DISK_UTILISATION)
_COUNTERS = (MetricName.NET_RX_BYTES, MetricName.NET_TX_BYTES, MetricName.NET_RX_PACKETS, MetricName.NET_TX_PACKETS)


class MetricOps(SimCore):
    # ------------------------------------------------------------------ metrics

    async def sample_metrics(self, object_ids: Sequence[str] | None = None) -> list[MetricSample]:
        """Sample running/paused computes on live hosts and volumes that have not failed."""
        wanted = None if object_ids is None else set(object_ids)
        now = self._now()
        stamp = self._ts(now)
        samples: list[MetricSample] = []
        append = samples.append
        seed = self.config.seed
        # The fault state is read once per call rather than once per object: the PM collector
        # samples every measured compute each tick, and per-object scans of the fault list made
        # a 10,000-compute tick cost most of a second.
        faults = list(self._state.faults.values())
        down_hosts = {f.target_id for f in faults if f.kind == FaultKind.HOST_DOWN.value}
        links_down = {f.target_id for f in faults if f.kind == FaultKind.NETWORK_LINK_DOWN.value}
        cpu_loads: dict[str, float] = {}
        for fault in faults:
            if fault.kind == FaultKind.CPU_LOAD.value:
                load = float(fault.params.get("load", 95.0))
                cpu_loads[fault.target_id] = max(load, cpu_loads.get(fault.target_id, load))
        ports = self._state.ports
        sampled = (R.RUNNING.value, R.PAUSED.value)
        computes = self._state.computes
        for compute in computes.values():
            compute_id = compute.compute_id
            if (wanted is not None and compute_id not in wanted) or compute.state not in sampled \
                    or compute.host_id in down_hosts:
                continue
            paused = compute.state == R.PAUSED.value
            profile = self._profile(compute_id)
            compute.tick += 1
            load = None
            if cpu_loads:
                loads = [cpu_loads[t] for t in (compute_id, compute.host_id) if t in cpu_loads]
                load = max(loads) if loads else None
            result = sample_compute(profile, seed, compute_id, compute.epoch, compute.tick,
                                    now - compute.booted_at, compute.ar_state, paused, load)
            compute.ar_state = result.ar_state
            elapsed = 0.0 if paused else now - (compute.last_sample_at if compute.last_sample_at is not None
                                                 else compute.booted_at)
            compute.last_sample_at = now
            epoch = compute.epoch
            for metric, value in zip(_GAUGES, (result.cpu, result.memory, result.disk)):
                append(MetricSample(_COMPUTE, compute_id, metric, value, stamp, None, epoch))
            for port_id in compute.ports:
                counters = compute.counters.setdefault(port_id, [0, 0, 0, 0])
                port = ports.get(port_id)
                if port is not None and (not links_down or self._link_up(port)):
                    increments = nic_increments(profile, seed, compute_id, port_id, epoch,
                                                compute.tick, result.cpu, elapsed)
                    for position, value in enumerate(increments):
                        counters[position] += value
                for metric, value in zip(_COUNTERS, counters):
                    append(MetricSample(_COMPUTE, compute_id, metric, float(value), stamp, port_id, epoch))
        running = {c.compute_id for c in computes.values()
                   if c.state == R.RUNNING.value and c.host_id not in down_hosts}
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
