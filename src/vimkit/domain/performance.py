"""Virtualised resources performance management (IFA 005 7.7, rest-binding.md §8, docs/performance.md).

PM jobs and thresholds are rows; their in-memory counterparts live in a
:class:`~vimkit.domain.pm_collect.Collector`. One collector task samples the driver once per
tick (``VIMKIT_PM_SAMPLE_INTERVAL``) for the union of the objects every active job and threshold
measures, in one batched call, and hands the samples to the collector in a worker thread.
What comes out — reports due, threshold crossings — is written here, each report as one row with
its PerformanceInformationAvailableNotification in the same transaction, each crossing with its
ThresholdCrossedNotification and the threshold's new state.

Jobs with an ``objectFilter`` (or none and no ``objectInstanceIds``: every object the owner
sees) re-select their objects at the end of each of their collection periods, so objects
allocated later join. Everything is tenant-scoped: a job only ever selects, samples into its
reports and notifies its owner's objects (an admin's job selects across groups).

The clock is injectable (``clock``; ``autorun=False`` plus :meth:`run_tick`) so that tests can
drive periods deterministically.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from prometheus_client import Counter, Histogram
from sqlalchemy import ColumnElement, and_, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vimkit.api.filters import FilterError, parse_filter
from vimkit.api.problems import ApiError, Cause, conflict, not_found
from vimkit.auth.principal import Principal
from vimkit.domain.compute import COMPUTE_SCHEMA
from vimkit.domain.pm_catalogue import CATALOGUE, COMPUTE, STORAGE, catalogue_document, resolve_metrics
from vimkit.domain.pm_collect import Collector, JobState, ReadyReport, ThresholdState, TickOutcome, report_blob
from vimkit.domain.pm_derive import align_up
from vimkit.domain.pm_export import exposition, report_entries
from vimkit.domain.storage import STORAGE_SCHEMA
from vimkit.drivers.base import DriverError, MetricColumn, sample_metric_columns
from vimkit.models.performance import PmJobCreate, ThresholdCreate
from vimkit.notify.filters import PERFORMANCE_AVAILABLE, THRESHOLD_CROSSED
from vimkit.notify.outbox import emit
from vimkit.store.compute_tables import ComputeRow
from vimkit.store.db import Database
from vimkit.store.filter_sql import compile_filter
from vimkit.store.pm_tables import PmJobRow, PmReportRow, PmThresholdRow
from vimkit.store.repository import (
    Page,
    PageRequest,
    Visibility,
    get_document,
    list_documents,
    utcnow,
    visibility_of,
)
from vimkit.store.storage_tables import StorageRow

log = logging.getLogger("vimkit.performance")

MAX_JOBS_PER_GROUP = 100
MAX_THRESHOLDS_PER_GROUP = 1000
_PURGE_EVERY_S = 60.0

TICK_SECONDS = Histogram("vimkit_pm_tick_seconds", "One collector tick: sampling, derivation and writes",
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
READY_SECONDS = Histogram("vimkit_pm_report_ready_seconds", "End of a reporting period to its report stored",
                          buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2, 5))
REPORTS = Counter("vimkit_pm_reports_total", "Performance reports stored")
CROSSINGS = Counter("vimkit_pm_threshold_crossings_total", "Threshold crossings notified", ["direction"])

# table, filter schema, and which rows are measurable when selected by filter
_SOURCES: dict[str, tuple[Any, Any, Any]] = {
    COMPUTE: (ComputeRow, COMPUTE_SCHEMA, ComputeRow.state.in_(("ALLOCATED", "UPDATING"))),
    STORAGE: (StorageRow, STORAGE_SCHEMA, None),
}


def iso(moment_ms: int | datetime) -> str:
    if isinstance(moment_ms, int):
        moment_ms = datetime.fromtimestamp(moment_ms / 1000, UTC)
    return moment_ms.isoformat().replace("+00:00", "Z")


def _epoch_ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class _Selection:
    """How a job picks its objects: whose, which ids, which filter (compiled once)."""

    def __init__(self, visibility: Visibility, ids: list[str] | None, where: ColumnElement[bool] | None) -> None:
        self.visibility = visibility
        self.ids = ids
        self.where = where

    @property
    def dynamic(self) -> bool:
        return self.ids is None


class PerformanceService:
    def __init__(self, database: Database, infrastructure: Any, settings: Any, base_url: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.database = database
        self.infra = infrastructure
        self.base_url = base_url
        self.sample_ms = max(1, round(settings.pm_sample_interval * 1000))
        self.min_collection = settings.pm_min_collection_period
        self.min_reporting = settings.pm_min_reporting_period
        self.retention = timedelta(hours=settings.pm_report_retention_hours)
        self.clock = clock
        self.autorun = True
        self.collector = Collector()
        self._selections: dict[str, _Selection] = {}
        self._object_types: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_purge = 0.0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.load)
        if self.autorun:
            self._task = asyncio.create_task(self.run(), name="vimkit-pm-collector")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _now(self) -> datetime:
        """The collector's clock as a date-time: job times must agree with the periods it closes."""
        return datetime.fromtimestamp(self.clock(), UTC)

    def load(self) -> None:
        """Bring back every unfinished job and every threshold after a (re)start. Collection
        resumes at the next whole period; a report already stored is never written again."""
        now_ms = self.now_ms()
        with self.database.write() as session:
            jobs = list(session.scalars(select(PmJobRow).where(PmJobRow.finished.is_(False))))
            for row in jobs:
                boundary = row.body.get("reportingBoundary")
                if boundary and _epoch_ms(boundary) <= now_ms:
                    self._finish(row)
            thresholds = list(session.scalars(select(PmThresholdRow)))
        for row in jobs:
            if row.finished:
                continue
            try:
                self._activate_job(row, now_ms)
            except FilterError:
                log.exception("PM job %s has a filter that no longer compiles; it collects nothing", row.id)
        for row in thresholds:
            self._activate_threshold(row, now_ms)

    # ------------------------------------------------------------------ the collector loop

    async def run(self) -> None:
        while True:
            now_ms = self.now_ms()
            due_ms = (now_ms // self.sample_ms + 1) * self.sample_ms
            await asyncio.sleep(max(0.0, due_ms / 1000 - self.clock()))
            try:
                await self.tick(due_ms)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("PM collector tick failed; continuing")

    def run_tick(self, at: float, timeout: float = 60.0) -> None:
        """Run one tick at clock time ``at`` on the server's loop and wait for it (tests)."""
        assert self._loop is not None, "start() first"
        asyncio.run_coroutine_threadsafe(self.tick(round(at * 1000)), self._loop).result(timeout)

    async def tick(self, now_ms: int) -> None:
        started = time.perf_counter()
        late = self.clock() - now_ms / 1000  # how long after the sample instant the tick began
        collector = self.collector
        if collector.active:
            columns: list[MetricColumn] = []
            if collector.sampled:
                try:
                    columns = await sample_metric_columns(self.infra.driver, collector.sampled)
                except DriverError as exc:
                    log.warning("sampling failed (%s); this tick has no samples", exc.message)
            samples = sum(len(column.values) for column in columns)
            sampled = time.perf_counter()
            outcome, derived, stored = await asyncio.to_thread(self._derive_and_store, now_ms, columns)
            dynamic = [job_id for job_id in outcome.closed_jobs
                       if job_id in self._selections and self._selections[job_id].dynamic]
            waited = 0.0
            if dynamic:
                # Not at once: right after a report its notification is fanned out and the report
                # fetched. New members only need to be in before the next tick.
                waiting = time.perf_counter()
                await asyncio.sleep(min(1.0, self.sample_ms / 5000) if outcome.reports else 0.0)
                waited = time.perf_counter() - waiting  # not the tick's work
                await asyncio.to_thread(self._refresh, dynamic)
            took = time.perf_counter() - started - waited
            TICK_SECONDS.observe(took)
            # An overrun means samples are being skipped: the interval is too short for this many objects.
            log.log(logging.WARNING if took * 1000 > self.sample_ms else logging.DEBUG,
                    "PM tick %s (began %.3f s late): %d samples in %.3f s, derived in %.3f s, %d reports and %d "
                    "crossings stored in %.3f s, %d selections refreshed; %.3f s in all", iso(now_ms), late, samples,
                    sampled - started,
                    derived - sampled, len(outcome.reports), len(outcome.crossings), stored - derived, len(dynamic),
                    took)
        if now_ms / 1000 - self._last_purge >= _PURGE_EVERY_S:
            self._last_purge = now_ms / 1000
            await asyncio.to_thread(self.purge_reports)

    def _derive_and_store(self, now_ms: int, columns: list[MetricColumn]) -> tuple[TickOutcome, float, float]:
        """Derivation and writes in one worker-thread trip (each trip back to the event loop
        between them was a wait of its own on a busy machine); returns when each part ended."""
        outcome = self.collector.ingest_columns(now_ms, columns)
        derived = time.perf_counter()
        if outcome.reports or outcome.crossings:
            self._persist(outcome)
        return outcome, derived, time.perf_counter()

    # ------------------------------------------------------------------ writing results

    def _persist(self, outcome: TickOutcome) -> None:
        for report in outcome.reports:
            try:
                self._store_report(report)
            except Exception:
                log.exception("storing the report of PM job %s failed", report.job_id)
        by_threshold: dict[str, list[Any]] = {}
        for item in outcome.crossings:
            by_threshold.setdefault(item.threshold_id, []).append(item)
        for threshold_id, items in by_threshold.items():
            try:
                self._store_crossings(threshold_id, items)
            except Exception:
                log.exception("notifying the crossings of threshold %s failed", threshold_id)

    def _store_report(self, report: ReadyReport) -> None:
        data, objects = report_blob(report, report.layout)  # before taking the write lock
        with self.database.write() as session:
            job = session.scalar(select(PmJobRow).where(PmJobRow.id == report.job_id).with_for_update())
            if job is None:  # deleted while this period was being collected
                self.collector.remove_job(report.job_id)
                return
            if report.final:
                self._finish(job)
            if not objects:
                return
            now = self._now()
            report_id = str(uuid.uuid4())
            href = f"{self.base_url}/performance/v1/pm_jobs/{report.job_id}/reports/{report_id}"
            body = {
                "reportId": report_id, "pmJobId": report.job_id, "periodStart": iso(report.start_ms),
                "periodEnd": iso(report.end_ms), "readyTime": iso(now), "objectCount": len(objects),
                "expiryTime": iso(now + self.retention),
            }
            session.add(PmReportRow(
                id=report_id, resource_group_id=report.group, created_at=now, updated_at=now, version=1, body=body,
                pm_job_id=report.job_id, period_end=datetime.fromtimestamp(report.end_ms / 1000, UTC),
                expires_at=now + self.retention, data=data,
            ))
            emit(session, api="performance", notification_type=PERFORMANCE_AVAILABLE,
                 payload={"pmJobId": report.job_id, "objectType": report.object_type, "objectInstanceIds": objects,
                          "_links": {"performanceReport": {"href": href},
                                     "pmJob": {"href": f"{self.base_url}/performance/v1/pm_jobs/{report.job_id}"}}},
                 audience=[report.group], resource_id=report.job_id, pmJobId=report.job_id,
                 objectInstanceIds=objects)
            try:
                session.flush()
            except IntegrityError:
                session.rollback()
                log.info("report of PM job %s ending %s exists already", report.job_id, iso(report.end_ms))
                return
        REPORTS.inc()
        ready = self.clock() - report.end_ms / 1000
        READY_SECONDS.observe(max(0.0, ready))
        log.debug("PM report of job %s ending %s committed %.3f s after the period end", report.job_id,
                  iso(report.end_ms), ready)

    def _store_crossings(self, threshold_id: str, items: list[Any]) -> None:
        with self.database.write() as session:
            row = session.scalar(select(PmThresholdRow).where(PmThresholdRow.id == threshold_id).with_for_update())
            if row is None:
                return
            row.crossing_state = dict(items[-1].states)
            for item in items:
                payload = {
                    "thresholdId": threshold_id, "crossingDirection": item.direction, "objectType": item.object_type,
                    "objectInstanceId": item.object_id, "performanceMetric": item.measurement,
                    "performanceValue": item.value, "periodEnd": iso(item.at_ms),
                    "_links": {"threshold": {"href": f"{self.base_url}/performance/v1/thresholds/{threshold_id}"}},
                }
                if item.sub_object_id is not None:
                    payload["subObjectInstanceId"] = item.sub_object_id
                emit(session, api="performance", notification_type=THRESHOLD_CROSSED, payload=payload,
                     audience=[item.group], resource_id=item.object_id, thresholdId=threshold_id,
                     objectInstanceIds=[item.object_id])
                CROSSINGS.labels(item.direction).inc()

    def _finish(self, row: PmJobRow) -> None:
        row.finished = True
        row.body = {**row.body, "state": "FINISHED"}
        row.version += 1
        row.updated_at = utcnow()

    def purge_reports(self) -> int:
        with self.database.write() as session:
            result = session.execute(delete(PmReportRow).where(PmReportRow.expires_at < self._now()))
        return int(result.rowcount or 0)

    # ------------------------------------------------------------------ object selection

    def _selection(self, row: PmJobRow) -> _Selection:
        body = row.body
        where = None
        if body.get("objectFilter"):
            _model, schema, _active = _SOURCES[body["objectType"]]
            where = compile_filter(parse_filter(body["objectFilter"]), schema, self.database.dialect)
        return _Selection(Visibility(row.resource_group_id, row.all_groups), body.get("objectInstanceIds"), where)

    def _select(self, session: Session, object_type: str, selection: _Selection) -> dict[str, str]:
        model, _schema, active = _SOURCES[object_type]
        query = select(model.id, model.resource_group_id).where(selection.visibility.clause(model))
        if selection.ids is not None:
            query = query.where(model.id.in_(selection.ids))
        elif active is not None:
            query = query.where(active)
        if selection.where is not None:
            query = query.where(selection.where)
        return {object_id: group for object_id, group in session.execute(query)}

    def _refresh(self, job_ids: list[str]) -> None:
        with self.database.read() as session:
            for job_id in job_ids:
                selection = self._selections.get(job_id)
                if selection is None:
                    continue
                found = self._select(session, self._object_types[job_id], selection)
                self.collector.set_members(job_id, frozenset(found), found)

    def _check_objects(self, session: Session, object_type: str, visibility: Visibility, ids: list[str]) -> None:
        """Every named object exists and is the caller's; another group's is as unknown as a missing one."""
        model = _SOURCES[object_type][0]
        known = set(session.scalars(select(model.id).where(visibility.clause(model), model.id.in_(ids))))
        problems = [(f"objectInstanceIds/{index}", f"{object_type} '{object_id}' does not exist")
                    for index, object_id in enumerate(ids) if object_id not in known]
        if problems:
            raise ApiError(400, "; ".join(f"{n}: {r}" for n, r in problems[:5]), invalid_params=problems[:100])

    def _check_period(self, name: str, value: int, minimum: int, problems: list[tuple[str, str]]) -> None:
        if value < minimum:
            problems.append((name, f"must be at least {minimum} seconds"))
        elif (value * 1000) % self.sample_ms:
            problems.append((name, f"must be a multiple of the sample interval ({self.sample_ms / 1000:g} s)"))

    # ------------------------------------------------------------------ PM jobs

    def create_job(self, principal: Principal, data: PmJobCreate) -> PmJobRow:
        object_type = data.objectType.value
        problems: list[tuple[str, str]] = []
        if not data.performanceMetric and not data.performanceMetricGroup:
            problems.append(("performanceMetric", "give performanceMetric or performanceMetricGroup"))
        measurements, metric_problems = resolve_metrics(object_type, data.performanceMetric,
                                                        data.performanceMetricGroup)
        problems += metric_problems
        self._check_period("collectionPeriod", data.collectionPeriod, self.min_collection, problems)
        if data.reportingPeriod < self.min_reporting:
            problems.append(("reportingPeriod", f"must be at least {self.min_reporting} seconds"))
        elif data.reportingPeriod % data.collectionPeriod:
            problems.append(("reportingPeriod", "must be a multiple of collectionPeriod"))
        now = self._now()
        boundary = _aware(data.reportingBoundary) if data.reportingBoundary is not None else None
        if boundary is not None and boundary <= now:
            problems.append(("reportingBoundary", "must be in the future"))
        if data.objectFilter is not None:
            try:
                compile_filter(parse_filter(data.objectFilter), _SOURCES[object_type][1], self.database.dialect)
            except FilterError as exc:
                problems.append(("objectFilter", exc.reason))
        if problems:
            raise ApiError(400, "; ".join(f"{n}: {r}" for n, r in problems[:5]), invalid_params=problems)
        job_id = str(uuid.uuid4())
        body: dict[str, Any] = {
            "pmJobId": job_id, "objectType": object_type,
            "objectInstanceIds": list(dict.fromkeys(data.objectInstanceIds)) if data.objectInstanceIds else None,
            "objectFilter": data.objectFilter, "performanceMetric": data.performanceMetric,
            "performanceMetricGroup": data.performanceMetricGroup, "collectionPeriod": data.collectionPeriod,
            "reportingPeriod": data.reportingPeriod, "reportingBoundary": iso(boundary) if boundary else None,
            "state": "ACTIVE", "resourceGroupId": principal.resource_group_id, "createdAt": iso(now),
        }
        body = {key: value for key, value in body.items() if value is not None}
        row = PmJobRow(id=job_id, resource_group_id=principal.resource_group_id, created_at=now, updated_at=now,
                       version=1, body=body, all_groups=principal.is_admin, finished=False)
        with self.database.write() as session:
            self._check_quota(session, PmJobRow, principal, MAX_JOBS_PER_GROUP, "PM jobs")
            if data.objectInstanceIds:
                self._check_objects(session, object_type, visibility_of(principal), body["objectInstanceIds"])
            session.add(row)
        self._activate_job(row, self.now_ms(), measurements)
        return row

    def _activate_job(self, row: PmJobRow, now_ms: int, measurements: tuple[str, ...] | None = None) -> None:
        body = row.body
        if measurements is None:
            measurements, _ = resolve_metrics(body["objectType"], body.get("performanceMetric"),
                                              body.get("performanceMetricGroup"))
        selection = self._selection(row)
        with self.database.read() as session:
            found = self._select(session, body["objectType"], selection)
        collection_ms = body["collectionPeriod"] * 1000
        boundary = body.get("reportingBoundary")
        boundary_ms = _epoch_ms(boundary) if boundary else None
        self._selections[row.id] = selection
        self._object_types[row.id] = body["objectType"]
        self.collector.add_job(JobState(
            row.id, row.resource_group_id, body["objectType"], measurements, collection_ms,
            body["reportingPeriod"] * 1000, align_up(now_ms, collection_ms), boundary_ms, frozenset(found),
            selection.dynamic,
        ), found)

    def _check_quota(self, session: Session, model: Any, principal: Principal, limit: int, what: str) -> None:
        count = session.scalar(select(func.count()).select_from(model)
                               .where(model.resource_group_id == principal.resource_group_id))
        if (count or 0) >= limit:
            raise conflict(f"a resource group may hold at most {limit} {what}", Cause.QUOTA_EXCEEDED)

    def list_jobs(self, principal: Principal, page: PageRequest, where: ColumnElement[bool] | None) -> Page[PmJobRow]:
        with self.database.read() as session:
            return list_documents(session, PmJobRow, visibility_of(principal), page, where)

    def get_job(self, principal: Principal, job_id: str) -> PmJobRow:
        with self.database.read() as session:
            row = get_document(session, PmJobRow, job_id, visibility_of(principal))
        if row is None:
            raise not_found("PM job", job_id)
        return row

    def delete_job(self, principal: Principal, job_id: str) -> None:
        """Delete PM Job: collection stops and the job's reports go with it."""
        with self.database.write() as session:
            row = get_document(session, PmJobRow, job_id, visibility_of(principal), for_update=True)
            if row is None:
                raise not_found("PM job", job_id)
            session.execute(delete(PmReportRow).where(PmReportRow.pm_job_id == job_id))
            session.delete(row)
        self.collector.remove_job(job_id)
        self._selections.pop(job_id, None)
        self._object_types.pop(job_id, None)

    def job_representation(self, row: PmJobRow) -> dict[str, Any]:
        href = f"{self.base_url}/performance/v1/pm_jobs/{row.id}"
        return {**row.body, "_links": {"self": {"href": href}, "reports": {"href": f"{href}/reports"}}}

    # ------------------------------------------------------------------ reports

    def list_reports(self, principal: Principal, job_id: str, page: PageRequest,
                     where: ColumnElement[bool] | None) -> Page[PmReportRow]:
        self.get_job(principal, job_id)
        of_job = PmReportRow.pm_job_id == job_id
        with self.database.read() as session:
            return list_documents(session, PmReportRow, visibility_of(principal), page,
                                  of_job if where is None else and_(of_job, where))

    def get_report(self, principal: Principal, job_id: str, report_id: str) -> tuple[PmReportRow, dict[str, Any]]:
        with self.database.read() as session:
            row = get_document(session, PmReportRow, report_id, visibility_of(principal))
        if row is None or row.pm_job_id != job_id:
            raise not_found("performance report", report_id)
        series = orjson.loads(zlib.decompress(row.data))
        document = {key: value for key, value in row.body.items() if key not in ("objectCount", "expiryTime")}
        document["entries"] = report_entries(series, iso)
        document["_links"] = self.report_links(row)
        return row, document

    def report_links(self, row: PmReportRow) -> dict[str, Any]:
        job = f"{self.base_url}/performance/v1/pm_jobs/{row.pm_job_id}"
        return {"self": {"href": f"{job}/reports/{row.id}"}, "pmJob": {"href": job}}

    # ------------------------------------------------------------------ thresholds

    def create_threshold(self, principal: Principal, data: ThresholdCreate) -> PmThresholdRow:
        object_type = data.objectType.value
        problems: list[tuple[str, str]] = []
        _measurements, metric_problems = resolve_metrics(object_type, [data.performanceMetric], None)
        problems += [("performanceMetric", reason) for _name, reason in metric_problems]
        period = data.collectionPeriod if data.collectionPeriod is not None else self._default_threshold_period()
        self._check_period("collectionPeriod", period, self.min_collection, problems)
        if problems:
            raise ApiError(400, "; ".join(f"{n}: {r}" for n, r in problems), invalid_params=problems)
        now = self._now()
        threshold_id = str(uuid.uuid4())
        body = {
            "thresholdId": threshold_id, "objectType": object_type,
            "objectInstanceIds": list(dict.fromkeys(data.objectInstanceIds)),
            "performanceMetric": data.performanceMetric, "thresholdType": data.thresholdType.value,
            "thresholdDetails": data.thresholdDetails.model_dump(mode="json"), "collectionPeriod": period,
            "resourceGroupId": principal.resource_group_id, "createdAt": iso(now),
        }
        row = PmThresholdRow(id=threshold_id, resource_group_id=principal.resource_group_id, created_at=now,
                             updated_at=now, version=1, body=body, crossing_state={})
        with self.database.write() as session:
            self._check_quota(session, PmThresholdRow, principal, MAX_THRESHOLDS_PER_GROUP, "thresholds")
            self._check_objects(session, object_type, visibility_of(principal), body["objectInstanceIds"])
            session.add(row)
        self._activate_threshold(row, self.now_ms())
        return row

    def _default_threshold_period(self) -> int:
        """The shortest collection period that is allowed: the minimum, rounded up to whole samples."""
        minimum_ms = self.min_collection * 1000
        return -(-align_up(minimum_ms, self.sample_ms) // 1000)

    def _activate_threshold(self, row: PmThresholdRow, now_ms: int) -> None:
        body = row.body
        with self.database.read() as session:
            # the ids were checked against the creator's visibility; this only looks up owners (labels)
            groups = self._select(session, body["objectType"], _Selection(
                Visibility(row.resource_group_id, all_groups=True), body["objectInstanceIds"], None))
        period_ms = body["collectionPeriod"] * 1000
        details = body["thresholdDetails"]
        self.collector.add_threshold(ThresholdState(
            row.id, row.resource_group_id, body["objectType"], body["performanceMetric"],
            float(details["thresholdValue"]), float(details.get("hysteresis") or 0.0), period_ms,
            align_up(now_ms, period_ms), frozenset(body["objectInstanceIds"]), dict(row.crossing_state or {}),
        ), groups)

    def list_thresholds(self, principal: Principal, page: PageRequest,
                        where: ColumnElement[bool] | None) -> Page[PmThresholdRow]:
        with self.database.read() as session:
            return list_documents(session, PmThresholdRow, visibility_of(principal), page, where)

    def get_threshold(self, principal: Principal, threshold_id: str) -> PmThresholdRow:
        with self.database.read() as session:
            row = get_document(session, PmThresholdRow, threshold_id, visibility_of(principal))
        if row is None:
            raise not_found("threshold", threshold_id)
        return row

    def delete_threshold(self, principal: Principal, threshold_id: str) -> None:
        with self.database.write() as session:
            row = get_document(session, PmThresholdRow, threshold_id, visibility_of(principal), for_update=True)
            if row is None:
                raise not_found("threshold", threshold_id)
            session.delete(row)
        self.collector.remove_threshold(threshold_id)

    def threshold_representation(self, row: PmThresholdRow) -> dict[str, Any]:
        return {**row.body, "_links": {"self": {"href": f"{self.base_url}/performance/v1/thresholds/{row.id}"}}}

    # ------------------------------------------------------------------ catalogue and exposition

    @staticmethod
    def catalogue() -> list[dict[str, Any]]:
        return catalogue_document()

    def exposition(self) -> str:
        return exposition(self.collector.latest_periods(), dict(self.collector.groups), CATALOGUE)
