"""What every client command shares: where the VIM is and who we are (environment or profile
file), how results are printed (Rich tables, JSON, YAML), and how failures become one line on
stderr with a distinct exit code.

Exit codes: 0 done; 1 the VIM refused the request (its problem ``cause`` is printed); 2 bad
usage or configuration; 3 the VIM could not be reached; 4 a ``--wait`` ran out of time;
130 interrupted.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
import tomllib
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

EXIT_API, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_TIMEOUT = 1, 2, 3, 4

err = Console(stderr=True)


class Output(str, Enum):
    table = "table"
    json = "json"
    yaml = "yaml"


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def profiles_path() -> Path:
    explicit = os.environ.get("VIMKIT_PROFILES")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "vimkit" / "profiles.toml"


@dataclass
class Connection:
    url: str
    client_id: str | None
    client_secret: str | None
    token: str | None = None
    profile: str | None = None


def resolve_connection(profile: str | None) -> Connection:
    """A named profile (``--profile`` or ``VIMKIT_PROFILE``) is used as written; otherwise the
    ``VIMKIT_URL`` / ``VIMKIT_CLIENT_ID`` / ``VIMKIT_CLIENT_SECRET`` variables, each falling back to
    the file's ``default`` profile."""
    name = profile or os.environ.get("VIMKIT_PROFILE")
    path = profiles_path()
    table: dict[str, Any] = {}
    if path.exists():
        try:
            document = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise CliError(f"profile file {path}: {exc}") from exc
        wanted = name or "default"
        table = document.get(wanted) or document.get("profiles", {}).get(wanted) or {}
        if name and not table:
            raise CliError(f"no profile '{name}' in {path}")
    elif name:
        raise CliError(f"profile '{name}' asked for but {path} does not exist")

    def pick(variable: str, key: str) -> str | None:
        if name:
            return table.get(key) or None
        return os.environ.get(variable) or table.get(key) or None

    url = pick("VIMKIT_URL", "url")
    if not url:
        raise CliError("no VIM address: set VIMKIT_URL (and VIMKIT_CLIENT_ID, VIMKIT_CLIENT_SECRET) or "
                       f"write a profile in {path}")
    connection = Connection(url, pick("VIMKIT_CLIENT_ID", "client_id"), pick("VIMKIT_CLIENT_SECRET", "client_secret"),
                            pick("VIMKIT_TOKEN", "token"), name)
    if not connection.token and not (connection.client_id and connection.client_secret):
        raise CliError("no credentials: set VIMKIT_CLIENT_ID and VIMKIT_CLIENT_SECRET (or a profile's "
                       "client_id and client_secret)")
    return connection


@dataclass
class Ctx:
    output: Output
    profile: str | None
    _client: Any = None

    @property
    def connection(self) -> Connection:
        return resolve_connection(self.profile)

    def client(self) -> Any:
        if self._client is None:
            from vimkit.client import Client

            c = self.connection
            self._client = Client(c.url, c.client_id, c.client_secret, token=c.token)
        return self._client

    def async_client(self, **options: Any) -> Any:
        from vimkit.client import AsyncClient

        c = self.connection
        return AsyncClient(c.url, c.client_id, c.client_secret, token=c.token, **options)

    # ------------------------------------------------------------------ printing

    def emit(self, value: Any, columns: Sequence[tuple[str, str]] | None = None, title: str | None = None) -> None:
        """Print one resource (a dict/model), or a list of them as a table with ``columns``
        (header, slash path), or as JSON / YAML."""
        data = plain(value)
        if self.output is Output.json:
            sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        elif self.output is Output.yaml:
            import yaml

            sys.stdout.write(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))
        elif isinstance(data, list):
            print_table(data, columns or guess_columns(data), title)
        else:
            print_record(data, title)

    def done(self, message: str) -> None:
        """A confirmation for a command without a result (delete); quiet for machine output."""
        if self.output is Output.table:
            Console().print(message, highlight=False)
        else:
            sys.stdout.write(json.dumps({"result": message}) + "\n")


