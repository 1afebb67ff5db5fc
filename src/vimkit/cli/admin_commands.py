"""``vimkit consumers …`` and ``vimkit keys …``: operator commands that work without a server.

They open the database and the data directory directly (the same settings as ``vimkit serve``:
options, ``VIMKIT_*`` variables, ``--config``) and share :class:`ConsumerService` and
:class:`KeyStore` with the server, so a running server sees their effects: a created consumer can
obtain a token at once, a deleted or rotated one loses its tokens within a second, a rotated
signing key signs new tokens within a second while tokens of the previous key stay valid until
they expire. Each changing command is recorded in the audit log (method ``CLI``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from vimkit.config import Settings, SettingsError, load_settings

consumers_app = typer.Typer(
    help="Manage consumers (OAuth clients) directly in the database; no server needed.",
    no_args_is_help=True,
)
keys_app = typer.Typer(
    help="Manage the token signing keys in the data directory; no server needed.",
    no_args_is_help=True,
)

_err = Console(stderr=True)

DataDir = typer.Option(None, "--data-dir", help="Data directory (default ./.vimkit).")
DatabaseUrl = typer.Option(None, "--database-url", help="SQLAlchemy URL (default SQLite in the data directory).")
ConfigFile = typer.Option(None, "--config", help="TOML config file.")
AsJson = typer.Option(False, "--json", help="Print JSON instead of text.")


def _fail(message: str, code: int = 1) -> None:
    _err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code=code)


def _settings(data_dir: Path | None, database_url: str | None, config: Path | None) -> Settings:
    try:
        return load_settings(data_dir=data_dir, database_url=database_url, config=config)
    except SettingsError as exc:
        _fail(str(exc), 2)
        raise  # unreachable


@contextmanager
def _services(settings: Settings) -> Iterator[Any]:
    from vimkit.domain.audit import AuditLog
    from vimkit.domain.consumers import ConsumerService
    from vimkit.store.db import Database
    from vimkit.store.migrate import upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = Database(settings.effective_database_url)
    audit = AuditLog(database, enabled=settings.audit_enabled)
    try:
        upgrade(database)
        yield ConsumerService(database), audit
    finally:
        audit.close()
        database.dispose()


def _consumer_document(row: Any, secret: str | None = None) -> dict[str, Any]:
    created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
    document: dict[str, Any] = {
        "consumerId": row.id,
        "consumerName": row.consumer_name,
        "clientId": row.client_id,
        "resourceGroupId": row.resource_group_id,
        "scopes": list(row.scopes),
        "createdAt": created.isoformat(),
    }
    if secret is not None:
        document["clientSecret"] = secret
    return document


def _print_with_secret(document: dict[str, Any], as_json: bool, headline: str) -> None:
    if as_json:
        typer.echo(json.dumps(document))
        return
    typer.echo(f"{headline} (the client secret is shown only now and stored only as a hash):")
    typer.echo(f"  consumer id:     {document['consumerId']}")
    typer.echo(f"  client id:       {document['clientId']}")
    typer.echo(f"  client secret:   {document['clientSecret']}")
    typer.echo(f"  resource group:  {document['resourceGroupId']}")
    typer.echo(f"  scopes:          {' '.join(document['scopes'])}")


def _scopes(values: list[str]) -> list[str]:
    return [scope for value in values for scope in value.replace(",", " ").split()]


@consumers_app.command("create")
def consumers_create(
    name: str = typer.Argument(..., help="Consumer name (e.g. the CCM's name)."),
    scope: list[str] = typer.Option(
        ..., "--scope", "-s", help="Granted scope; repeat or separate with commas (e.g. compute:read,compute:write)."
    ),
    resource_group: Optional[str] = typer.Option(
        None, "--resource-group", help="Resource group (tenant); a new one of its own when absent."
    ),
    client_id: Optional[str] = typer.Option(None, "--client-id", help="Client id (default: generated)."),
    as_json: bool = AsJson,
    data_dir: Optional[Path] = DataDir,
    database_url: Optional[str] = DatabaseUrl,
    config: Optional[Path] = ConfigFile,
) -> None:
    """Create a consumer and print its client secret once."""
    from vimkit.domain.audit import cli_entry

    settings = _settings(data_dir, database_url, config)
    with _services(settings) as (consumers, audit):
        from vimkit.api.problems import ApiError  # here: FastAPI is slow to import for client commands
        try:
            created = consumers.create(name, _scopes(scope), resource_group, client_id)
        except ApiError as exc:
            audit.record(cli_entry("consumers create", exc.status))
            _fail(exc.detail)
            return
        audit.record(cli_entry(f"consumers create {created.row.id}", 201, created.row.id))
    _print_with_secret(_consumer_document(created.row, created.client_secret), as_json, "consumer created")


@consumers_app.command("list")
def consumers_list(
    as_json: bool = AsJson,
    data_dir: Optional[Path] = DataDir,
    database_url: Optional[str] = DatabaseUrl,
    config: Optional[Path] = ConfigFile,
) -> None:
    """List consumers (never their secrets)."""
    settings = _settings(data_dir, database_url, config)
    with _services(settings) as (consumers, _audit):
        rows = consumers.list()
    documents = [_consumer_document(row) for row in rows]
    if as_json:
        typer.echo(json.dumps(documents))
        return
    table = Table("consumer id", "client id", "name", "resource group", "scopes", "created")
    for document in documents:
        table.add_row(
            document["consumerId"],
            document["clientId"],
            document["consumerName"],
            document["resourceGroupId"],
            " ".join(document["scopes"]),
            document["createdAt"][:19],
        )
    Console(width=200).print(table)


@consumers_app.command("delete")
def consumers_delete(
    consumer: str = typer.Argument(..., help="Consumer id or client id."),
    data_dir: Optional[Path] = DataDir,
    database_url: Optional[str] = DatabaseUrl,
    config: Optional[Path] = ConfigFile,
) -> None:
    """Delete a consumer: its tokens stop working (within a second on a running server)."""
    from vimkit.domain.audit import cli_entry

    settings = _settings(data_dir, database_url, config)
    with _services(settings) as (consumers, audit):
        from vimkit.api.problems import ApiError  # here: FastAPI is slow to import for client commands
        try:
            row = consumers.find(consumer)
            consumers.delete(row.id, allow_last_admin=True)
        except ApiError as exc:
            audit.record(cli_entry("consumers delete", exc.status))
            _fail(exc.detail)
            return
        audit.record(cli_entry(f"consumers delete {row.id}", 204, row.id))
    typer.echo(f"deleted consumer {row.id} (client id {row.client_id})")


@consumers_app.command("rotate-secret")
def consumers_rotate_secret(
    consumer: str = typer.Argument(..., help="Consumer id or client id."),
    as_json: bool = AsJson,
    data_dir: Optional[Path] = DataDir,
    database_url: Optional[str] = DatabaseUrl,
    config: Optional[Path] = ConfigFile,
) -> None:
    """Issue a new client secret (printed once); tokens obtained with the old one stop working."""
    from vimkit.domain.audit import cli_entry

    settings = _settings(data_dir, database_url, config)
    with _services(settings) as (consumers, audit):
        from vimkit.api.problems import ApiError  # here: FastAPI is slow to import for client commands
        try:
            row = consumers.find(consumer)
            rotated = consumers.rotate_secret(row.id)
        except ApiError as exc:
            audit.record(cli_entry("consumers rotate-secret", exc.status))
            _fail(exc.detail)
            return
        audit.record(cli_entry(f"consumers rotate-secret {row.id}", 200, row.id))
    _print_with_secret(_consumer_document(rotated.row, rotated.client_secret), as_json, "secret rotated")


def _key_store(settings: Settings) -> Any:
    from vimkit.auth.keys import KeyStore

    return KeyStore(settings.data_dir, retain_seconds=settings.token_lifetime_seconds + 60)


def _key_documents(store: Any) -> list[dict[str, Any]]:
    keys = store.keys
    return [
        {
            "kid": key.kid,
            "created": datetime.fromtimestamp(key.created, UTC).isoformat(),
            "status": "signing" if index == len(keys) - 1 else "verify-only",
        }
        for index, key in enumerate(keys)
    ]


@keys_app.command("rotate")
def keys_rotate(
    as_json: bool = AsJson,
    data_dir: Optional[Path] = DataDir,
    database_url: Optional[str] = DatabaseUrl,
    config: Optional[Path] = ConfigFile,
) -> None:
    """Create a new signing key. Tokens signed by earlier keys stay valid until they expire."""
    from vimkit.domain.audit import cli_entry

    settings = _settings(data_dir, database_url, config)
    store = _key_store(settings)
    previous = store.current.kid
    key = store.rotate()
    try:
        with _services(settings) as (_consumers, audit):
            audit.record(cli_entry(f"keys rotate {key.kid}", 201))
    except Exception as exc:  # the key is rotated; a database problem only loses the audit entry
        _err.print(f"[yellow]warning:[/yellow] audit entry not written: {type(exc).__name__}")
    if as_json:
        typer.echo(json.dumps({"kid": key.kid, "previous": previous, "keys": _key_documents(store)}))
        return
    typer.echo(f"new signing key {key.kid} (previous {previous}); a running server uses it within a second.")
    typer.echo(
        f"tokens signed by earlier keys stay valid until they expire "
        f"(keys are kept {int(store.retain_seconds)} s after they stop signing)."
    )


@keys_app.command("list")
def keys_list(
    as_json: bool = AsJson,
    data_dir: Optional[Path] = DataDir,
    database_url: Optional[str] = DatabaseUrl,
    config: Optional[Path] = ConfigFile,
) -> None:
    """List the signing keys (ids and ages only, never key material)."""
    settings = _settings(data_dir, database_url, config)
    documents = _key_documents(_key_store(settings))
    if as_json:
        typer.echo(json.dumps(documents))
        return
    table = Table("kid", "created", "status")
    for document in documents:
        table.add_row(document["kid"], document["created"][:19], document["status"])
    Console(width=200).print(table)


def tls_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's TLS arguments for ``vimkit serve``, checked up front so a bad file is one line.

    Raises ValueError naming the setting when a file is missing or not usable.
    """
    import ssl

    if settings.tls_cert is None or settings.tls_key is None:
        return {}
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"invalid setting 'tls_cert'/'tls_key': {exc}") from exc
    options: dict[str, Any] = {
        "ssl_certfile": str(settings.tls_cert),
        "ssl_keyfile": str(settings.tls_key),
    }
    if settings.tls_client_ca is not None:
        try:
            context.load_verify_locations(cafile=settings.tls_client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"invalid setting 'tls_client_ca': {exc}") from exc
        options["ssl_ca_certs"] = str(settings.tls_client_ca)
        options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    return options
