"""A per-compute workload model producing the samples a real guest would.

Determinism without shared random state: every draw comes from a generator seeded by
``(seed, object id, epoch, tick)`` — a counter-based scheme — so a compute's samples depend
only on the seed, its own history and the timestamps it is sampled at, never on how other
computes' operations interleave. Same seed + same operations at the same times → same samples.

The shapes are deliberately plausible rather than clever:

- CPU: a per-compute base load, a slow sinusoid (a daily-ish cycle compressed to minutes so that
  it shows in tests) and AR(1) noise; forced up by a CPU_LOAD fault;
- memory: climbs after boot as caches fill, towards a per-compute plateau;
- disk: a per-compute base fill growing slowly with uptime;
- NICs: byte rates proportional to CPU activity with lognormal jitter, packets derived from a
  per-compute mean packet size; cumulative counters that restart from zero on a new epoch
  (reboot, stop/start, resume, migration) and freeze while the link is down or the guest paused.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


def rng_for(seed: int, *parts: object) -> random.Random:
    """A generator for one draw site (string seeds are hashed with SHA-512: stable everywhere)."""
    return random.Random(":".join([str(seed), *map(str, parts)]))


@dataclass(frozen=True, slots=True)
class Profile:
    """The traits of one compute's workload, fixed by (seed, compute id)."""

    cpu_base: float
    cpu_amplitude: float
    cpu_period_s: float
    cpu_phase: float
    cpu_noise: float
    memory_plateau: float
    memory_warmup_s: float
    disk_base: float
    disk_growth_per_hour: float
    rx_bytes_per_s: float
    tx_ratio: float
    rx_packet_size: float
    tx_packet_size: float

    @classmethod
    def draw(cls, seed: int, compute_id: str) -> "Profile":
        rng = rng_for(seed, compute_id, "profile")
        return cls(
            cpu_base=rng.uniform(5.0, 55.0),
            cpu_amplitude=rng.uniform(2.0, 20.0),
            cpu_period_s=rng.uniform(300.0, 3600.0),
            cpu_phase=rng.uniform(0.0, 2 * math.pi),
            cpu_noise=rng.uniform(1.0, 6.0),
            memory_plateau=rng.uniform(30.0, 75.0),
            memory_warmup_s=rng.uniform(60.0, 600.0),
            disk_base=rng.uniform(8.0, 45.0),
            disk_growth_per_hour=rng.uniform(0.01, 0.5),
            rx_bytes_per_s=rng.lognormvariate(math.log(60_000.0), 1.0),
            tx_ratio=rng.uniform(0.3, 1.5),
            rx_packet_size=rng.uniform(200.0, 1400.0),
            tx_packet_size=rng.uniform(120.0, 1400.0),
        )


@dataclass(frozen=True, slots=True)
class ComputeSample:
    cpu: float
    memory: float
    disk: float
    ar_state: float


def _clamp(value: float, low: float = 0.0, high: float = 100.0) -> float:
    return low if value < low else high if value > high else value


def sample_compute(
    profile: Profile, seed: int, compute_id: str, epoch: int, tick: int, uptime_s: float,
    ar_state: float, paused: bool, cpu_load: float | None,
) -> ComputeSample:
    """CPU, memory and disk utilisation (%) of one compute at one tick."""
    return ComputeSample(*_compute_values(rng_for(seed, compute_id, epoch, tick), profile, uptime_s, ar_state,
                                          paused, cpu_load))


def compute_values(
    rng: random.Random, profile: Profile, seed: int, compute_id: str, epoch: int, tick: int, uptime_s: float,
    ar_state: float, paused: bool, cpu_load: float | None,
) -> tuple[float, float, float, float]:
    """:func:`sample_compute` as a plain tuple (cpu, memory, disk, AR state), drawing from ``rng``
    re-seeded for this draw site — the same numbers as a new generator (``Random.seed`` resets
    everything, ``gauss``' spare value included), without building one per compute and tick."""
    return values_from_deviates(compute_deviates(rng, seed, compute_id, epoch, tick), profile, uptime_s, ar_state,
                                paused, cpu_load)


