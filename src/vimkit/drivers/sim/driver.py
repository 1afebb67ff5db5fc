"""The simulated backend: the embedded default driver.

It behaves like a small real cloud seen through the driver protocol — operations take time
(lognormal latencies per operation), computes have a running state machine, NICs and volumes are
plugged into them, workloads produce metrics — and it can be broken on purpose:

- :meth:`SimDriver.inject` / :meth:`SimDriver.repair` for the admin API's fault injection
  (HOST_DOWN, COMPUTE_CRASH, STORAGE_FAILURE, NETWORK_LINK_DOWN, CPU_LOAD);
- :meth:`SimDriver.fail_next` for tests: make the next call(s) of an operation fail with a
  chosen :class:`DriverError`, optionally only for one host or object.

Fault effects are derived from the active faults rather than copied into objects (a port's link
is down while any fault covers the port, its network or its compute's host), so overlapping
faults and repairs in any order stay consistent. What a fault *did* is stored: a compute that
crashed stays CRASHED after its host comes back, as a real VM would, until the VIM starts it.

Every call sleeps its latency first and then validates and changes state without awaiting, so
each operation is atomic with respect to the others on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from vimkit.drivers.base import (
    Capabilities,
    DriverEvent,
    MetricName,
)
from vimkit.drivers.sim.compute import ComputeOps
from vimkit.drivers.sim.core import COMPUTE_OPERATIONS
from vimkit.drivers.sim.faults import FaultOps
from vimkit.drivers.sim.metrics import MetricOps
from vimkit.drivers.sim.network import NetworkOps
from vimkit.drivers.sim.storage import StorageOps


class SimDriver(ComputeOps, NetworkOps, StorageOps, MetricOps, FaultOps):
    """Simulated infrastructure for the hosts and pools of an inventory:
    ``SimDriver(inventory, SimConfig(...), clock=time.time)``."""

    name = "sim"

    def capabilities(self) -> Capabilities:
        return Capabilities(
            name=self.name,
            compute_operations=COMPUTE_OPERATIONS,
            network_types=frozenset({"vlan", "vxlan", "flat"}),
            live_migration=True,
            cold_migration=True,
            online_resize=True,
            volume_online_extend=True,
            volume_snapshots=True,
            multi_attach=True,
            metrics=frozenset(MetricName),
            fault_injection=True,
            schedules_itself=False,
            persistent=self.config.state_dir is not None,
        )

    async def start(self) -> None:
        """Nothing to connect to: the state was restored when the driver was built."""

    async def close(self) -> None:
        draws = getattr(self, "_draw_task", None)  # the next sample's deviates (metrics.py)
        if draws is not None and not draws.done():
            draws.cancel()
            await asyncio.gather(draws, return_exceptions=True)
        if self._writing is not None:  # a timer's write still in a worker thread lands first
            await asyncio.gather(self._writing, return_exceptions=True)
        self._dirty = True
        self._flush()
        self._hub.close()

    def events(self) -> AsyncIterator[DriverEvent]:
        return self._hub.subscribe()
