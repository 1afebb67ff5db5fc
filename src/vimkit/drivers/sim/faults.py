"""Fault injection: HOST_DOWN, COMPUTE_CRASH, STORAGE_FAILURE, NETWORK_LINK_DOWN, CPU_LOAD.

A fault's effects derive from the set of active faults (:class:`SimCore` answers "is this host
down", "is this link up" from it), so overlapping faults and repairs in any order stay consistent;
what a fault *did* to a compute (CRASHED) is stored, as a real VM's state would be.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from vimkit.drivers.base import (
    DriverErrorCode,
    EventKind,
    FaultInfo,
    FaultKind,
    ObjectType,
)
from vimkit.drivers.sim.core import _ACTIVE, R, SimCore, _err
from vimkit.drivers.sim.state import (
    SimCompute,
    SimFault,
    SimPort,
    SimVolume,
)


class FaultOps(SimCore):
    # ------------------------------------------------------------------ fault injection

    def faults(self) -> list[FaultInfo]:
        return [FaultInfo(f.fault_id, FaultKind(f.kind), f.target_id, dict(f.params), self._ts(f.created_at))
                for f in self._state.faults.values()]

    def _check_target(self, kind: FaultKind, target_id: str) -> None:
        state = self._state
        valid = {
            FaultKind.HOST_DOWN: target_id in self._hosts,
            FaultKind.COMPUTE_CRASH: target_id in state.computes,
            FaultKind.STORAGE_FAILURE: target_id in self._pools or target_id in state.volumes,
            FaultKind.NETWORK_LINK_DOWN: (target_id in state.ports or target_id in state.networks
                                          or target_id in self._hosts),
            FaultKind.CPU_LOAD: target_id in state.computes or target_id in self._hosts,
        }[kind]
        if not valid:
            raise _err(DriverErrorCode.NOT_FOUND, f"no target {target_id} for a {kind.value} fault")

    def _ports_under(self, target_id: str) -> list[SimPort]:
        computes = self._state.computes
        def on_host(port: SimPort) -> bool:
            compute = computes.get(port.compute_id or "")
            return compute is not None and compute.host_id == target_id

        return [p for p in self._state.ports.values() if target_id in (p.port_id, p.network_id) or on_host(p)]

    def _volumes_under(self, target_id: str) -> list[SimVolume]:
        return [v for v in self._state.volumes.values() if target_id in (v.volume_id, v.pool_id)]

    async def inject(self, kind: FaultKind | str, target_id: str, params: Mapping[str, Any] | None = None) -> str:
        """Start a fault; its effects and events happen now. Returns the fault id for :meth:`repair`."""
        kind = FaultKind(kind)
        params = dict(params or {})
        self._check_target(kind, target_id)
        if kind is FaultKind.CPU_LOAD:
            load = params.setdefault("load", 95.0)
            if not isinstance(load, (int, float)) or not 0 <= load <= 100:
                raise _err(DriverErrorCode.INVALID_INPUT, "CPU_LOAD needs a load between 0 and 100")
        fault = SimFault(uuid.uuid4().hex, kind.value, target_id, params, self._now())
        crashed: list[SimCompute] = []
        # Effects are computed against the state *before* the fault is active, to emit events
        # only for what actually changes.
        if kind is FaultKind.HOST_DOWN:
            was_up = not self._host_down(target_id)
            self._state.faults[fault.fault_id] = fault
            if was_up:
                root = self._emit(EventKind.HOST_DOWN, ObjectType.HOST, target_id, {"reason": "injected"},
                                  fault.fault_id)
                fault.root_event_id = root
                for compute in self._state.computes.values():
                    if compute.host_id == target_id and compute.state in _ACTIVE:
                        compute.state = R.CRASHED.value
                        crashed.append(compute)
                        self._emit(EventKind.COMPUTE_CRASHED, ObjectType.COMPUTE, compute.compute_id,
                                   {"reason": f"host {target_id} is down", "hostId": target_id,
                                    "runningState": R.CRASHED.value}, fault.fault_id, root)
        elif kind is FaultKind.COMPUTE_CRASH:
            self._state.faults[fault.fault_id] = fault
            compute = self._state.computes[target_id]
            if compute.state != R.CRASHED.value:
                compute.state = R.CRASHED.value
                crashed.append(compute)
                fault.root_event_id = self._emit(EventKind.COMPUTE_CRASHED, ObjectType.COMPUTE, target_id,
                                                 {"reason": params.get("reason", "guest crashed"),
                                                  "hostId": compute.host_id, "runningState": R.CRASHED.value},
                                                 fault.fault_id)
        elif kind is FaultKind.STORAGE_FAILURE:
            healthy = [v for v in self._volumes_under(target_id) if not self._volume_failed(v)]
            self._state.faults[fault.fault_id] = fault
            root = None
            if target_id in self._pools:
                root = self._emit(EventKind.VOLUME_FAILED, ObjectType.STORAGE_POOL, target_id,
                                  {"reason": "storage pool failed"}, fault.fault_id)
                fault.root_event_id = root
            for volume in healthy:
                event = self._emit(EventKind.VOLUME_FAILED, ObjectType.STORAGE, volume.volume_id,
                                   {"reason": "storage failure", "poolId": volume.pool_id,
                                    "attachedTo": [c for c, _ in volume.attachments]}, fault.fault_id, root)
                fault.root_event_id = fault.root_event_id or event
        elif kind is FaultKind.NETWORK_LINK_DOWN:
            up_before = [p for p in self._ports_under(target_id) if self._link_up(p)]
            self._state.faults[fault.fault_id] = fault
            root = None
            if target_id not in self._state.ports:
                object_type = ObjectType.HOST if target_id in self._hosts else ObjectType.NETWORK
                root = self._emit(EventKind.LINK_DOWN, object_type, target_id, {"reason": "link down"}, fault.fault_id)
                fault.root_event_id = root
            for port in up_before:
                event = self._emit(EventKind.LINK_DOWN, ObjectType.PORT, port.port_id,
                                   {"networkId": port.network_id, "computeId": port.compute_id}, fault.fault_id, root)
                fault.root_event_id = fault.root_event_id or event
        else:
            self._state.faults[fault.fault_id] = fault
        self._save(fault, *crashed)
        return fault.fault_id

    async def repair(self, fault_id: str) -> None:
        """End a fault. What it broke recovers (links, volumes, the host), except that computes it
        crashed stay CRASHED — a COMPUTE_CRASH repair restarts its compute, as an operator would."""
        fault = self._state.faults.get(fault_id)
        if fault is None:
            raise _err(DriverErrorCode.NOT_FOUND, f"fault {fault_id} does not exist")
        kind = FaultKind(fault.kind)
        target_id = fault.target_id
        restarted: list[SimCompute] = []
        if kind is FaultKind.HOST_DOWN:
            del self._state.faults[fault_id]
            if not self._host_down(target_id):
                self._emit(EventKind.HOST_UP, ObjectType.HOST, target_id, {"reason": "repaired"}, fault_id)
        elif kind is FaultKind.COMPUTE_CRASH:
            del self._state.faults[fault_id]
            compute = self._state.computes.get(target_id)
            if compute is not None and compute.state == R.CRASHED.value and not self._host_down(compute.host_id):
                self._reboot(compute)
                restarted.append(compute)
                self._emit(EventKind.COMPUTE_STATE, ObjectType.COMPUTE, target_id,
                           {"reason": "restarted after repair", "runningState": R.RUNNING.value}, fault_id)
        elif kind is FaultKind.STORAGE_FAILURE:
            failed = [v for v in self._volumes_under(target_id) if self._volume_failed(v)]
            del self._state.faults[fault_id]
            for volume in failed:
                if not self._volume_failed(volume):
                    self._emit(EventKind.VOLUME_RECOVERED, ObjectType.STORAGE, volume.volume_id,
                               {"poolId": volume.pool_id}, fault_id)
            if target_id in self._pools and not self._pool_failed(target_id):
                self._emit(EventKind.VOLUME_RECOVERED, ObjectType.STORAGE_POOL, target_id, {}, fault_id)
        elif kind is FaultKind.NETWORK_LINK_DOWN:
            down = [p for p in self._ports_under(target_id) if not self._link_up(p)]
            del self._state.faults[fault_id]
            if target_id not in self._state.ports:
                object_type = ObjectType.HOST if target_id in self._hosts else ObjectType.NETWORK
                self._emit(EventKind.LINK_UP, object_type, target_id, {}, fault_id)
            for port in down:
                if self._link_up(port):
                    self._emit(EventKind.LINK_UP, ObjectType.PORT, port.port_id,
                               {"networkId": port.network_id, "computeId": port.compute_id}, fault_id)
        else:
            del self._state.faults[fault_id]
        self._save(fault, *restarted)
