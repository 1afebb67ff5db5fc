"""Simulator settings: seed, per-operation latency distributions, persistence directory."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

_Z99 = 2.3263478740408408  # the standard normal's 99th percentile


@dataclass(frozen=True, slots=True)
class LatencySpec:
    """A lognormal latency given by its median and 99th percentile, in milliseconds.

    Lognormal because real control-plane latencies are: a stable body and a long right tail.
    ``median_ms == 0`` means instantaneous; ``p99_ms <= median_ms`` means constant.
    """

    median_ms: float
    p99_ms: float

    def __post_init__(self) -> None:
        if self.median_ms < 0 or self.p99_ms < 0:
            raise ValueError("latencies must be >= 0")

    @property
    def sigma(self) -> float:
        if self.median_ms <= 0 or self.p99_ms <= self.median_ms:
            return 0.0
        return math.log(self.p99_ms / self.median_ms) / _Z99

    def sample(self, rng: random.Random, scale: float = 1.0) -> float:
        """One latency in seconds."""
        if self.median_ms <= 0 or scale <= 0:
            return 0.0
        sigma = self.sigma
        value = self.median_ms if sigma == 0 else self.median_ms * math.exp(sigma * rng.gauss(0.0, 1.0))
        return value * scale / 1000.0


ZERO = LatencySpec(0.0, 0.0)

#: Fast defaults (a few ms) that still keep the relative order of real backends: creating and
#: migrating computes is slower than plugging a port.
DEFAULT_LATENCIES: Mapping[str, LatencySpec] = {
    "create_compute": LatencySpec(5.0, 25.0),
    "delete_compute": LatencySpec(3.0, 12.0),
    "start_compute": LatencySpec(3.0, 12.0),
    "stop_compute": LatencySpec(3.0, 12.0),
    "reboot_compute": LatencySpec(4.0, 15.0),
    "resume_compute": LatencySpec(3.0, 12.0),
    "resize_compute": LatencySpec(5.0, 20.0),
    "migrate_compute": LatencySpec(10.0, 50.0),
    "snapshot_compute": LatencySpec(5.0, 25.0),
    "create_volume": LatencySpec(3.0, 15.0),
    "snapshot_volume": LatencySpec(3.0, 15.0),
}
DEFAULT_LATENCY = LatencySpec(1.0, 5.0)


@dataclass(frozen=True, slots=True)
class SimConfig:
    """How the simulator behaves.

    ``latencies`` override :data:`DEFAULT_LATENCIES` per operation (the driver method name);
    ``latency_scale`` multiplies them all (0 disables waiting, for tests). ``state_dir`` holds
    ``sim-state.json``; None keeps everything in memory. ``seed`` makes workload samples and
    latencies reproducible. ``event_queue`` bounds each event subscriber's backlog.
    """

    seed: int = 0
    latencies: Mapping[str, LatencySpec] = field(default_factory=dict)
    default_latency: LatencySpec = DEFAULT_LATENCY
    latency_scale: float = 1.0
    state_dir: Path | None = None
    event_queue: int = 10_000
    save_interval: float = 0.05       # seconds between state-file writes (see SimCore._save)

    def latency(self, operation: str) -> LatencySpec:
        return self.latencies.get(operation) or DEFAULT_LATENCIES.get(operation) or self.default_latency

    @classmethod
    def instant(cls, seed: int = 0, state_dir: Path | None = None) -> "SimConfig":
        """No waiting at all: for unit tests."""
        return cls(seed=seed, latency_scale=0.0, state_dir=state_dir)
