"""Calling subscribers back: address checks, authentication and the HTTP exchange itself."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

# Link-local covers the cloud metadata services at 169.254.169.254 and fe80::/10; fd00:ec2::254
# is AWS's IPv6 metadata address.
DEFAULT_DENIED = ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "0.0.0.0/8", "::/128")
DENIED_HOSTNAMES = frozenset({"metadata.google.internal", "metadata", "instance-data"})


class CallbackRefused(Exception):
    """The callback URI is not acceptable; ``reason`` says why (shown to the consumer)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class AddressPolicy:
    """Which callback addresses the VIM may call: an allow-list, plus a deny-list that wins."""

    allowed: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    denied: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = tuple(
        ipaddress.ip_network(net) for net in DEFAULT_DENIED
    )

    @classmethod
    def from_settings(cls, allow: list[str], deny: list[str] | None) -> AddressPolicy:
        denied = deny if deny is not None else list(DEFAULT_DENIED)
        return cls(
            tuple(ipaddress.ip_network(net, strict=False) for net in allow),
            tuple(ipaddress.ip_network(net, strict=False) for net in denied),
        )

    async def check(self, uri: str) -> None:
        parts = urlsplit(uri)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CallbackRefused("must be an absolute http or https URI")
        if parts.username or parts.password:
            raise CallbackRefused("must not carry credentials; use the authentication block")
        host = parts.hostname.lower().rstrip(".")
        if host in DENIED_HOSTNAMES:
            raise CallbackRefused(f"host '{host}' is a cloud metadata service")
        try:
            addresses = {ipaddress.ip_address(host)}
        except ValueError:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(host, parts.port or 0, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise CallbackRefused(f"host '{host}' cannot be resolved") from exc
            addresses = {ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos}
        for address in addresses:
            if any(address in net for net in self.denied):
                raise CallbackRefused(f"address {address} is not allowed (link-local or metadata)")
            if self.allowed and not any(address in net for net in self.allowed):
                raise CallbackRefused(f"address {address} is not in the callback allow-list")


class TokenCache:
    """OAuth 2.0 client-credentials tokens for callbacks, kept until shortly before expiry."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}

    async def token(self, client: httpx.AsyncClient, params: dict[str, str]) -> str:
        key = (params["tokenEndpoint"], params["clientId"])
        cached = self._tokens.get(key)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        response = await client.post(
            params["tokenEndpoint"],
            data={"grant_type": "client_credentials"},
            auth=(params["clientId"], params["clientPassword"]),
        )
        if response.status_code != 200:
            raise httpx.HTTPStatusError(
                f"token endpoint answered {response.status_code}", request=response.request, response=response
            )
        body = response.json()
        token = str(body["access_token"])
        lifetime = float(body.get("expires_in", 300))
        self._tokens[key] = (token, time.monotonic() + max(lifetime - 30, lifetime / 2))
        return token

    def forget(self, params: dict[str, str]) -> None:
        self._tokens.pop((params["tokenEndpoint"], params["clientId"]), None)


async def auth_headers(
    client: httpx.AsyncClient, tokens: TokenCache, authentication: dict[str, Any] | None
) -> dict[str, str]:
    if not authentication:
        return {}
    kinds = authentication.get("authType", [])
    if "OAUTH2_CLIENT_CREDENTIALS" in kinds:
        token = await tokens.token(client, authentication["paramsOauth2ClientCredentials"])
        return {"Authorization": f"Bearer {token}"}
    if "BASIC" in kinds:
        basic = authentication["paramsBasic"]
        return {"Authorization": httpx.BasicAuth(basic["userName"], basic["password"])._auth_header}
    return {}