def compute_deviates(rng: random.Random, seed: int, compute_id: str, epoch: int,
                     tick: int) -> tuple[float, float, float, float]:
    """The randomness of one compute sample: the first four standard normal deviates of its draw
    site. :func:`sample_compute` takes its normal draws in that order (the AR noise, then the
    CPU-load jitter when loaded, then memory, then disk; ``gauss`` makes them in pairs), so these
    and the sample's time-dependent inputs give exactly its values (:func:`values_from_deviates`)
    — which lets the simulator draw them before the sampling instant. They depend only on
    ``(seed, compute, epoch, tick)``."""
    rng.seed(f"{seed}:{compute_id}:{epoch}:{tick}")  # as rng_for(seed, compute_id, epoch, tick)
    gauss = rng.gauss
    return (gauss(0.0, 1.0), gauss(0.0, 1.0), gauss(0.0, 1.0), gauss(0.0, 1.0))


def values_from_deviates(
    deviates: tuple[float, float, float, float], profile: Profile, uptime_s: float, ar_state: float, paused: bool,
    cpu_load: float | None,
) -> tuple[float, float, float, float]:
    """:func:`_compute_values` with ``rng.gauss(mu, sigma)`` as ``mu + deviate * sigma``, what
    ``gauss`` computes from the same deviate: the same floating-point operations in the same
    order (``_clamp`` and ``max(0.0, x)`` written out), so the same values, for the simulator's
    per-tick loop over thousands of computes."""
    ar_state = 0.7 * ar_state + (0.0 + deviates[0] * profile.cpu_noise)
    cycle = profile.cpu_amplitude * _sin(_TWO_PI * uptime_s / profile.cpu_period_s + profile.cpu_phase)
    if paused:
        cpu = 0.0
    else:
        cpu = profile.cpu_base + cycle + ar_state
        cpu = 0.5 if cpu < 0.5 else 100.0 if cpu > 100.0 else cpu
    following = 1
    if cpu_load is not None and not paused:
        cpu = max(cpu, _clamp(cpu_load + (0.0 + deviates[1] * 1.5), 0.0, 100.0))
        following = 2
    warm = 1.0 - _exp(-(uptime_s if uptime_s > 0.0 else 0.0) / profile.memory_warmup_s)
    memory = 6.0 + (profile.memory_plateau - 6.0) * warm + (0.0 + deviates[following] * 0.8)
    memory = 1.0 if memory < 1.0 else 99.0 if memory > 99.0 else memory
    disk = profile.disk_base + profile.disk_growth_per_hour * uptime_s / 3600.0 + (0.0 + deviates[following + 1] * 0.05)
    disk = 0.1 if disk < 0.1 else 99.0 if disk > 99.0 else disk
    return (round(cpu, 3), round(memory, 3), round(disk, 3), ar_state)


_TWO_PI = 2 * math.pi  # what ``2 * math.pi * x`` computes first
_sin, _exp = math.sin, math.exp


def _compute_values(rng: random.Random, profile: Profile, uptime_s: float, ar_state: float, paused: bool,
                    cpu_load: float | None) -> tuple[float, float, float, float]:
    ar_state = 0.7 * ar_state + rng.gauss(0.0, profile.cpu_noise)
    cycle = profile.cpu_amplitude * math.sin(2 * math.pi * uptime_s / profile.cpu_period_s + profile.cpu_phase)
    cpu = 0.0 if paused else _clamp(profile.cpu_base + cycle + ar_state, 0.5, 100.0)
    if cpu_load is not None and not paused:
        cpu = max(cpu, _clamp(cpu_load + rng.gauss(0.0, 1.5), 0.0, 100.0))
    warm = 1.0 - math.exp(-max(0.0, uptime_s) / profile.memory_warmup_s)
    memory = _clamp(6.0 + (profile.memory_plateau - 6.0) * warm + rng.gauss(0.0, 0.8), 1.0, 99.0)
    disk = _clamp(profile.disk_base + profile.disk_growth_per_hour * uptime_s / 3600.0 + rng.gauss(0.0, 0.05),
                  0.1, 99.0)
    return (round(cpu, 3), round(memory, 3), round(disk, 3), ar_state)


