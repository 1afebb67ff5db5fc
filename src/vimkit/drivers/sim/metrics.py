"""Sampling the simulated workloads (see :mod:`vimkit.drivers.sim.workload`)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

from vimkit.drivers.base import (
    FaultKind,
    MetricColumn,
    MetricName,
    MetricSample,
    ObjectType,
)
from vimkit.drivers.sim.core import R, SimCore
from vimkit.drivers.sim.state import SimCompute
from vimkit.drivers.sim.workload import (
    compute_deviates,
    nic_deviates,
    nic_from_deviates,
    nic_increments,
    sample_compute,
    values_from_deviates,
    volume_growth,
)

# Drawing the next sample's random deviates ahead (see sample_metrics_columns): in chunks of this
# many computes between which the event loop serves other work, starting at most this long (and
# at most half the last sampling interval) after a sample.
_DRAW_CHUNK = 250
_DRAW_DELAY_S = 2.5

# compute id -> (epoch, tick, compute deviates, ((port id, NIC deviates), …)) of its next sample
Prepared = dict[str, tuple[int, int, tuple[float, float, float, float], tuple[tuple[str, tuple[float, float]], ...]]]

_COMPUTE = ObjectType.COMPUTE
_GAUGES = (MetricName.CPU_UTILISATION, MetricName.MEMORY_UTILISATION, MetricName.DISK_UTILISATION)
_COUNTERS = (MetricName.NET_RX_BYTES, MetricName.NET_TX_BYTES, MetricName.NET_RX_PACKETS, MetricName.NET_TX_PACKETS)


class MetricOps(SimCore):
    # ------------------------------------------------------------------ metrics

    def _sampling_faults(self) -> tuple[set[str], set[str], dict[str, float]]:
        """Hosts down, link-down targets and CPU loads by target. The fault state is read once per
        call rather than once per object: the PM collector samples every measured compute each
        tick, and per-object scans of the fault list made a 10,000-compute tick cost most of a second."""
        faults = list(self._state.faults.values())
        down_hosts = {f.target_id for f in faults if f.kind == FaultKind.HOST_DOWN.value}
        links_down = {f.target_id for f in faults if f.kind == FaultKind.NETWORK_LINK_DOWN.value}
        cpu_loads: dict[str, float] = {}
        for fault in faults:
            if fault.kind == FaultKind.CPU_LOAD.value:
                load = float(fault.params.get("load", 95.0))
                cpu_loads[fault.target_id] = max(load, cpu_loads.get(fault.target_id, load))
        return down_hosts, links_down, cpu_loads

    async def sample_metrics_columns(self, object_ids: Sequence[str] | None = None) -> list[MetricColumn]:
        """:meth:`sample_metrics` in columns (``ColumnarSampler``): the same model, the same state
        changes and the same values, one column per metric (tests/unit/test_pm_sampling.py holds
        the two forms equal). For the PM collector measuring thousands of computes:

        - no object per value, and one generator re-seeded per draw site instead of a new one;
        - the random part of each compute's *next* sample — its normal deviates, which depend only
          on (seed, compute, epoch, tick) — is drawn after this call returns, in small chunks on
          the event loop, once the collector has had this sample's results (``_prepare_draws``).
          At the next sampling instant only the time-dependent arithmetic is left; a compute whose
          epoch or tick no longer matches (rebooted, sampled elsewhere in between) is drawn then.
          Seeding a Mersenne Twister twice per compute is most of a sample's cost, and it says
          nothing about the instant.
        - the state file is written after that preparation rather than in the middle of the
          collector's work on this sample.
        """
        wanted = None if object_ids is None else set(object_ids)
        task = self.__dict__.get("_draw_task")
        if task is not None:
            task.cancel()
        prepared: Prepared = self.__dict__.get("_prepared") or {}
        self._prepared: Prepared = {}
        now = self._now()
        previous_at = self.__dict__.get("_columns_sampled_at")
        self._columns_sampled_at = now
        stamp = self._ts(now)
        seed = self.config.seed
        down_hosts, links_down, cpu_loads = self._sampling_faults()
        ports = self._state.ports
        profiles = self._profiles
        running, paused_state = R.RUNNING.value, R.PAUSED.value
        rng = random.Random()
        gauge_ids: list[str] = []
        gauge_epochs: list[int] = []
        cpus: list[float] = []
        memories: list[float] = []
        disks: list[float] = []
        nic_ids: list[str] = []
        nic_subs: list[str | None] = []
        nic_epochs: list[int] = []
        counter_columns: tuple[list[float], list[float], list[float], list[float]] = ([], [], [], [])
        rx_bytes, tx_bytes, rx_packets, tx_packets = counter_columns
        computes = self._state.computes
        for compute in computes.values():
            compute_id = compute.compute_id
            state = compute.state
            if (wanted is not None and compute_id not in wanted) or (state != running and state != paused_state) \
                    or compute.host_id in down_hosts:
                continue
            paused = state == paused_state
            profile = profiles.get(compute_id) or self._profile(compute_id)
            compute.tick = tick = compute.tick + 1
            load = None
            if cpu_loads:
                loads = [cpu_loads[t] for t in (compute_id, compute.host_id) if t in cpu_loads]
                load = max(loads) if loads else None
            epoch = compute.epoch
            ready = prepared.get(compute_id)
            if ready is not None and ready[0] == epoch and ready[1] == tick:
                deviates, nic_ready = ready[2], ready[3]
            else:
                deviates, nic_ready = compute_deviates(rng, seed, compute_id, epoch, tick), ()
            cpu, memory, disk, compute.ar_state = values_from_deviates(
                deviates, profile, now - compute.booted_at, compute.ar_state, paused, load)
            last = compute.last_sample_at
            elapsed = 0.0 if paused else now - (last if last is not None else compute.booted_at)
            compute.last_sample_at = now
            gauge_ids.append(compute_id)
            gauge_epochs.append(epoch)
            cpus.append(cpu)
            memories.append(memory)
            disks.append(disk)
            for port_id in compute.ports:
                counters = compute.counters.get(port_id)
                if counters is None:
                    counters = compute.counters[port_id] = [0, 0, 0, 0]
                port = ports.get(port_id)
                if elapsed > 0 and port is not None and (not links_down or self._link_up(port)):
                    nic = None
                    for ready_port, ready_deviates in nic_ready:
                        if ready_port == port_id:
                            nic = ready_deviates
                    if nic is None:
                        nic = nic_deviates(rng, seed, compute_id, port_id, epoch, tick)
                    rx, tx, rx_p, tx_p = nic_from_deviates(nic, profile, cpu, elapsed)
                    counters[0] += rx
                    counters[1] += tx
                    counters[2] += rx_p
                    counters[3] += tx_p
                nic_ids.append(compute_id)
                nic_subs.append(port_id)
                nic_epochs.append(epoch)
                rx_bytes.append(float(counters[0]))
                tx_bytes.append(float(counters[1]))
                rx_packets.append(float(counters[2]))
                tx_packets.append(float(counters[3]))
        columns: list[MetricColumn] = []
        if gauge_ids:
            epochs = gauge_epochs if any(gauge_epochs) else None
            columns += [MetricColumn(_COMPUTE, metric, stamp, gauge_ids, values, None, epochs)
                        for metric, values in zip(_GAUGES, (cpus, memories, disks))]
        if nic_ids:
            epochs = nic_epochs if any(nic_epochs) else None
            columns += [MetricColumn(_COMPUTE, metric, stamp, nic_ids, values, nic_subs, epochs)
                        for metric, values in zip(_COUNTERS, counter_columns)]
        volume_ids: list[str] = []
        used: list[float] = []
        volumes = self._state.volumes
        live = {c.compute_id for c in computes.values() if c.state == running and c.host_id not in down_hosts} \
            if volumes else set()
        for volume in volumes.values():
            if (wanted is not None and volume.volume_id not in wanted) or self._volume_failed(volume):
                continue
            volume.tick += 1
            if volume.last_sample_at is not None and any(c in live for c, _ in volume.attachments):
                volume.used_pct = round(min(99.5, volume.used_pct + volume_growth(
                    seed, volume.volume_id, volume.tick, now - volume.last_sample_at)), 3)
            volume.last_sample_at = now
            volume_ids.append(volume.volume_id)
            used.append(volume.used_pct)
        if volume_ids:
            columns.append(MetricColumn(ObjectType.STORAGE, MetricName.STORAGE_UTILISATION, stamp, volume_ids, used))
        self._changed_ids("computes", gauge_ids)
        self._changed_ids("volumes", volume_ids)
        delay = _DRAW_DELAY_S if previous_at is None else max(0.0, min(_DRAW_DELAY_S, (now - previous_at) / 2))
        self._draw_task = asyncio.get_running_loop().create_task(self._prepare_draws(gauge_ids, delay),
                                                                 name="vimkit-sim-prepare-draws")
        return columns

    async def _prepare_draws(self, compute_ids: list[str], delay: float) -> None:
        """Draw the deviates of the next sample of ``compute_ids`` (see sample_metrics_columns),
        then save the state the sample changed."""
        try:
            await asyncio.sleep(delay)
            rng = random.Random()
            seed = self.config.seed
            computes = self._state.computes
            prepared = self._prepared
            for start in range(0, len(compute_ids), _DRAW_CHUNK):
                for compute_id in compute_ids[start:start + _DRAW_CHUNK]:
                    compute: SimCompute | None = computes.get(compute_id)
                    if compute is None:
                        continue
                    epoch, tick = compute.epoch, compute.tick + 1
                    prepared[compute_id] = (
                        epoch, tick, compute_deviates(rng, seed, compute_id, epoch, tick),
                        tuple((port_id, nic_deviates(rng, seed, compute_id, port_id, epoch, tick))
                              for port_id in compute.ports))
                await asyncio.sleep(0)
        finally:
            self._schedule_save()

    async def sample_metrics(self, object_ids: Sequence[str] | None = None) -> list[MetricSample]:
        """Sample running/paused computes on live hosts and volumes that have not failed."""
        wanted = None if object_ids is None else set(object_ids)
        now = self._now()
        stamp = self._ts(now)
        samples: list[MetricSample] = []
        append = samples.append
        seed = self.config.seed
        down_hosts, links_down, cpu_loads = self._sampling_faults()
        ports = self._state.ports
        sampled = (R.RUNNING.value, R.PAUSED.value)
        sampled_computes: list[str] = []
        sampled_volumes: list[str] = []
        computes = self._state.computes
        for compute in computes.values():
            compute_id = compute.compute_id
            if (wanted is not None and compute_id not in wanted) or compute.state not in sampled \
                    or compute.host_id in down_hosts:
                continue
            paused = compute.state == R.PAUSED.value
            profile = self._profile(compute_id)
            sampled_computes.append(compute_id)
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
            sampled_volumes.append(volume.volume_id)
            samples.append(MetricSample(ObjectType.STORAGE, volume.volume_id, MetricName.STORAGE_UTILISATION,
                                        volume.used_pct, stamp))
        self._save_ids("computes", sampled_computes)
        self._save_ids("volumes", sampled_volumes)
        return samples
