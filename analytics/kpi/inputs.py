"""The inputs a KPI formula may name, and the SQL that turns a measure into hourly parts.

Filters and values are looked up by name in this registry, never taken as SQL from the site
file, so a site file cannot inject SQL; values given to filters are bound parameters.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from core.errors import ConfigError
from core.site import Measure, Site


@dataclass(frozen=True)
class Input:
    name: str
    table: str
    time_col: str
    unit_col: str
    source_col: str
    filters: dict[str, str] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)
    base_where: str = "true"
    json_data: bool = False  # stream_records: `data.<key>` filters and values


INPUTS: dict[str, Input] = {
    i.name: i
    for i in (
        Input(
            "dossiers",
            "dossier_events",
            "time",
            "dossier_org_unit",
            "source_id",
            filters={
                k: f"t.{k}" for k in ("event", "channel", "end_to_end", "procedure_code", "agency")
            },
        ),
        Input(
            "field_reports",
            "field_reports",
            "time",
            "org_unit_id",
            "source_id",
            filters={"status": "t.status", "category": "t.category"},
            values={
                # hours from the report's first event to this one (used on 'resolved' rows)
                "resolution_h": "extract(epoch FROM t.time - (SELECT min(f.time) FROM "
                "field_reports f WHERE f.report_id = t.report_id)) / 3600.0"
            },
        ),
        Input(
            "wifi",
            "wifi_ap_1m",
            "bucket",
            "org_unit_id",
            "source_id",
            filters={"source_id": "t.source_id"},
            values={
                "clients": "t.clients_avg",
                "up_samples": "t.up_ratio * t.samples",
                "samples": "t.samples",
            },
        ),
        Input(
            "wifi_logins",
            "wifi_logins",
            "time",
            "org_unit_id",
            "source_id",
            filters={"method": "t.method", "source_id": "t.source_id"},
        ),
        Input(
            "telemetry",
            "telemetry",
            "time",
            "org_unit_id",
            "source_id",
            filters={"metric": "t.metric", "source_id": "t.source_id"},
            values={"value": "t.value"},
        ),
        Input(
            "camera_events",
            "camera_events",
            "start_at",
            "org_unit_id",
            "camera_id",
            filters={"rule": "t.rule", "zone": "t.zone", "camera_id": "t.camera_id"},
            values={"peak_count": "t.peak_count"},
            base_where="coalesce(t.false_positive, false) = false",
        ),
        Input(
            "records",
            "stream_records",
            "time",
            "org_unit_id",
            "source_id",
            filters={"stream": "t.stream"},
            json_data=True,
        ),
        Input(
            "budget",
            "budget_status",
            "time",
            "budget_unit",
            "budget_unit",
            filters={"plan": "t.plan", "status": "t.status"},
        ),
    )
}
TABLE_INPUTS: dict[str, list[str]] = {}
for _i in INPUTS.values():
    TABLE_INPUTS.setdefault(_i.table, []).append(_i.name)


def _json_key(name: str) -> str:
    key = name.removeprefix("data.")
    if not key.replace("_", "").isalnum():
        raise ConfigError(f"bad data key '{name}'")
    return key


def input_of(m: Measure) -> Input:
    try:
        return INPUTS[m.input]
    except KeyError:
        raise ConfigError(
            f"unknown KPI input '{m.input}' (known: {', '.join(sorted(INPUTS))})"
        ) from None


def filter_expr(inp: Input, name: str) -> str:
    if name in inp.filters:
        return inp.filters[name]
    if inp.json_data and name.startswith("data."):
        return f"t.data->>'{_json_key(name)}'"
    raise ConfigError(f"input '{inp.name}' has no filter '{name}'")


def value_expr(inp: Input, name: str) -> str:
    if name in inp.values:
        return inp.values[name]
    if inp.json_data and name.startswith("data."):
        key = _json_key(name)
        return (
            f"(CASE WHEN jsonb_typeof(t.data->'{key}') = 'boolean' "
            f"THEN (t.data->>'{key}')::boolean::int::float8 "
            f"ELSE (t.data->>'{key}')::float8 END)"
        )
    raise ConfigError(f"input '{inp.name}' has no value '{name}'")


def _text(v: object) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def where_sql(m: Measure) -> tuple[str, list[list[str]]]:
    """The measure's filter as SQL over alias `t`, with one text[] parameter per key."""
    inp = input_of(m)
    parts, params = [inp.base_where], []
    for key in sorted(m.where):
        raw = m.where[key]
        values = raw if isinstance(raw, list) else [raw]
        parts.append(f"({filter_expr(inp, key)})::text = ANY(%s)")
        params.append([_text(v) for v in values])
    if m.value:
        parts.append(f"({value_expr(inp, m.value)}) IS NOT NULL")
    return " AND ".join(parts), params


def measure_key(m: Measure) -> str:
    """A stable id for a measure: KPIs with the same measure share its rollup rows."""
    desc = repr((m.input, sorted((k, repr(v)) for k, v in m.where.items()), m.value, m.bins))
    return f"{m.input}:{hashlib.sha1(desc.encode()).hexdigest()[:12]}"


def site_measures(site: Site) -> dict[str, Measure]:
    """Every rollup measure the site's KPIs use, by key (validated against the registry)."""
    out: dict[str, Measure] = {}
    for k in site.all_kpis:
        f = k.formula
        if f is None or f.gauge:
            continue
        for m in (f.measure, f.numerator, f.denominator):
            if m is not None:
                try:
                    where_sql(m)
                    if m.value:
                        value_expr(input_of(m), m.value)
                except ConfigError as exc:
                    raise ConfigError(f"site file: kpis '{k.id}': {exc}") from None
                out[measure_key(m)] = m
    return out