def plain(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", by_alias=True, exclude_none=True)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return value


def lookup(document: Any, path: str) -> Any:
    for part in path.split("/"):
        if isinstance(document, dict):
            document = document.get(part)
        elif isinstance(document, list) and part.isdigit() and int(part) < len(document):
            document = document[int(part)]
        elif isinstance(document, list):
            document = [lookup(item, part) for item in document]
        else:
            return None
    return document


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(cell(item) for item in value if item not in (None, "", []))
    if isinstance(value, dict):
        return ", ".join(f"{key}={cell(item)}" for key, item in value.items())
    return str(value)


def guess_columns(rows: list[Any]) -> list[tuple[str, str]]:
    if not rows or not isinstance(rows[0], dict):
        return [("value", "")]
    return [(key, key) for key, item in rows[0].items() if not isinstance(item, dict | list)][:8]


def print_table(rows: Iterable[Any], columns: Sequence[tuple[str, str]], title: str | None = None) -> None:
    table = Table(title=title, show_lines=False, header_style="bold")
    for header, _ in columns:
        table.add_column(header, overflow="fold")
    count = 0
    for row in rows:
        table.add_row(*(cell(lookup(row, path) if path else row) for _, path in columns))
        count += 1
    Console().print(table)
    if count == 0:
        err.print("(none)")


def print_record(document: Any, title: str | None = None) -> None:
    table = Table(title=title, show_header=False, box=None, pad_edge=False)
    table.add_column("name", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in (document or {}).items():
        if key == "_links":
            continue
        shown = json.dumps(value, default=str) if isinstance(value, dict | list) and value else cell(value)
        table.add_row(key, shown)
    Console().print(table)


# ---------------------------------------------------------------------- errors and the decorator


def fail(message: str, code: int) -> None:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=code)


def run_guarded(function: Callable[[], Any]) -> Any:
    """Run a command body; every failure the user can act on becomes one line and an exit code."""
    from vimkit.client.errors import ApiError, TransportError, WaitTimeout

    try:
        return function()
    except typer.Exit:
        raise
    except CliError as exc:
        fail(str(exc), exc.code)
    except ApiError as exc:
        fail(exc.summary(), EXIT_API)
    except TransportError as exc:
        fail(f"cannot reach the VIM: {exc}", EXIT_UNREACHABLE)
    except WaitTimeout as exc:
        fail(str(exc), EXIT_TIMEOUT)
    except ValueError as exc:  # the SDK's refusal of a bad argument (an unknown API name …)
        fail(str(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        fail("interrupted", 130)


OUTPUT_OPTION = typer.Option(Output.table, "--output", "-o", help="table, json or yaml.", case_sensitive=False)
PROFILE_OPTION = typer.Option(None, "--profile", help="Profile in ~/.config/vimkit/profiles.toml (or $VIMKIT_PROFILES).")


def command(app: typer.Typer, name: str | None = None, **options: Any) -> Callable[[Callable[..., Any]], Any]:
    """Register ``function(ctx, …)`` as a command with the common ``-o`` and ``--profile``
    options appended and its failures handled by :func:`run_guarded`."""

    def register(function: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(function)
        # Typer reads the annotations; resolve them here, where the function's module is known.
        hints = typing.get_type_hints(function)
        own = [parameter.replace(annotation=hints.get(parameter.name, parameter.annotation))
               for parameter in list(signature.parameters.values())[1:]]
        extra = [
            inspect.Parameter("output", inspect.Parameter.KEYWORD_ONLY, default=OUTPUT_OPTION, annotation=Output),
            inspect.Parameter("profile", inspect.Parameter.KEYWORD_ONLY, default=PROFILE_OPTION,
                              annotation=Optional[str]),
        ]

        @functools.wraps(function)
        def wrapper(*args: Any, output: Output = Output.table, profile: Optional[str] = None, **kwargs: Any) -> Any:
            ctx = Ctx(output, profile)
            try:
                return run_guarded(lambda: function(ctx, *args, **kwargs))
            finally:
                if ctx._client is not None:
                    ctx._client.close()

        wrapper.__signature__ = signature.replace(parameters=own + extra)  # type: ignore[attr-defined]
        del wrapper.__wrapped__  # Typer must read the new signature, not the function's own
        wrapper.__annotations__ = {}
        app.command(name, **options)(wrapper)
        return function

    return register


def parse_pairs(pairs: list[str] | None, what: str = "--metadata") -> dict[str, str]:
    result: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"{what}: expected KEY=VALUE, got '{pair}'")
        result[key] = value
    return result


def load_body(path: Path | None, inline: str | None) -> dict[str, Any]:
    """A request body from ``--file`` (JSON or YAML, ``-`` for stdin) or ``--body`` (JSON)."""
    if path is None and inline is None:
        return {}
    try:
        text = inline if inline is not None else (sys.stdin.read() if str(path) == "-" else Path(path).read_text())  # type: ignore[arg-type]
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc}") from exc
    try:
        document = json.loads(text)
    except ValueError:
        import yaml

        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise CliError(f"{path or '--body'}: neither JSON nor YAML: {exc}") from exc
    if not isinstance(document, dict):
        raise CliError(f"{path or '--body'}: the body must be an object")
    return document
