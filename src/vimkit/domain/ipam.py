"""Address and segment arithmetic for the network service (pure functions, no database).

Every validation error names the request field it is about (``cidr``, ``gatewayIp``,
``addressPool/0/minAddress`` …) so the API can answer 400 with ``invalidParams``.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from vimkit.api.problems import ApiError, invalid

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Smallest subnets offered: room for a gateway and at least one port.
MAX_PREFIX = {4: 30, 6: 126}
#: Counts are reported as JSON numbers; IPv6 pools are capped so that they stay exact in doubles.
COUNT_CAP = 2**53


@dataclass(frozen=True, slots=True)
class SubnetPlan:
    network: IpNetwork
    gateway: IpAddress | None
    pools: tuple[tuple[int, int], ...]  # closed ranges of integer addresses, sorted, disjoint

    @property
    def version(self) -> int:
        return self.network.version

    def pool_size(self) -> int:
        return sum(last - first + 1 for first, last in self.pools)

    def pool_json(self) -> list[dict[str, str]]:
        make = ipaddress.ip_address
        return [{"minAddress": str(make(first)), "maxAddress": str(make(last))} for first, last in self.pools]

    def in_pool(self, address: IpAddress) -> bool:
        value = int(address)
        return any(first <= value <= last for first, last in self.pools)


def parse_address(name: str, text: str, version: int | None = None) -> IpAddress:
    try:
        address = ipaddress.ip_address(text)
    except ValueError as exc:
        raise invalid(name, f"'{text}' is not an IP address") from exc
    if version is not None and address.version != version:
        raise invalid(name, f"'{text}' is an IPv{address.version} address, the subnet is IPv{version}")
    return address


def parse_cidr(name: str, text: str, version: int) -> IpNetwork:
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise invalid(name, f"'{text}' is not a network address/prefix ({exc})") from exc
    if network.version != version:
        raise invalid(name, f"'{text}' is an IPv{network.version} network, ipVersion says IPv{version}")
    if network.prefixlen > MAX_PREFIX[version]:
        raise invalid(name, f"prefix /{network.prefixlen} is too small (at most /{MAX_PREFIX[version]})")
    return network


def _usable(network: IpNetwork) -> tuple[int, int]:
    """First and last host address: not the network address, and not the IPv4 broadcast."""
    first = int(network.network_address) + 1
    last = int(network.broadcast_address) - (1 if network.version == 4 else 0)
    return first, last


def plan_subnet(
    ip_version: int,
    cidr: str,
    gateway_ip: str | None,
    gateway_given: bool,
    address_pool: Sequence[tuple[str, str]] | None,
) -> SubnetPlan:
    """Validate a NetworkSubnetData and work out its gateway and pools."""
    network = parse_cidr("cidr", cidr, ip_version)
    low, high = _usable(network)
    gateway: IpAddress | None
    if gateway_given and gateway_ip is None:
        gateway = None
    elif gateway_ip is None:
        gateway = ipaddress.ip_address(low)
    else:
        gateway = parse_address("gatewayIp", gateway_ip, ip_version)
        if gateway not in network:
            raise invalid("gatewayIp", f"{gateway} is outside {network}")
        if not low <= int(gateway) <= high:
            raise invalid("gatewayIp", f"{gateway} is the network or broadcast address of {network}")
    pools: list[tuple[int, int, int]] = []
    if address_pool:
        for index, (first_text, last_text) in enumerate(address_pool):
            first = parse_address(f"addressPool/{index}/minAddress", first_text, ip_version)
            last = parse_address(f"addressPool/{index}/maxAddress", last_text, ip_version)
            for field, address in (("minAddress", first), ("maxAddress", last)):
                if address not in network or not low <= int(address) <= high:
                    raise invalid(f"addressPool/{index}/{field}", f"{address} is not a host address of {network}")
            if int(first) > int(last):
                raise invalid(f"addressPool/{index}/maxAddress", f"{last} is below minAddress {first}")
            pools.append((int(first), int(last), index))
        pools.sort()
        for (_a, last_a, index_a), (first_b, _b, index_b) in zip(pools, pools[1:]):
            if first_b <= last_a:
                raise invalid(f"addressPool/{index_b}", f"overlaps addressPool/{index_a}")
        ranges = tuple((first, last) for first, last, _ in pools)
    else:
        ranges = ((low, high),)
    return SubnetPlan(network, gateway, ranges)


def overlapping(network: IpNetwork, others: Sequence[str]) -> str | None:
    """The first of ``others`` (CIDR texts) that overlaps ``network``, or None."""
    for text in others:
        other = ipaddress.ip_network(text)
        if other.version == network.version and other.overlaps(network):
            return text
    return None


def plan_from_document(body: dict) -> SubnetPlan:
    """The plan of a stored subnet (its document is already valid)."""
    network = ipaddress.ip_network(body["cidr"])
    gateway = ipaddress.ip_address(body["gatewayIp"]) if body.get("gatewayIp") else None
    pools = tuple(
        (int(ipaddress.ip_address(r["minAddress"])), int(ipaddress.ip_address(r["maxAddress"])))
        for r in body.get("addressPool", [])
    )
    return SubnetPlan(network, gateway, pools)


def scan(pools: Sequence[tuple[int, int]], start: int) -> Iterator[int]:
    """Every pool address once, starting at pool offset ``start`` and wrapping around."""
    size = sum(last - first + 1 for first, last in pools)
    if size == 0:
        return
    start %= size
    for offset in range(size):
        position = (start + offset) % size
        for first, last in pools:
            span = last - first + 1
            if position < span:
                yield first + position
                break
            position -= span


def position(pools: Sequence[tuple[int, int]], value: int) -> int:
    """The pool position of ``value``: the inverse of :func:`scan`'s order."""
    offset = 0
    for first, last in pools:
        if first <= value <= last:
            return offset + value - first
        offset += last - first + 1
    raise ValueError(f"{value} is in no pool")


def scan_windows(pools: Sequence[tuple[int, int]], start: int, window: int = 64,
                 first: int = 4) -> Iterator[list[int]]:
    """:func:`scan` in batches, to look many candidates up in one query: a small first batch (the
    candidate at ``start`` is usually free), then batches of ``window``."""
    batch: list[int] = []
    size = first
    for value in scan(pools, start):
        batch.append(value)
        if len(batch) == size:
            yield batch
            batch = []
            size = window
    if batch:
        yield batch


def to_text(value: int, version: int) -> str:
    return str(ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value))


def random_mac() -> str:
    """A locally administered (bit 1 set), unicast (bit 0 clear) MAC address."""
    raw = bytearray(secrets.token_bytes(6))
    raw[0] = (raw[0] & 0xFC) | 0x02
    return ":".join(f"{byte:02x}" for byte in raw)


def normalise_mac(name: str, text: str) -> str:
    mac = text.lower()
    if int(mac[:2], 16) & 0x01:
        raise invalid(name, f"{text} is a multicast address")
    if mac == "00:00:00:00:00:00":
        raise invalid(name, "the all-zero address is not a port address")
    return mac


def segment_in_ranges(segment: int, ranges: Sequence[Sequence[int]]) -> bool:
    return any(first <= segment <= last for first, last in ranges)


def capped(count: int) -> int:
    return min(count, COUNT_CAP)


def no_capacity(detail: str) -> ApiError:
    from vimkit.api.problems import Cause

    return ApiError(409, detail, cause=Cause.NO_CAPACITY)
