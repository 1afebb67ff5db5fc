"""The declared inventory: built-in default, TOML loading, validation messages naming the key."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from vimkit.infra import (
    DEFAULT_INVENTORY_TOML,
    AdminState,
    Inventory,
    NetworkType,
    Trait,
    default_inventory,
    load_inventory,
    parse_inventory,
)


def zone(zone_id: str = "z1", pop: str = "pop-1") -> dict[str, Any]:
    return {"zoneId": zone_id, "zoneName": zone_id.upper(), "nfviPopId": pop}


def host(host_id: str = "h1", zone_id: str = "z1", **extra: Any) -> dict[str, Any]:
    return {"hostId": host_id, "zoneId": zone_id, "vcpus": 16, "memoryMb": 65536, "diskGb": 500, **extra}


def vlan(net_id: str, ranges: list[list[int]], physnet: str = "physnet1") -> dict[str, Any]:
    return {"providerNetworkId": net_id, "networkType": "vlan", "physicalNetwork": physnet,
            "segmentationRanges": ranges}


def error_of(document: dict[str, Any]) -> str:
    with pytest.raises(ValueError) as caught:
        parse_inventory(document)
    return str(caught.value)


def test_default_inventory_is_two_zones_of_eight_hosts() -> None:
    inventory = load_inventory(None)
    assert inventory is default_inventory()
    assert [z.zoneId for z in inventory.zones] == ["zone-a", "zone-b"]
    assert {z.nfviPopId for z in inventory.zones} == {"pop-1"}
    for zone_id in ("zone-a", "zone-b"):
        hosts = inventory.hosts_in(zone_id)
        assert len(hosts) == 8
        assert len(inventory.pools_in(zone_id)) == 1
        assert sum(Trait.SRIOV in h.traits for h in hosts) == 2
    assert len({h.hostId for h in inventory.hosts}) == 16
    types = {n.networkType for n in inventory.providerNetworks}
    assert types == {NetworkType.VLAN, NetworkType.VXLAN}
    vxlan = next(n for n in inventory.providerNetworks if n.networkType is NetworkType.VXLAN)
    assert vxlan.physicalNetwork is None and vxlan.mtu == 1450 and vxlan.segment_count() == 10_000


def test_default_toml_text_round_trips_through_the_file_loader(tmp_path: Path) -> None:
    path = tmp_path / "inventory.toml"
    path.write_text(DEFAULT_INVENTORY_TOML)
    assert load_inventory(path) == default_inventory()


def test_models_serialise_with_api_camel_case_names() -> None:
    document = default_inventory().model_dump(mode="json")
    first = document["hosts"][0]
    assert {"hostId", "zoneId", "vcpus", "memoryMb", "diskGb", "cpuAllocationRatio", "ramAllocationRatio",
            "diskAllocationRatio", "cpuArchitecture", "traits", "adminState"} <= set(first)
    assert first["adminState"] == "ENABLED"
    assert {"poolId", "typeOfStorage", "capacityGb", "allocationRatio", "rdmaEnabled", "multiAttach"} <= set(
        document["storagePools"][0])
    assert {"providerNetworkId", "networkType", "physicalNetwork", "segmentationRanges", "mtu"} <= set(
        document["providerNetworks"][0])
    assert document["providerNetworks"][0]["segmentationRanges"] == [[100, 999]]
    json.dumps(document)
    assert Inventory.model_validate_json(json.dumps(document)) == default_inventory()


def test_host_groups_expand_and_nested_inventory_table_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "vimkit.toml"
    path.write_text("""
[vimkit]
port = 8800

[inventory]
[[inventory.zones]]
zoneId = "edge"
zoneName = "Edge"
nfviPopId = "pop-edge"

