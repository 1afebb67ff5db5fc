"""Application assembly: services, middleware, routers and the OpenAPI document."""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import uuid
from functools import partial
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi

from vimkit import API_VERSION, __version__
from vimkit.api.audit import AuditMiddleware
from vimkit.api.dispatch import install_route_index
from vimkit.api.json import FastJSONResponse
from vimkit.api.middleware import ConventionsMiddleware
from vimkit.api.problems import PROBLEM_RESPONSES, ProblemDetails, install_problem_handlers
from vimkit.api.ratelimit import RateLimiter, RateLimitHeadersMiddleware
from vimkit.api.routes import (
    admin,
    admin_infra,
    compute,
    compute_info,
    faults,
    health,
    oauth,
    subscriptions,
    versions,
)
from vimkit.api.routes import storage, storage_info
from vimkit.api.routes import network, network_info
from vimkit.api.routes import computes
from vimkit.api.routes import performance
from vimkit.api.routes import images as image_routes
from vimkit.api.routing import VimRoute
from vimkit.auth.external import ExternalIssuer
from vimkit.auth.keys import KeyStore
from vimkit.auth.scopes import ALL_SCOPES
from vimkit.auth.tokens import TokenService
from vimkit.config import Settings
from vimkit.domain.audit import AuditLog
from vimkit.domain.consumers import ConsumerService, NewConsumer
from vimkit.domain.flavours import FlavourService
from vimkit.domain.alarms import AlarmService, host_faults
from vimkit.domain.infrastructure import InfrastructureService, build_driver
from vimkit.domain.storage import StorageService
from vimkit.domain.network import NetworkService
from vimkit.domain.compute import ComputeService
from vimkit.domain.images import ImageService
from vimkit.store.network_tables import NetworkRow, PortRow
from vimkit.store.group_commit import Demand
from vimkit.store.repository import group_of
from vimkit.domain.performance import PerformanceService
from vimkit.infra import load_inventory
from vimkit.logging import configure_logging
from vimkit.placement import PlacementConfig, Strategy
from vimkit.notify.callbacks import AddressPolicy, TokenCache
from vimkit.notify.dispatcher import Dispatcher, DispatchSettings
from vimkit.notify.filters import NOTIFICATION_TYPES
from vimkit.notify.secrets import SecretBox
from vimkit.notify.workers import DeliveryWorkers
from vimkit.notify.subscriptions import SubscriptionService
from vimkit.store.db import Database
from vimkit.store.idempotency import IdempotencyStore
from vimkit.store.migrate import upgrade

log = logging.getLogger("vimkit")


@dataclass
class Services:
    settings: Settings
    database: Database
    tokens: TokenService
    consumers: ConsumerService
    flavours: FlavourService
    idempotency: IdempotencyStore
    demo_credentials: NewConsumer | None = field(default=None)
    rate_limiter: RateLimiter = field(default_factory=RateLimiter.disabled)
    audit: AuditLog | None = field(default=None)
    subscriptions: SubscriptionService | None = field(default=None)
    infrastructure: InfrastructureService | None = field(default=None)
    alarms: AlarmService | None = field(default=None)
    storage: StorageService | None = field(default=None)
    network: NetworkService | None = field(default=None)
    compute: ComputeService | None = field(default=None)
    performance: PerformanceService | None = field(default=None)
    images: ImageService | None = field(default=None)
    dispatcher: Dispatcher | None = field(default=None)
    # The write requests being served (counted by the API): when lazy completions wait for company.
    demand: Demand = field(default_factory=Demand)

    def close(self) -> None:
        if self.audit is not None:
            self.audit.close()  # write what is queued while the database is still open
        self.tokens.close()
        self.database.dispose()


