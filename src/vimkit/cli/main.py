"""``vimkit`` command line: the server and its operator commands."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from vimkit.config import SettingsError, load_settings

app = typer.Typer(help="vimkit: a VIM for the ETSI NFV CCM-VIM reference point.", no_args_is_help=True)
console = Console(stderr=True)


@app.callback()
def main() -> None:
    """vimkit: a VIM for the ETSI NFV CCM-VIM reference point."""


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code=2)


@app.command()
def serve(
    host: Optional[str] = typer.Option(None, help="Listen address (default 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, help="Listen port (default 8700)."),
    data_dir: Optional[Path] = typer.Option(None, help="Data directory (default ./.vimkit)."),
    database_url: Optional[str] = typer.Option(None, help="SQLAlchemy URL (default SQLite in the data directory)."),
    driver: Optional[str] = typer.Option(None, help="Infrastructure driver: sim, qemu or openstack."),
    config: Optional[Path] = typer.Option(None, help="TOML config file."),
    tls_cert: Optional[Path] = typer.Option(None, help="PEM server certificate (chain): serve HTTPS."),
    tls_key: Optional[Path] = typer.Option(None, help="PEM private key of --tls-cert."),
    tls_client_ca: Optional[Path] = typer.Option(
        None, help="PEM CA bundle: require client certificates signed by it (mutual TLS)."
    ),
) -> None:
    """Run the VIM server."""
    import uvicorn

    try:
        settings = load_settings(
            host=host, port=port, data_dir=data_dir, database_url=database_url, driver=driver, config=config,
            tls_cert=tls_cert, tls_key=tls_key, tls_client_ca=tls_client_ca,
        )
    except SettingsError as exc:
        _fail(str(exc))
        return
    if settings.driver not in ("sim", "qemu"):
        _fail(f"invalid setting 'driver': '{settings.driver}' is not available in this build yet (use 'sim' or 'qemu')")
    if settings.driver == "qemu" and settings.inventory_file is None:
        # A single-host backend: this machine is the inventory (written once, then editable).
        from vimkit.drivers.qemu import local_inventory_toml

        path = settings.data_dir / "qemu" / "inventory.toml"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(local_inventory_toml(path.parent))
        settings = settings.model_copy(update={"inventory_file": path})
    from vimkit.app import build_services, create_app
    from vimkit.cli.admin_commands import tls_options

    try:
        tls = tls_options(settings)
    except ValueError as exc:
        _fail(str(exc))
        return
    scheme = "https" if tls else "http"
    try:
        services = build_services(settings)
    except Exception as exc:  # a start-up failure is one line for the operator, not a trace
        _fail(f"cannot start: {type(exc).__name__}: {exc}")
        return
    application = create_app(settings, services)
    out = Console()
    if services.demo_credentials is not None:
        creds = services.demo_credentials
        out.print("[bold]Demo admin credentials (shown once):[/bold]")
        out.print(f"  client id:     {creds.row.client_id}", highlight=False)
        out.print(f"  client secret: {creds.client_secret}", highlight=False)
        out.print(
            f"  get a token:   curl -s -u '{creds.row.client_id}:{creds.client_secret}' "
            f"-d grant_type=client_credentials {scheme}://{settings.host}:{settings.port}/oauth2/token",
            highlight=False,
            soft_wrap=True,  # a command to copy must not be broken across lines
        )
    out.print(f"vimkit listening on {scheme}://{settings.host}:{settings.port} (driver {settings.driver}, "
              f"database {services.database.dialect}); API docs at /docs", highlight=False, soft_wrap=True)
    uvicorn.run(application, host=settings.host, port=settings.port, log_level="warning", access_log=False, **tls)


@app.command()
def deliver(
    data_dir: Optional[Path] = typer.Option(None, help="Data directory of the VIM (default ./.vimkit)."),
    database_url: Optional[str] = typer.Option(None, help="SQLAlchemy URL (default SQLite in the data directory)."),
    config: Optional[Path] = typer.Option(None, help="TOML config file."),
    worker_index: Optional[int] = typer.Option(None, help="Replica id suffix -w<N> (set by vimkit serve)."),
    from_server: bool = typer.Option(False, hidden=True, help="Settings and wake-ups on standard input."),
) -> None:
    """Deliver notifications only (what `vimkit serve` runs with notify_workers > 0)."""
    from vimkit.notify.workers import config_from_settings, read_config_from_server, run_worker

    try:
        worker = read_config_from_server() if from_server else config_from_settings(
            load_settings(data_dir=data_dir, database_url=database_url, config=config))
    except SettingsError as exc:
        _fail(str(exc))
        return
    run_worker(worker, worker_index, from_server)


from vimkit.cli.admin_commands import consumers_app, keys_app  # noqa: E402

app.add_typer(consumers_app, name="consumers")
app.add_typer(keys_app, name="keys")
from vimkit.cli.images import images_app  # noqa: E402
app.add_typer(images_app, name="images")

from vimkit.cli.client_commands import register as _register_client_commands  # noqa: E402

_register_client_commands(app)


if __name__ == "__main__":
    app()
