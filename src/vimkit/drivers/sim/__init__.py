"""The simulated infrastructure backend (the embedded default driver)."""

from vimkit.drivers.sim.config import DEFAULT_LATENCIES, DEFAULT_LATENCY, LatencySpec, SimConfig
from vimkit.drivers.sim.core import COMPUTE_OPERATIONS
from vimkit.drivers.sim.driver import SimDriver
from vimkit.drivers.sim.state import STATE_FILE

__all__ = [
    "COMPUTE_OPERATIONS",
    "DEFAULT_LATENCIES",
    "DEFAULT_LATENCY",
    "STATE_FILE",
    "LatencySpec",
    "SimConfig",
    "SimDriver",
]