[[inventory.hostGroups]]
namePattern = "edge-{index:03d}"
count = 3
startIndex = 7
zoneId = "edge"
vcpus = 8
memoryMb = 16384
diskGb = 0
cpuArchitecture = "aarch64"
adminState = "MAINTENANCE"
cpuAllocationRatio = 2
""")
    inventory = load_inventory(path)
    assert [h.hostId for h in inventory.hosts] == ["edge-007", "edge-008", "edge-009"]
    assert all(h.cpuArchitecture == "aarch64" and h.adminState is AdminState.MAINTENANCE for h in inventory.hosts)
    assert inventory.hosts[0].cpuAllocationRatio == 2.0
    assert inventory.host("edge-008").zoneId == "edge"
    assert inventory.pop_of("edge") == "pop-edge"


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"zones": [zone()], "hosts": [host(cpuAllocationRatio=0)]}, "hosts[0].cpuAllocationRatio: Input should be greater than 0"),
        ({"zones": [zone()], "hosts": [host(ramAllocationRatio=-1.5)]}, "hosts[0].ramAllocationRatio"),
        ({"zones": [zone()], "hosts": [host(), host("h2"), host("h1")]}, "hosts[2].hostId: duplicate id 'h1'"),
        ({"zones": [zone(), zone()]}, "zones[1].zoneId: duplicate id 'z1'"),
        ({"zones": [zone()], "hosts": [host(zone_id="nowhere")]}, "hosts[0].zoneId: unknown zone 'nowhere'"),
        ({"zones": [zone()], "hosts": [host(vcpus="16")]}, "hosts[0].vcpus: Input should be a valid integer"),
        ({"zones": [zone()], "hosts": [host(reservedVcpus=16)]}, "hosts[0].reservedVcpus: must be smaller than vcpus"),
        ({"zones": [zone()], "hosts": [host(traits=["sriov"])]}, "hosts[0].traits[0]"),
        ({"zones": [zone()], "hosts": [host(adminState="BROKEN")]}, "hosts[0].adminState"),
        ({"zones": [zone()], "hosts": [host(vcpu=4)]}, "hosts[0].vcpu: Extra inputs are not permitted"),
        ({"nfviPops": [{"nfviPopId": "p"}], "zones": [zone(pop="q")]}, "zones[0].nfviPopId: unknown NFVI-PoP 'q'"),
        ({"zones": [zone()], "storagePools": [{"poolId": "p", "zoneId": "z2", "capacityGb": 10}]},
         "storagePools[0].zoneId: unknown zone 'z2'"),
        ({"zones": [zone()], "storagePools": [{"poolId": "p", "zoneId": "z1", "capacityGb": 10, "allocationRatio": 0}]},
         "storagePools[0].allocationRatio"),
        ({"zones": [zone()], "storagePools": [{"poolId": "p", "zoneId": "z1", "capacityGb": 10},
                                              {"poolId": "p", "zoneId": "z1", "capacityGb": 10}]},
         "storagePools[1].poolId: duplicate id 'p'"),
        ({"providerNetworks": [vlan("a", [[0, 10]])]}, "providerNetworks[0].segmentationRanges[0]: [0, 10] is outside 1-4094"),
        ({"providerNetworks": [vlan("a", [[4000, 4095]])]}, "providerNetworks[0].segmentationRanges[0]"),
        ({"providerNetworks": [vlan("a", [[10, 5]])]}, "providerNetworks[0].segmentationRanges[0]: [10, 5] is reversed"),
        ({"providerNetworks": [vlan("a", [[10, 20], [15, 30]])]}, "providerNetworks[0].segmentationRanges[1]: overlaps"),
        ({"providerNetworks": [vlan("a", [[10, 20]]), vlan("b", [[20, 30]])]},
         "providerNetworks[1].segmentationRanges[0]: overlaps providerNetworks[0].segmentationRanges[0]"),
        ({"providerNetworks": [{"providerNetworkId": "x", "networkType": "vxlan", "segmentationRanges": [[1, 16777216]]}]},
         "providerNetworks[0].segmentationRanges[0]: [1, 16777216] is outside 1-16777215"),
        ({"providerNetworks": [{"providerNetworkId": "x", "networkType": "vxlan", "physicalNetwork": "p",
                                "segmentationRanges": [[1, 2]]}]}, "providerNetworks[0].physicalNetwork"),
        ({"providerNetworks": [{"providerNetworkId": "x", "networkType": "vlan", "segmentationRanges": [[1, 2]]}]},
         "providerNetworks[0].physicalNetwork: required for a vlan network"),
        ({"providerNetworks": [{"providerNetworkId": "x", "networkType": "flat", "physicalNetwork": "p",
                                "segmentationRanges": [[1, 2]]}]}, "providerNetworks[0].segmentationRanges: a flat"),
        ({"providerNetworks": [{"providerNetworkId": "x", "networkType": "gre", "segmentationRanges": [[1, 2]]}]},
         "providerNetworks[0].networkType"),
        ({"providerNetworks": [{"providerNetworkId": "x", "networkType": "vxlan", "segmentationRanges": [[1, 2]],
                                "mtu": 20000}]}, "providerNetworks[0].mtu"),
        ({"zones": [zone()], "providerNetworks": [{**vlan("a", [[1, 2]]), "zoneIds": ["z9"]}]},
         "providerNetworks[0].zoneIds: unknown zone 'z9'"),
        ({"hostGroups": [{"namePattern": "fixed", "count": 2, "zoneId": "z1", "vcpus": 1, "memoryMb": 1, "diskGb": 0}]},
         "hostGroups[0].namePattern: must contain {index}"),
        ({"hostGroups": [{"namePattern": "g{index}", "count": 0, "zoneId": "z1", "vcpus": 1, "memoryMb": 1,
                          "diskGb": 0}]}, "hostGroups[0].count"),
        ({"zones": [zone()], "hostGroups": [{"namePattern": "g{index}", "count": 2, "zoneId": "z2", "vcpus": 1,
                                             "memoryMb": 1, "diskGb": 0}]}, "hostGroups[0] (host 'g1').zoneId: unknown zone"),
        ({"zones": [zone()], "hosts": [host("g2")], "hostGroups": [
            {"namePattern": "g{index}", "count": 2, "zoneId": "z1", "vcpus": 1, "memoryMb": 1, "diskGb": 0}]},
         "hostGroups[0] (host 'g2').hostId: duplicate id 'g2'"),
        ({"zone": []}, "zone: Extra inputs are not permitted"),
    ],
)
def test_bad_documents_name_the_offending_key(document: dict[str, Any], expected: str) -> None:
    assert expected in error_of(document)


def test_vlan_ranges_may_repeat_on_other_physical_networks_and_flat_needs_its_own() -> None:
    inventory = parse_inventory({"providerNetworks": [
        vlan("a", [[100, 200]], "physnet1"), vlan("b", [[100, 200]], "physnet2"),
        {"providerNetworkId": "ext", "networkType": "flat", "physicalNetwork": "external"},
    ]})
    assert len(inventory.providerNetworks) == 3
    message = error_of({"providerNetworks": [
        {"providerNetworkId": "e1", "networkType": "flat", "physicalNetwork": "external"},
        {"providerNetworkId": "e2", "networkType": "flat", "physicalNetwork": "external"},
    ]})
    assert message.startswith("inventory: providerNetworks[1].physicalNetwork: 'external' already carries")


def test_load_inventory_reports_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        load_inventory(tmp_path / "absent.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[[zones]\nzoneId = ")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_inventory(broken)
    bad = tmp_path / "bad.toml"
    bad.write_text('[[zones]]\nzoneId = "z"\nzoneName = "Z"\nnfviPopId = "p"\n'
                   '[[hosts]]\nhostId = "h"\nzoneId = "z"\nvcpus = 4\nmemoryMb = 1024\ndiskGb = 10\n'
                   'diskAllocationRatio = 0.0\n')
    with pytest.raises(ValueError) as caught:
        load_inventory(bad)
    assert str(caught.value) == (f"inventory file {bad}: hosts[0].diskAllocationRatio: Input should be greater than 0")


def test_inventory_is_immutable() -> None:
    inventory = default_inventory()
    with pytest.raises(ValidationError, match="frozen"):
        inventory.hosts[0].vcpus = 1  # type: ignore[misc]


def test_default_document_parses_as_plain_toml() -> None:
    document = tomllib.loads(DEFAULT_INVENTORY_TOML)
    assert len(document["hostGroups"]) == 4
