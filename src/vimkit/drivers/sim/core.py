"""The simulator's shared machinery: state, latency, injected failures, derived fault state.

The operation mixins (:mod:`.compute`, :mod:`.network`, :mod:`.storage`, :mod:`.faults`,
:mod:`.metrics`) build on :class:`SimCore`; :class:`~vimkit.drivers.sim.driver.SimDriver` combines
them. Every operation sleeps its latency first (:meth:`SimCore._enter`) and then validates and
changes state without awaiting, so each is atomic with respect to the others on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from vimkit.drivers.base import (
    AttachmentInfo,
    ComputeInfo,
    DriverError,
    DriverErrorCode,
    DriverEvent,
    EventHub,
    EventKind,
    FaultKind,
    LinkState,
    NicInfo,
    ObjectType,
    PortInfo,
    RunningState,
    VolumeInfo,
    VolumeState,
)
from vimkit.drivers.sim.config import SimConfig
from vimkit.drivers.sim.state import (
    EncodedState,
    Record,
    SimCompute,
    SimFault,
    SimPort,
    SimState,
    SimVolume,
    StateEncoder,
    load_state,
    write_state,
)
from vimkit.drivers.sim.workload import Profile
from vimkit.infra.inventory import Inventory, default_inventory

R = RunningState
_ACTIVE = (R.RUNNING.value, R.PAUSED.value, R.STARTING.value, R.REBOOTING.value)
COMPUTE_OPERATIONS = frozenset(
    {"START", "STOP", "PAUSE", "UNPAUSE", "SUSPEND", "RESUME", "REBOOT", "CREATE_SNAPSHOT", "DELETE_SNAPSHOT"}
)

log = logging.getLogger("vimkit.sim")


@dataclass
class _Failure:
    """A pending failure made by :meth:`SimDriver.fail_next`."""

    operation: str
    target_id: str | None
    error: DriverError
    remaining: int


def _err(code: DriverErrorCode, message: str, retryable: bool = False) -> DriverError:
    return DriverError(code, message, retryable)


class SimCore:
    """State and helpers shared by the simulator's operations."""

    def __init__(self, inventory: Inventory | None = None, config: SimConfig | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config or SimConfig()
        self.inventory = inventory or default_inventory()
        self._clock = clock
        self._hosts = {h.hostId: h.zoneId for h in self.inventory.hosts}
        self._pools = {p.poolId: p for p in self.inventory.storagePools}
        self._latency_rng = random.Random(self.config.seed)
        self._hub = EventHub(self.config.event_queue)
        self._failures: list[_Failure] = []
        self._profiles: dict[str, Profile] = {}
        self._state = SimState()
        self._encoder = StateEncoder()
        self._dirty = False
        self._flush_handle: asyncio.TimerHandle | None = None
        self._writing: asyncio.Future[None] | None = None  # the file write in a worker thread
        self._last_save_seconds = 0.0  # encoding on the loop and writing in a thread, the last time
        if self.config.state_dir is not None:
            document = load_state(self.config.state_dir)
            if document is not None:
                self._state = SimState.from_document(document)

    def _now(self) -> float:
        return self._clock()

    def _ts(self, at: float | None = None) -> datetime:
        return datetime.fromtimestamp(self._now() if at is None else at, timezone.utc)

    def _save(self, *changed: Record) -> None:
        """Persist soon rather than now, the records ``changed`` (none named: everything, which is
        always correct). Writing the state after every operation made the file write cost
        O(computes) per call: changes within ``save_interval`` (or 25 times the last save's
        duration, when that is long) share one write, so a killed process loses at most that
        window of simulated changes; ``close`` writes at once."""
        if self.config.state_dir is None:
            return
        if changed:
            self._encoder.changed(changed)
        else:
            self._encoder.everything_changed()
        self._schedule_save()

    def _save_ids(self, collection: str, ids: Iterable[str]) -> None:
        """:meth:`_save` for many records of one collection by id (a metrics tick)."""
        self._changed_ids(collection, ids)
        self._schedule_save()

    def _changed_ids(self, collection: str, ids: Iterable[str]) -> None:
        """Name changed records without asking for a write: the next one, whoever asks, has them."""
        if self.config.state_dir is not None:
            self._encoder.changed_ids(collection, ids)

    def _schedule_save(self) -> None:
        if self.config.state_dir is None:
            return
        self._dirty = True
        if self._flush_handle is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._flush()
            return
        # The wait grows with a save's cost, so that saving takes at most 4 % of the time: the
        # encoding is small now, but the file is still written whole, in time and CPU O(records).
        delay = max(self.config.save_interval, 25 * self._last_save_seconds)
        self._flush_handle = loop.call_later(delay, self._flush_soon)

    def _flush_soon(self) -> None:
        """The timer's write: encoded on the loop (a consistent snapshot), written to the file by a
        worker thread, so the loop does not wait for the file system (several ms a write)."""
        self._flush_handle = None
        if not self._dirty or self.config.state_dir is None:
            return
        if self._writing is not None and not self._writing.done():
            self._schedule_save()  # one write at a time, in order: try again after the interval
            return
        self._dirty = False
        started = time.perf_counter()
        encoded = self._encoder.encode(self._state, self.config.seed)
        encoding = time.perf_counter() - started
        loop = asyncio.get_running_loop()
        self._writing = loop.run_in_executor(None, self._write_timed, encoded, encoding)
        self._writing.add_done_callback(self._written)

    def _write_timed(self, encoded: EncodedState, encoding: float) -> None:
        started = time.perf_counter()
        try:
            write_state(self.config.state_dir, encoded)  # type: ignore[arg-type]
        finally:
            self._last_save_seconds = encoding + time.perf_counter() - started

    def _written(self, writing: asyncio.Future[None]) -> None:
        if not writing.cancelled() and writing.exception() is not None:
            log.error("could not write the simulator's state", exc_info=writing.exception())
            self._dirty = True  # the encoder's pieces are current: the next write has it all

    def _flush(self) -> None:
        """Write now, on this thread (``close``, and calls outside an event loop)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._dirty or self.config.state_dir is None:
            return
        self._dirty = False
        write_state(self.config.state_dir, self._encoder.encode(self._state, self.config.seed))

    async def _enter(self, operation: str, *targets: str | None) -> None:
        """Wait the operation's latency, then fail it if a test asked for that."""
        delay = self.config.latency(operation).sample(self._latency_rng, self.config.latency_scale)
        if delay > 0:
            await asyncio.sleep(delay)
        for failure in self._failures:
            if failure.operation == operation and (failure.target_id is None or failure.target_id in targets):
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self._failures.remove(failure)
                raise failure.error

    def _emit(self, kind: EventKind, object_type: ObjectType, object_id: str, details: Mapping[str, Any],
              fault_id: str | None = None, cause: str | None = None) -> str:
        event_id = uuid.uuid4().hex
        self._hub.publish(DriverEvent(event_id, kind, object_type, object_id, self._ts(), dict(details),
                                      fault_id, cause))
        return event_id

    def fail_next(self, operation: str, *, target_id: str | None = None,
                  code: DriverErrorCode | str = DriverErrorCode.INTERNAL, message: str | None = None,
                  retryable: bool = False, count: int = 1) -> None:
        """Make the next ``count`` calls of ``operation`` (a method name such as
        ``create_compute`` or ``attach_volume``) fail — only those about ``target_id`` (an object
        id, or for ``create_compute`` / ``migrate_compute`` also a host id) when given.
        ``create_compute`` attaches the volumes in its spec as ``attach_volume`` does, so an
        ``attach_volume`` failure fails the creation that boots with that volume."""
        if not hasattr(self, operation) or operation.startswith("_"):
            raise ValueError(f"unknown operation {operation!r}")
        error = DriverError(code, message or f"injected failure of {operation}", retryable)
        self._failures.append(_Failure(operation, target_id, error, count))

    def clear_failures(self) -> None:
        self._failures.clear()

    # ------------------------------------------------------------------ derived fault state

    def _active(self, kind: FaultKind) -> list[SimFault]:
        return [f for f in self._state.faults.values() if f.kind == kind.value]

    def _host_down(self, host_id: str) -> bool:
        return any(f.target_id == host_id for f in self._active(FaultKind.HOST_DOWN))

    def _volume_failed(self, volume: SimVolume) -> bool:
        return any(f.target_id in (volume.volume_id, volume.pool_id) for f in self._active(FaultKind.STORAGE_FAILURE))

    def _pool_failed(self, pool_id: str) -> bool:
        return any(f.target_id == pool_id for f in self._active(FaultKind.STORAGE_FAILURE))

    def _link_up(self, port: SimPort) -> bool:
        covering = {port.port_id, port.network_id}
        if port.compute_id is not None and port.compute_id in self._state.computes:
            covering.add(self._state.computes[port.compute_id].host_id)
        return not any(f.target_id in covering for f in self._active(FaultKind.NETWORK_LINK_DOWN))

    def _cpu_load(self, compute: SimCompute) -> float | None:
        loads = [float(f.params.get("load", 95.0)) for f in self._active(FaultKind.CPU_LOAD)
                 if f.target_id in (compute.compute_id, compute.host_id)]
        return max(loads) if loads else None

    # ------------------------------------------------------------------ lookups

    def _compute(self, compute_id: str) -> SimCompute:
        compute = self._state.computes.get(compute_id)
        if compute is None:
            raise _err(DriverErrorCode.NOT_FOUND, f"compute {compute_id} does not exist")
        return compute

    def _reachable(self, compute: SimCompute) -> SimCompute:
        if self._host_down(compute.host_id):
            raise _err(DriverErrorCode.HOST_UNAVAILABLE,
                       f"host {compute.host_id} of compute {compute.compute_id} is down", retryable=True)
        return compute

    def _port(self, port_id: str) -> SimPort:
        port = self._state.ports.get(port_id)
        if port is None:
            raise _err(DriverErrorCode.NOT_FOUND, f"port {port_id} does not exist")
        return port

    def _volume(self, volume_id: str) -> SimVolume:
        volume = self._state.volumes.get(volume_id)
        if volume is None:
            raise _err(DriverErrorCode.NOT_FOUND, f"volume {volume_id} does not exist")
        return volume

    def _usable_volume(self, volume: SimVolume) -> SimVolume:
        if self._volume_failed(volume):
            raise _err(DriverErrorCode.BACKEND_UNAVAILABLE, f"volume {volume.volume_id} has failed", retryable=True)
        return volume

    def _profile(self, compute_id: str) -> Profile:
        profile = self._profiles.get(compute_id)
        if profile is None:
            profile = self._profiles[compute_id] = Profile.draw(self.config.seed, compute_id)
        return profile

    def _info(self, compute: SimCompute) -> ComputeInfo:
        nics = tuple(
            NicInfo(port_id, self._state.ports[port_id].device or "",
                    LinkState.UP if self._link_up(self._state.ports[port_id]) else LinkState.DOWN)
            for port_id in compute.ports if port_id in self._state.ports
        )
        attachments = tuple(AttachmentInfo(volume_id, compute.compute_id, device)
                            for volume_id, device in compute.volumes)
        return ComputeInfo(
            compute.compute_id, compute.host_id, RunningState(compute.state), compute.vcpus, compute.memory_mb,
            compute.disk_gb, nics, attachments, backend_ref=f"sim-{compute.compute_id}",
            details={"epoch": compute.epoch, "hostUp": not self._host_down(compute.host_id)},
        )

    def _volume_info(self, volume: SimVolume) -> VolumeInfo:
        if self._volume_failed(volume):
            state = VolumeState.FAILED
        else:
            state = VolumeState.IN_USE if volume.attachments else VolumeState.AVAILABLE
        return VolumeInfo(volume.volume_id, volume.pool_id, volume.size_gb, state,
                          tuple(AttachmentInfo(volume.volume_id, c, d) for c, d in volume.attachments),
                          backend_ref=f"sim-{volume.volume_id}")

    def _port_info(self, port: SimPort) -> PortInfo:
        return PortInfo(port.port_id, port.network_id, port.mac_address, port.compute_id,
                        LinkState.UP if self._link_up(port) else LinkState.DOWN, backend_ref=f"sim-{port.port_id}")

    def _reboot(self, compute: SimCompute, state: RunningState = R.RUNNING) -> None:
        """A new guest process: counters restart, the workload warms up again."""
        compute.state = state.value
        compute.epoch += 1
        compute.booted_at = self._now()
        compute.tick = 0
        compute.ar_state = 0.0
        compute.last_sample_at = None
        compute.counters = {port_id: [0, 0, 0, 0] for port_id in compute.ports}

    def _transition(self, compute: SimCompute, allowed: Iterable[RunningState], operation: str) -> None:
        if compute.state not in {s.value for s in allowed}:
            raise _err(DriverErrorCode.CONFLICT,
                       f"cannot {operation} compute {compute.compute_id} in state {compute.state}")

    def _attach(self, volume: SimVolume, compute: SimCompute) -> str:
        used = {device for _volume, device in compute.volumes}
        device = next(f"/dev/vd{c}" for c in "bcdefghijklmnopqrstuvwxyz" if f"/dev/vd{c}" not in used)
        compute.volumes.append([volume.volume_id, device])
        volume.attachments.append([compute.compute_id, device])
        return device
