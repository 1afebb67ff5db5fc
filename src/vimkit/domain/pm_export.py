"""Rendering measurements: report entries for the API and the Prometheus text exposition.

Both render from compact internal forms (a report's columnar series; the collector's latest
closed periods) only when asked, so that storing and collecting stay cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from vimkit.domain.pm_catalogue import Measurement
from vimkit.domain.pm_derive import ClosedPeriod, Key, as_number


def report_entries(series: dict[str, Any], iso: Callable[[int], str]) -> list[dict[str, Any]]:
    """PerformanceReport ``entries`` from a stored report (see ``pm_collect.report_series``)."""
    stamps = [iso(end_ms) for end_ms in series["periodEnds"]]
    object_type = series["objectType"]
    objects, subs, names = series["objects"], series["subObjects"], series["measurements"]
    columns = series["values"]
    entries = []
    for index, (object_index, sub_index, metric_index) in enumerate(
            zip(series["seriesObject"], series["seriesSub"], series["seriesMetric"])):
        entry: dict[str, Any] = {"objectType": object_type, "objectInstanceId": objects[object_index]}
        if sub_index >= 0:
            entry["subObjectInstanceId"] = subs[sub_index]
        entry["performanceMetric"] = names[metric_index]
        values = []
        for stamp, column in zip(stamps, columns):
            value = column[index]
            if value is not None:
                values.append({"timeStamp": stamp, "value": as_number(value)})
        if values:
            entry["performanceValues"] = values
            entries.append(entry)
    return entries


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def exposition(latest: Mapping[Key, ClosedPeriod], groups: Mapping[str, str],
               catalogue: Mapping[str, Measurement]) -> str:
    """Prometheus text format (0.0.4): one gauge family per measurement, labelled with the
    object, the vNIC port for network measurements, and the owning resource group."""
    by_source: dict[str, list[tuple[Key, ClosedPeriod]]] = {}
    for key, period in latest.items():
        by_source.setdefault(key[2], []).append((key, period))
    lines: list[str] = []
    for measurement in catalogue.values():
        rows = by_source.get(measurement.source.value)
        if not rows:
            continue
        name = measurement.prometheus_name
        lines.append(f"# HELP {name} {measurement.description} IFA 027 {measurement.name}, {measurement.unit}.")
        lines.append(f"# TYPE {name} gauge")
        object_type = measurement.object_type
        method = measurement.method
        for key, period in rows:
            object_id, sub_id = key[0], key[1]
            labels = f'object_type="{object_type}",object_instance_id="{_label(object_id)}"'
            if sub_id is not None:
                labels += f',sub_object_instance_id="{_label(sub_id)}"'
            group = groups.get(object_id)
            if group is not None:
                labels += f',resource_group_id="{_label(group)}"'
            lines.append(f"{name}{{{labels}}} {as_number(period.value(key, method))}")
    return "\n".join(lines) + "\n" if lines else ""
