"""Address and segment arithmetic of the network service."""

from __future__ import annotations

import ipaddress

import pytest

from vimkit.api.problems import ApiError
from vimkit.domain import ipam


def _field(exc: pytest.ExceptionInfo[ApiError]) -> str:
    assert exc.value.status == 400 and exc.value.invalid_params
    return exc.value.invalid_params[0][0]


def test_default_gateway_and_pool() -> None:
    plan = ipam.plan_subnet(4, "10.0.0.0/24", None, False, None)
    assert str(plan.gateway) == "10.0.0.1"
    assert plan.pool_json() == [{"minAddress": "10.0.0.1", "maxAddress": "10.0.0.254"}]
    assert plan.pool_size() == 254
    v6 = ipam.plan_subnet(6, "fd00::/64", None, False, None)
    assert str(v6.gateway) == "fd00::1" and v6.pool_size() == 2**64 - 1
    assert ipam.capped(v6.pool_size()) == 2**53


def test_explicit_null_gateway_means_none() -> None:
    assert ipam.plan_subnet(4, "10.0.0.0/29", None, True, None).gateway is None


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((4, "10.0.0.1/24", None, False, None), "cidr"),
        ((4, "fd00::/64", None, False, None), "cidr"),
        ((6, "10.0.0.0/24", None, False, None), "cidr"),
        ((4, "10.0.0.0/31", None, False, None), "cidr"),
        ((4, "10.0.0.0/24", "10.0.1.1", False, None), "gatewayIp"),
        ((4, "10.0.0.0/24", "10.0.0.0", False, None), "gatewayIp"),
        ((4, "10.0.0.0/24", "10.0.0.255", False, None), "gatewayIp"),
        ((4, "10.0.0.0/24", "fd00::1", False, None), "gatewayIp"),
        ((4, "10.0.0.0/24", "garbage", False, None), "gatewayIp"),
        ((4, "10.0.0.0/24", None, False, [("10.0.0.5", "10.0.1.5")]), "addressPool/0/maxAddress"),
        ((4, "10.0.0.0/24", None, False, [("10.0.0.9", "10.0.0.5")]), "addressPool/0/maxAddress"),
        ((4, "10.0.0.0/24", None, False, [("fd00::1", "fd00::2")]), "addressPool/0/minAddress"),
        ((4, "10.0.0.0/24", None, False, [("10.0.0.2", "10.0.0.9"), ("10.0.0.9", "10.0.0.20")]), "addressPool/1"),
    ],
)
def test_invalid_subnets_name_the_field(args: tuple, field: str) -> None:
    with pytest.raises(ApiError) as exc:
        ipam.plan_subnet(*args)
    assert _field(exc) == field


def test_pools_are_sorted_and_membership_is_checked() -> None:
    plan = ipam.plan_subnet(4, "10.0.0.0/24", None, False, [("10.0.0.100", "10.0.0.101"), ("10.0.0.10", "10.0.0.11")])
    assert plan.pools == ((int(ipaddress.ip_address("10.0.0.10")), int(ipaddress.ip_address("10.0.0.11"))),
                          (int(ipaddress.ip_address("10.0.0.100")), int(ipaddress.ip_address("10.0.0.101"))))
    assert plan.in_pool(ipaddress.ip_address("10.0.0.101")) and not plan.in_pool(ipaddress.ip_address("10.0.0.1"))
    again = ipam.plan_from_document({"cidr": "10.0.0.0/24", "gatewayIp": "10.0.0.1", "addressPool": plan.pool_json()})
    assert again == plan


def test_scan_visits_every_pool_address_once_from_any_start() -> None:
    pools = ((10, 12), (20, 21))
    assert list(ipam.scan(pools, 0)) == [10, 11, 12, 20, 21]
    assert list(ipam.scan(pools, 3)) == [20, 21, 10, 11, 12]
    assert list(ipam.scan(pools, 7)) == [12, 20, 21, 10, 11]
    assert [w for w in ipam.scan_windows(pools, 0, window=2, first=2)] == [[10, 11], [12, 20], [21]]
    assert [w for w in ipam.scan_windows(pools, 0, window=3, first=1)] == [[10], [11, 12, 20], [21]]
    assert list(ipam.scan((), 0)) == []


def test_position_is_the_inverse_of_the_scan_order() -> None:
    pools = ((10, 12), (20, 20), (30, 33))
    assert [ipam.position(pools, value) for value in ipam.scan(pools, 0)] == list(range(8))
    assert next(ipam.scan(pools, ipam.position(pools, 31))) == 31
    with pytest.raises(ValueError):
        ipam.position(pools, 15)


def test_overlap_detection() -> None:
    network = ipaddress.ip_network("10.0.1.0/24")
    assert ipam.overlapping(network, ["10.0.0.0/16"]) == "10.0.0.0/16"
    assert ipam.overlapping(network, ["10.0.2.0/24", "fd00::/64"]) is None


def test_macs_are_locally_administered_unicast_and_checked() -> None:
    for _ in range(200):
        first = int(ipam.random_mac()[:2], 16)
        assert first & 0x02 and not first & 0x01
    assert ipam.normalise_mac("macAddress", "02:AA:BB:CC:DD:EE") == "02:aa:bb:cc:dd:ee"
    for bad in ("01:00:5e:00:00:01", "00:00:00:00:00:00"):
        with pytest.raises(ApiError) as exc:
            ipam.normalise_mac("macAddress", bad)
        assert _field(exc) == "macAddress"


def test_segments_and_text() -> None:
    assert ipam.segment_in_ranges(150, [[100, 199]]) and not ipam.segment_in_ranges(200, [[100, 199]])
    assert ipam.to_text(int(ipaddress.ip_address("fd00::1")), 6) == "fd00::1"
    assert ipam.no_capacity("x").cause.value == "NO_CAPACITY"
