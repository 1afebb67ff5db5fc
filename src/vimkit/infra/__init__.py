"""The infrastructure the VIM manages: resource zones, hosts, storage pools and provider networks.

The inventory is declared (a TOML file or the built-in default, see :mod:`vimkit.infra.inventory`);
what is *running* on it is the business of the placement engine (:mod:`vimkit.placement`) and of
the driver (:mod:`vimkit.drivers`).
"""

from vimkit.infra.inventory import (
    DEFAULT_INVENTORY_TOML,
    AdminState,
    Host,
    Inventory,
    NetworkType,
    NfviPop,
    ProviderNetwork,
    ResourceZone,
    StoragePool,
    Trait,
    ZoneState,
    default_inventory,
    load_inventory,
    parse_inventory,
)

__all__ = [
    "DEFAULT_INVENTORY_TOML",
    "AdminState",
    "Host",
    "Inventory",
    "NetworkType",
    "NfviPop",
    "ProviderNetwork",
    "ResourceZone",
    "StoragePool",
    "Trait",
    "ZoneState",
    "default_inventory",
    "load_inventory",
    "parse_inventory",
]