def build_services(settings: Settings) -> Services:
    """Open the database, bring its schema to the current version, and bootstrap it."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = Database(settings.effective_database_url)
    upgrade(database)
    keys = KeyStore(settings.data_dir, retain_seconds=settings.token_lifetime_seconds + 60)
    tokens = TokenService(keys, issuer=settings.token_issuer, audience="vimkit", lifetime_seconds=settings.token_lifetime_seconds,
                          external=ExternalIssuer.from_settings(settings))
    consumers = ConsumerService(database)
    flavours = FlavourService(database, settings.vim_id)
    services = Services(
        settings=settings,
        database=database,
        tokens=tokens,
        consumers=consumers,
        flavours=flavours,
        idempotency=IdempotencyStore(database, timedelta(hours=settings.idempotency_ttl_hours)),
    )
    services.rate_limiter = RateLimiter(settings.rate_limit_rate, settings.rate_limit_burst)
    services.audit = AuditLog(database, enabled=settings.audit_enabled)
    services.demo_credentials = consumers.bootstrap_admin(
        settings.admin_client_id, settings.admin_client_secret.get_secret_value() if settings.admin_client_secret else None
    )
    box = SecretBox.from_data_dir(
        settings.data_dir, settings.secret_key.get_secret_value() if settings.secret_key else None
    )
    policy = AddressPolicy.from_settings(settings.notify_callback_allow, settings.notify_callback_deny)
    callback_tokens = TokenCache()
    services.subscriptions = SubscriptionService(
        database, box, policy, settings.notify_request_timeout, tokens=callback_tokens
    )
    services.dispatcher = Dispatcher(
        database, box, dispatch_settings(settings), replica_id(settings), tokens=callback_tokens
    )
    inventory = load_inventory(settings.inventory_file)
    strategy = Strategy.PACK if settings.placement_strategy == "pack" else Strategy.SPREAD
    services.infrastructure = InfrastructureService(
        database, inventory, build_driver(inventory, settings), settings.vim_id, PlacementConfig(strategy=strategy)
    )
    services.infrastructure.sync.replica_id = replica_id(settings)
    services.infrastructure.load()
    services.alarms = AlarmService(
        database, settings.vim_id, dispatch_settings(settings).base_url, settings.alarm_capacity_threshold,
        timedelta(hours=settings.alarm_retention_hours),
    )
    services.infrastructure.add_event_listener(services.alarms.handle_event)
    services.dispatcher.alarms = services.alarms
    services.storage = StorageService(database, services.infrastructure, settings.vim_id)
    services.alarms.group_resolvers["VirtualStorage"] = services.storage.group_of
    services.network = NetworkService(database, services.infrastructure)
    services.compute = ComputeService(database, services.infrastructure, flavours, services.network,
                                      services.storage, settings.vim_id)
    services.compute.commits.demand = services.demand
    services.alarms.group_resolvers["VirtualCompute"] = services.compute.group_of
    services.alarms.group_resolvers["VirtualNetworkPort"] = partial(group_of, database, PortRow)
    services.alarms.group_resolvers["VirtualNetwork"] = partial(group_of, database, NetworkRow)
    services.compute.alarms = services.alarms
    services.compute.stuck_after = settings.compute_task_alarm_seconds
    services.performance = PerformanceService(database, services.infrastructure, settings,
                                              dispatch_settings(settings).base_url)
    if settings.seed_flavours:
        flavours.seed_defaults()
    services.images = ImageService(database, services.infrastructure, seed=settings.seed_flavours)
    return services


def _openapi(app: FastAPI, routers: list[APIRouter]) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title="vimkit",
        version=__version__,
        description=(
            "A VIM implementing the ETSI NFV CCM-VIM reference point. API version "
            f"{API_VERSION}. Every error is an RFC 9457 problem details document "
            "(application/problem+json). Members not defined by IFA 005 are extensions."
        ),
        routes=app.routes,
    )
    # Any operation can fail unexpectedly: a 500 problem is documented on every one (the routes
    # are added to the application directly, so no router-level default applies it).
    internal = {key: value for key, value in PROBLEM_RESPONSES[500].items() if key != "model"}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict) and "responses" in operation:
                operation["responses"].setdefault("500", internal)
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})["ProblemDetails"] = ProblemDetails.model_json_schema(
        ref_template="#/components/schemas/{model}"
    )
    for name, sub in ProblemDetails.model_json_schema(ref_template="#/components/schemas/{model}").get("$defs", {}).items():
        components["schemas"].setdefault(name, sub)
    components["schemas"]["ProblemDetails"].pop("$defs", None)
    components["securitySchemes"] = {
        "oauth2": {
            "type": "oauth2",
            "flows": {"clientCredentials": {"tokenUrl": "/oauth2/token", "scopes": {s: s for s in ALL_SCOPES}}},
        }
    }
    for route in (route for router in routers for route in router.routes):
        if not isinstance(route, VimRoute):
            continue
        scope = route.required_scope()
        if scope is None:
            continue
        for method in route.methods:
            operation = schema["paths"].get(route.path_format, {}).get(method.lower())
            if operation is not None:
                operation["security"] = [{"oauth2": [scope]}]
    for path_item in schema["paths"].values():
        for operation in path_item.values():
            for response in operation.get("responses", {}).values():
                content = response.get("content", {})
                if "application/json" in content and "application/problem+json" in content:
                    content.pop("application/json")
    app.openapi_schema = schema
    return schema


def dispatch_settings(settings: Settings) -> DispatchSettings:
    return DispatchSettings(
        base_url=(settings.public_url or f"http://{settings.host}:{settings.port}").rstrip("/"),
        vim_id=settings.vim_id,
        request_timeout=settings.notify_request_timeout,
        backoff_base=settings.notify_backoff_base,
        backoff_cap=settings.notify_backoff_cap,
        give_up_after=settings.notify_give_up_seconds,
        concurrency=settings.notify_concurrency,
        retention_seconds=settings.notify_retention_seconds,
        poll_interval=settings.notify_poll_interval,
    )


def replica_id(settings: Settings) -> str:
    """Stable across restarts (kept in the data directory), so a restarted replica resumes its leases."""
    if settings.replica_id:
        return settings.replica_id
    path = settings.data_dir / "replica.id"
    if not path.exists():
        path.write_text(f"replica-{uuid.uuid4().hex[:12]}")
    return path.read_text().strip()


# Python's default (a young-generation collection every 700 new container objects, a full one
# every hundred of those) meant full collections of a heap holding thousands of resources every
# second or so under load, each stopping every request for tens of milliseconds: they were the
# p99 of an allocation under light load (100–140 ms; 23–37 ms with these settings, same code).
GC_THRESHOLDS = (50_000, 10, 10)


def _tune_garbage_collector() -> None:
    """What exists once the server has started (modules, routes, schemas, the inventory) lives as
    long as the process: freeze it out of every later collection, and collect less often."""
    gc.collect()
    gc.freeze()
    if gc.get_threshold()[0] < GC_THRESHOLDS[0]:
        gc.set_threshold(*GC_THRESHOLDS)


async def _refresh_planner_statistics(database: Database) -> None:
    try:
        await asyncio.to_thread(database.refresh_planner_statistics)
    except Exception:  # noqa: BLE001 - stale statistics cost speed, not correctness
        log.exception("could not refresh the query planner statistics")


async def _keep_planner_statistics(database: Database, interval: float) -> None:
    """Refresh SQLite's planner statistics every ``interval`` seconds (the tables grow and shrink
    while the server runs; see :meth:`Database.refresh_planner_statistics`)."""
    while True:
        await asyncio.sleep(interval)
        await _refresh_planner_statistics(database)


def _telemetry_options(settings: Settings) -> dict[str, Any]:
    """FastAPI's native OpenTelemetry support (FastAPI 0.16x), on only when asked for.

    Left on by default it asks OpenTelemetry on every request whether a tracer, meter or logger
    provider is configured (about 10 µs a request) even when none is; vimkit's own metrics are
    Prometheus counters (``/metrics``).
    """
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    wanted = settings.otel_telemetry
    return {"telemetry": {"tracing": wanted, "metrics": wanted, "logs": wanted}}


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    services = app.state.services
    statistics: asyncio.Task[None] | None = None
    if services.database.dialect == "sqlite":
        await _refresh_planner_statistics(services.database)
        statistics = asyncio.create_task(
            _keep_planner_statistics(services.database, services.settings.sqlite_analyze_interval))
    alarm_checks: asyncio.Task[None] | None = None
    capacity_announcer: asyncio.Task[None] | None = None
    if services.infrastructure is not None:
        await services.infrastructure.start()
        if services.alarms is not None:
            faults = host_faults(services.infrastructure.driver.faults())
            await asyncio.to_thread(services.alarms.rebuild, faults)
            await asyncio.to_thread(services.infrastructure.remember_capacity)
            capacity_announcer = asyncio.create_task(
                services.infrastructure.announce_capacity_changes(services.settings.capacity_notify_interval))
            alarm_checks = asyncio.create_task(
                services.alarms.run(services.infrastructure, services.settings.alarm_check_interval)
            )
    if services.compute is not None:
        await services.compute.recover()
    delivery: Dispatcher | DeliveryWorkers | None = services.dispatcher
    if delivery is not None and services.settings.notify_workers > 0:  # delivery in processes of its own
        delivery = DeliveryWorkers(services.settings, services.dispatcher)
    if delivery is not None:
        await delivery.start()
    if services.performance is not None:
        await services.performance.start()
    _tune_garbage_collector()
    try:
        yield
    finally:
        if services.performance is not None:
            await services.performance.stop()
        for background in (alarm_checks, capacity_announcer, statistics):
            if background is not None:
                background.cancel()
                await asyncio.gather(background, return_exceptions=True)
        if services.compute is not None:
            await services.compute.stop()
        if delivery is not None:
            await delivery.stop()
        if services.infrastructure is not None:
            await services.infrastructure.stop()


def create_app(settings: Settings, services: Services | None = None) -> FastAPI:
    configure_logging(settings)
    services = services or build_services(settings)
    app = FastAPI(
        title="vimkit",
        version=__version__,
        lifespan=_lifespan,
        default_response_class=FastJSONResponse,
        docs_url="/docs",
        redoc_url=None,
        responses={500: PROBLEM_RESPONSES[500]},
        **_telemetry_options(settings),
    )
    app.state.services = services
    install_problem_handlers(app)
    app.add_middleware(ConventionsMiddleware, max_body_bytes=settings.max_body_bytes, demand=services.demand)
    if services.rate_limiter.enabled:
        app.add_middleware(RateLimitHeadersMiddleware)
    if services.audit is not None and services.audit.enabled:
        app.add_middleware(AuditMiddleware, audit=services.audit)  # outermost: sees every answer
    routers = [health.router, oauth.router, versions.build_router(), compute.router, admin.router,
               admin_infra.router, compute_info.router, faults.router]
    routers += [storage.router, storage_info.router]
    routers += [network.router, network_info.router]
    routers += [computes.router]
    routers += [performance.router, performance.metrics_router]
    routers += [image_routes.router]
    routers += [subscriptions.build_router(api) for api in NOTIFICATION_TYPES]
    # The routes go straight into the application's router: FastAPI 0.16x wraps an included
    # router in an _IncludedRouter that rebuilds route contexts on every request, which took a
    # tenth of the CPU of a small request. Each APIRouter has already applied its prefix,
    # dependencies and responses to its routes, so nothing else is lost.
    for router in routers:
        app.router.routes.extend(router.routes)
    app.state.route_table = [route for router in routers for route in router.routes]
    install_route_index(app.router)
    app.openapi = lambda: _openapi(app, routers)  # type: ignore[method-assign]
    return app
