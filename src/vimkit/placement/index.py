"""A capacity index: hosts ordered by free-capacity score, in blocks that know their maxima.

Why not a heap: a decision needs the best host that *fits in every dimension* (vCPU, memory,
disk), not merely the top score, and PACK needs the smallest fitting score. Both are a scan in
score order that stops at the first host that fits; what makes the scan cheap is skipping whole
blocks whose per-dimension maximum free capacity is below the request. With blocks of at most
``2 * BLOCK`` hosts a decision inspects O(n / BLOCK) block summaries in the worst case (a nearly
full bucket) and usually one or two hosts; an update is O(log n + BLOCK) with a small constant,
because each block keeps its free amounts in plain int lists that ``max`` walks in C.

Keys are integers ``(score << HOST_BITS) | host_number`` so that ordering is total
(deterministic tie-break by host number) and comparisons stay integer comparisons; the engine
decides what the score is (a weighted free-capacity sum, or one resource's free amount).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Protocol

BLOCK = 48
HOST_BITS = 20
MAX_HOSTS = 1 << HOST_BITS


class Slot(Protocol):
    """The per-host fields the index reads (the engine's host record provides them)."""

    no: int
    free_v: int
    free_m: int
    free_d: int


class SortedHosts:
    """Hosts sorted by ``key`` in blocks; per block the keys, hosts and free vCPU / memory /
    disk as parallel lists, plus the block's last key and per-dimension maxima."""

    __slots__ = ("keys", "hosts", "fv", "fm", "fd", "lasts", "max_v", "max_m", "max_d")

    def __init__(self) -> None:
        self.keys: list[list[int]] = []
        self.hosts: list[list[Slot]] = []
        self.fv: list[list[int]] = []
        self.fm: list[list[int]] = []
        self.fd: list[list[int]] = []
        self.lasts: list[int] = []
        self.max_v: list[int] = []
        self.max_m: list[int] = []
        self.max_d: list[int] = []

    def __len__(self) -> int:
        return sum(len(block) for block in self.keys)

    def __bool__(self) -> bool:
        return bool(self.keys)

    def _append_block(self, keys: list[int], hosts: list[Slot]) -> None:
        fv = [h.free_v for h in hosts]
        fm = [h.free_m for h in hosts]
        fd = [h.free_d for h in hosts]
        self.keys.append(keys)
        self.hosts.append(hosts)
        self.fv.append(fv)
        self.fm.append(fm)
        self.fd.append(fd)
        self.lasts.append(keys[-1])
        self.max_v.append(max(fv))
        self.max_m.append(max(fm))
        self.max_d.append(max(fd))

    def build(self, entries: list[tuple[int, Slot]]) -> None:
        """Bulk-load ``(key, host)`` pairs (at start): sort once, cut into full blocks."""
        for name in self.__slots__:
            setattr(self, name, [])
        ordered = sorted(entries, key=lambda entry: entry[0])
        for start in range(0, len(ordered), BLOCK):
            chunk = ordered[start:start + BLOCK]
            self._append_block([key for key, _ in chunk], [host for _, host in chunk])

    def insert(self, host: Slot, key: int) -> None:
        if not self.keys:
            self._append_block([key], [host])
            return
        lasts = self.lasts
        i = bisect_left(lasts, key)
        if i == len(lasts):
            i -= 1
        keys = self.keys[i]
        pos = bisect_left(keys, key)
        keys.insert(pos, key)
        self.hosts[i].insert(pos, host)
        free_v, free_m, free_d = host.free_v, host.free_m, host.free_d
        self.fv[i].insert(pos, free_v)
        self.fm[i].insert(pos, free_m)
        self.fd[i].insert(pos, free_d)
        if pos == len(keys) - 1:
            lasts[i] = key
        if free_v > self.max_v[i]:
            self.max_v[i] = free_v
        if free_m > self.max_m[i]:
            self.max_m[i] = free_m
        if free_d > self.max_d[i]:
            self.max_d[i] = free_d
        if len(keys) > 2 * BLOCK:
            self._split(i)

    def _cut(self, i: int, parts: list[tuple[int, int]]) -> None:
        """Replace block ``i`` by the given [start, end) slices of it."""
        columns = [getattr(self, name)[i] for name in ("keys", "hosts", "fv", "fm", "fd")]
        for name, column in zip(("keys", "hosts", "fv", "fm", "fd"), columns):
            getattr(self, name)[i:i + 1] = [column[a:b] for a, b in parts]
        self.lasts[i:i + 1] = [columns[0][b - 1] for _a, b in parts]
        for name, column in (("max_v", columns[2]), ("max_m", columns[3]), ("max_d", columns[4])):
            getattr(self, name)[i:i + 1] = [max(column[a:b]) for a, b in parts]

    def _split(self, i: int) -> None:
        size = len(self.keys[i])
        self._cut(i, [(0, size // 2), (size // 2, size)])

    def remove(self, host: Slot, key: int) -> None:
        """Remove ``host``, indexed under ``key``."""
        i = bisect_left(self.lasts, key)
        keys = self.keys[i] if i < len(self.keys) else []
        pos = bisect_left(keys, key)
        if pos >= len(keys) or keys[pos] != key:
            raise KeyError(f"host {host.no} is not indexed under {key}")
        del keys[pos]
        del self.hosts[i][pos]
        fv, fm, fd = self.fv[i], self.fm[i], self.fd[i]
        free_v, free_m, free_d = fv.pop(pos), fm.pop(pos), fd.pop(pos)
        if not keys:
            for name in self.__slots__:
                del getattr(self, name)[i]
            return
        if pos == len(keys):
            self.lasts[i] = keys[-1]
        if free_v >= self.max_v[i]:
            self.max_v[i] = max(fv)
        if free_m >= self.max_m[i]:
            self.max_m[i] = max(fm)
        if free_d >= self.max_d[i]:
            self.max_d[i] = max(fd)
        if len(keys) < BLOCK // 4 and len(self.keys) > 1:
            self._merge(i)

    def _merge(self, i: int) -> None:
        """Fold a small block into a neighbour so the block count stays ~ n / BLOCK."""
        low = i - 1 if i > 0 else i
        high = low + 1
        for name in ("keys", "hosts", "fv", "fm", "fd"):
            column = getattr(self, name)
            column[low] = column[low] + column[high]
            del column[high]
        self.lasts[low] = self.lasts[high]
        del self.lasts[high]
        for name, values in (("max_v", self.fv), ("max_m", self.fm), ("max_d", self.fd)):
            column = getattr(self, name)
            column[low] = max(values[low])
            del column[high]
        if len(self.keys[low]) > 2 * BLOCK:
            self._split(low)

    def first_fit(
        self,
        vcpus: int,
        memory_mb: int,
        disk_gb: int,
        skip: set[int] | frozenset[int],
        descending: bool,
        stop_key: int | None = None,
        min_key: int = 0,
    ) -> Slot | None:
        """The first host in key order (highest first when ``descending``) that fits and whose
        number is not in ``skip``; None when there is none before ``stop_key`` (exclusive).

        ``min_key`` is a lower bound below which no host can fit (the caller derives it from the
        request); an ascending scan starts there instead of at the smallest key.
        """
        max_v, max_m, max_d = self.max_v, self.max_m, self.max_d
        count = len(self.keys)
        first_block = first_pos = 0
        if not descending and min_key:
            first_block = bisect_left(self.lasts, min_key)
            if first_block < count:
                first_pos = bisect_left(self.keys[first_block], min_key)
        for i in (range(count - 1, -1, -1) if descending else range(first_block, count)):
            keys = self.keys[i]
            if stop_key is not None and (self.lasts[i] < stop_key if descending else keys[0] > stop_key):
                return None
            if max_v[i] < vcpus or max_m[i] < memory_mb or max_d[i] < disk_gb:
                continue
            fv, fm, fd = self.fv[i], self.fm[i], self.fd[i]
            start = first_pos if i == first_block else 0
            for j in (range(len(keys) - 1, -1, -1) if descending else range(start, len(keys))):
                if stop_key is not None and (keys[j] < stop_key if descending else keys[j] > stop_key):
                    return None
                if fv[j] >= vcpus and fm[j] >= memory_mb and fd[j] >= disk_gb:
                    host = self.hosts[i][j]
                    if skip and host.no in skip:
                        continue
                    return host
        return None

    def ceiling(self, min_key: int) -> int | None:
        """The smallest key >= ``min_key`` (the first candidate of an ascending scan), or None."""
        i = bisect_left(self.lasts, min_key)
        if i == len(self.lasts):
            return None
        keys = self.keys[i]
        return keys[bisect_left(keys, min_key)]

    def largest_free(self) -> tuple[int, int, int]:
        """Per-dimension maxima over the whole index (each may come from a different host)."""
        if not self.keys:
            return (0, 0, 0)
        return (max(self.max_v), max(self.max_m), max(self.max_d))

    def check(self) -> None:
        """Verify the invariants (used by tests): order, lasts, parallel lists, exact maxima."""
        flat = [key for block in self.keys for key in block]
        assert flat == sorted(flat), "keys out of order"
        for i, block in enumerate(self.keys):
            hosts = self.hosts[i]
            assert block, "empty block"
            assert self.lasts[i] == block[-1], "stale last key"
            assert len(hosts) == len(block), "hosts and keys disagree"
            assert self.fv[i] == [h.free_v for h in hosts], "stale free vCPU"
            assert self.fm[i] == [h.free_m for h in hosts], "stale free memory"
            assert self.fd[i] == [h.free_d for h in hosts], "stale free disk"
            assert self.max_v[i] == max(self.fv[i]), "stale vCPU maximum"
            assert self.max_m[i] == max(self.fm[i]), "stale memory maximum"
            assert self.max_d[i] == max(self.fd[i]), "stale disk maximum"


__all__ = ["BLOCK", "HOST_BITS", "MAX_HOSTS", "SortedHosts", "Slot"]