def nic_increments(
    profile: Profile, seed: int, compute_id: str, port_id: str, epoch: int, tick: int, cpu: float, elapsed_s: float,
    rng: random.Random | None = None,
) -> tuple[int, int, int, int]:
    """(rx bytes, tx bytes, rx packets, tx packets) transferred by one NIC during ``elapsed_s``
    (``rng``: a generator to re-seed for the draw instead of a new one; same numbers)."""
    if elapsed_s <= 0:
        return (0, 0, 0, 0)
    if rng is not None:
        return nic_from_deviates(nic_deviates(rng, seed, compute_id, port_id, epoch, tick), profile, cpu, elapsed_s)
    rng = rng_for(seed, compute_id, port_id, epoch, tick)
    activity = 0.25 + cpu / 100.0
    rx = int(profile.rx_bytes_per_s * activity * rng.lognormvariate(0.0, 0.25) * elapsed_s)
    tx = int(profile.rx_bytes_per_s * profile.tx_ratio * activity * rng.lognormvariate(0.0, 0.25) * elapsed_s)
    rx_packets = math.ceil(rx / profile.rx_packet_size) if rx else 0
    tx_packets = math.ceil(tx / profile.tx_packet_size) if tx else 0
    return (rx, tx, rx_packets, tx_packets)


def nic_deviates(rng: random.Random, seed: int, compute_id: str, port_id: str, epoch: int,
                 tick: int) -> tuple[float, float]:
    """The randomness of one NIC sample: the two standard normal deviates behind its
    ``lognormvariate`` draws (as :func:`compute_deviates`)."""
    rng.seed(f"{seed}:{compute_id}:{port_id}:{epoch}:{tick}")  # as rng_for(seed, compute_id, port_id, epoch, tick)
    return (rng.normalvariate(0.0, 1.0), rng.normalvariate(0.0, 1.0))


def nic_from_deviates(deviates: tuple[float, float], profile: Profile, cpu: float,
                      elapsed_s: float) -> tuple[int, int, int, int]:
    """:func:`nic_increments` with ``rng.lognormvariate(0, 0.25)`` as ``exp(0 + deviate * 0.25)``."""
    if elapsed_s <= 0:
        return (0, 0, 0, 0)
    activity = 0.25 + cpu / 100.0
    rx = int(profile.rx_bytes_per_s * activity * math.exp(0.0 + deviates[0] * 0.25) * elapsed_s)
    tx = int(profile.rx_bytes_per_s * profile.tx_ratio * activity * math.exp(0.0 + deviates[1] * 0.25) * elapsed_s)
    rx_packets = math.ceil(rx / profile.rx_packet_size) if rx else 0
    tx_packets = math.ceil(tx / profile.tx_packet_size) if tx else 0
    return (rx, tx, rx_packets, tx_packets)


def volume_fill(seed: int, volume_id: str) -> float:
    """The initial share (%) of a new volume in use (a filesystem image, some data)."""
    return round(rng_for(seed, volume_id, "fill").uniform(2.0, 40.0), 3)


def volume_growth(seed: int, volume_id: str, tick: int, elapsed_s: float) -> float:
    """Percentage points a volume in use grows by during ``elapsed_s``."""
    if elapsed_s <= 0:
        return 0.0
    rate_per_hour = rng_for(seed, volume_id, "rate").uniform(0.05, 2.0)
    jitter = rng_for(seed, volume_id, tick).uniform(0.5, 1.5)
    return rate_per_hour * jitter * elapsed_s / 3600.0
