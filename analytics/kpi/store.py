"""The KPI job's I/O: keep hourly parts up to date, compute every KPI, store current and history.

A refresh cycle recomputes only the hours that triggers marked dirty (kpi_dirty), then reads
each window as a sum of hourly rows of kpi_rollup (one indexed range scan per measure for all
windows at once), rolls the parts up the org-unit tree in Python and writes kpi_current (one
row per KPI, unit and window) and, for values that changed, the kpi_values history.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from analytics.kpi import calendar
from analytics.kpi.calendar import Window, add_working_days
from analytics.kpi.engine import (
    KpiValue,
    Parts,
    forecast,
    pace_text,
    roll_up_parts,
    status_of,
    value_of,
)
from analytics.kpi.inputs import (
    INPUTS,
    filter_expr,
    input_of,
    measure_key,
    site_measures,
    value_expr,
    where_sql,
)
from core.site import KpiFormula, KpiTarget, Measure, Site

HOUR = timedelta(hours=1)


def ensure_kpi_storage(conn: psycopg.Connection) -> None:
    """Attach the dirty-hour trigger to wifi_ap_1m where it is a table (Apache edition)."""
    row = conn.execute(
        "SELECT c.relkind FROM pg_class c WHERE c.oid = to_regclass('wifi_ap_1m')"
    ).fetchone()
    if row and row[0] in ("r", "p"):
        has = conn.execute(
            "SELECT 1 FROM pg_trigger WHERE tgname = 'wifi_ap_1m_kpi' "
            "AND tgrelid = 'wifi_ap_1m'::regclass"
        ).fetchone()
        if not has:
            conn.execute(
                "CREATE TRIGGER wifi_ap_1m_kpi AFTER INSERT OR UPDATE ON wifi_ap_1m "
                "FOR EACH ROW EXECUTE FUNCTION kpi_mark_dirty('bucket', 'wifi_ap_1m')"
            )
    conn.commit()


def _is_view(conn: psycopg.Connection, table: str) -> bool:
    row = conn.execute(
        "SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", (table,)
    ).fetchone()
    return bool(row and row[0] in ("v", "m"))


def register_measures(conn: psycopg.Connection, site: Site) -> int:
    """Backfill measures new to the database once: mark every hour of their input dirty."""
    measures = site_measures(site)
    with conn.transaction():
        known = {r[0] for r in conn.execute("SELECT measure FROM kpi_measures")}
        new = {k: m for k, m in measures.items() if k not in known}
        for key, m in new.items():
            inp = input_of(m)
            if conn.execute("SELECT to_regclass(%s)", (inp.table,)).fetchone()[0] is None:
                continue
            conn.execute(
                f"INSERT INTO kpi_dirty (input, bucket) SELECT DISTINCT %s, "  # type: ignore[arg-type]
                f"date_trunc('hour', {inp.time_col}) FROM {inp.table} ON CONFLICT DO NOTHING",
                (inp.table,),
            )
            conn.execute(
                "INSERT INTO kpi_measures (measure, input) VALUES (%s, %s)", (key, m.input)
            )
    return len(new)


def _recompute(conn: psycopg.Connection, key: str, m: Measure, hours: list[datetime]) -> int:
    inp = input_of(m)
    where, params = where_sql(m)
    val = value_expr(inp, m.value) if m.value else "1"
    hist = bool(m.bins)
    wb = f", width_bucket(({val})::float8, %s::float8[])" if hist else ""
    tcol = f"t.{inp.time_col}"
    if len(hours) <= 48:  # a few hours (the live case): one index range per hour
        src = (
            f"{inp.table} t JOIN unnest(%s::timestamptz[]) AS d(h) "
            f"ON {tcol} >= d.h AND {tcol} < d.h + INTERVAL '1 hour'"
        )
        hour_args: list[Any] = [hours]
        extra = ""
    else:  # a backfill: one range scan, keeping only the dirty hours
        src = f"{inp.table} t"
        hour_args = []
        extra = (
            f" AND {tcol} >= %s AND {tcol} < %s "
            f"AND date_trunc('hour', {tcol}) = ANY(%s::timestamptz[])"
        )
    sql = (
        f"SELECT time_bucket('1 hour', {tcol}) AS b, t.{inp.unit_col}, "
        f"count(*), coalesce(sum(({val})::float8), 0){wb} "
        f"FROM {src} WHERE {where}{extra} GROUP BY 1, 2{', 5' if hist else ''}"
    )
    tail: list[Any] = [min(hours), max(hours) + HOUR, hours] if extra else []
    args: list[Any] = ([m.bins] if hist else []) + hour_args + [*params, *tail]
    rows = conn.execute(sql, args).fetchall()  # type: ignore[arg-type]
    agg: dict[tuple[datetime, str], list[Any]] = {}
    for r in rows:
        cur = agg.setdefault((r[0], r[1]), [0, 0.0, [0] * (len(m.bins) + 1) if hist else None])
        cur[0] += r[2]
        cur[1] += r[3]
        if hist:
            cur[2][r[4]] += r[2]
    conn.execute("DELETE FROM kpi_rollup WHERE measure = %s AND bucket = ANY(%s)", (key, hours))
    if agg:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO kpi_rollup (measure, org_unit_id, bucket, n, total, hist) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                [(key, u, b, v[0], v[1], v[2]) for (b, u), v in agg.items()],
            )
    return len(agg)


def refresh_parts(
    conn: psycopg.Connection, site: Site, *, now: datetime | None = None, limit: int = 20_000
) -> int:
    """Recompute the hourly parts of every measure for the dirty hours; return hours done."""
    measures = site_measures(site)
    by_table: dict[str, list[tuple[str, Measure]]] = {}
    for key, m in measures.items():
        by_table.setdefault(input_of(m).table, []).append((key, m))
    done = 0
    for table, ms in by_table.items():
        with conn.transaction():
            if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is None:
                continue
            hours = [
                r[0]
                for r in conn.execute(
                    "DELETE FROM kpi_dirty WHERE ctid IN (SELECT ctid FROM kpi_dirty "
                    "WHERE input = %s LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING bucket",
                    (table, limit),
                )
            ]
            if _is_view(conn, table):  # continuous aggregate: no trigger, rescan recent hours
                t = (now or datetime.now(UTC)).replace(minute=0, second=0, microsecond=0)
                hours = sorted({*hours, t, t - HOUR})
            if not hours:
                continue
            for key, m in ms:
                _recompute(conn, key, m, hours)
            done += len(hours)
    return done


def fill_due_times(conn: psycopg.Connection, site: Site) -> int:
    """Give each received dossier its legal due time (working days of its procedure)."""
    with conn.transaction():
        rows = conn.execute(
            "SELECT dossier_id, procedure_code, received_at FROM dossier_state "
            "WHERE due_at IS NULL AND received_at IS NOT NULL FOR UPDATE SKIP LOCKED"
        ).fetchall()
        updates = []
        for dossier_id, code, received in rows:
            days = site.procedure_days.get(code, site.default_working_days)
            updates.append((add_working_days(received, days), days, dossier_id))
        if updates:
            with conn.cursor() as cur:
                cur.executemany(
                    "UPDATE dossier_state SET due_at = %s, due_days = %s WHERE dossier_id = %s",
                    updates,
                )
    return len(rows)


# ---------------------------------------------------------------------------- computing


def _window_parts(
    conn: psycopg.Connection, key: str, m: Measure, windows: list[Window]
) -> dict[str, dict[str, Parts]]:
    """{window: {unit: Parts}} for one measure, every window from one range scan."""
    lo = min(w.start for w in windows)
    hi = max(w.end for w in windows)
    cols, params = [], []
    for w in windows:
        cols.append(
            "coalesce(sum(n) FILTER (WHERE bucket >= %s AND bucket < %s), 0), "
            "coalesce(sum(total) FILTER (WHERE bucket >= %s AND bucket < %s), 0)"
        )
        params += [w.start, w.end, w.start, w.end]
    out: dict[str, dict[str, Parts]] = {w.name: {} for w in windows}
    rows = conn.execute(
        f"SELECT org_unit_id, {', '.join(cols)} FROM kpi_rollup "  # type: ignore[arg-type]
        "WHERE measure = %s AND bucket >= %s AND bucket < %s GROUP BY 1",
        [*params, key, lo, hi],
    ).fetchall()
    for r in rows:
        for i, w in enumerate(windows):
            out[w.name][r[0]] = Parts(float(r[1 + 2 * i]), float(r[2 + 2 * i]))
    if m.bins:
        hcols, hparams = [], []
        for w in windows:
            hcols.append("coalesce(sum(c) FILTER (WHERE bucket >= %s AND bucket < %s), 0)")
            hparams += [w.start, w.end]
        hrows = conn.execute(
            f"SELECT org_unit_id, i, {', '.join(hcols)} "  # type: ignore[arg-type]
            "FROM kpi_rollup, unnest(hist) WITH ORDINALITY AS u(c, i) "
            "WHERE measure = %s AND bucket >= %s AND bucket < %s GROUP BY 1, 2",
            [*hparams, key, lo, hi],
        ).fetchall()
        size = len(m.bins) + 1
        for r in hrows:
            for j, w in enumerate(windows):
                p = out[w.name].setdefault(r[0], Parts())
                if p.hist is None:
                    p.hist = [0.0] * size
                p.hist[int(r[1]) - 1] += float(r[2 + j])
        for w in windows:
            for p in out[w.name].values():
                if p.hist is None:
                    p.hist = [0.0] * size
    return out


def _roles(f: KpiFormula) -> dict[str, Measure]:
    if f.op == "ratio":
        assert f.numerator and f.denominator
        return {"num": f.numerator, "den": f.denominator}
    assert f.measure
    return {"m": f.measure}


def compute_rollup_kpi(
    conn: psycopg.Connection, site: Site, kpi: KpiTarget, now: datetime, windows: list[Window]
) -> list[KpiValue]:
    """Values of one rollup KPI for every org unit and window (plus its pace forecast)."""
    f = kpi.formula
    assert f is not None
    recent = calendar.window("30d", now)
    all_windows = [*windows, Window("_recent", recent.start, recent.end)]
    per_role = {
        role: {
            w: roll_up_parts(site, parts)
            for w, parts in _window_parts(conn, measure_key(m), m, all_windows).items()
        }
        for role, m in _roles(f).items()
    }
    year = now.astimezone(calendar.LOCAL).year
    additive = f.op in ("count", "sum")
    out = []
    for w in windows:
        target = kpi.target_for(year) if (not additive or w.name == "ytd") else None
        period_over = w.period_end is not None and w.end >= w.period_end
        for unit in site.units:
            parts = {role: per_role[role][w.name][unit] for role in per_role}
            value = value_of(f, parts)
            fc = None
            if w.period_end is not None and not period_over:
                recent_parts = {role: per_role[role]["_recent"][unit] for role in per_role}
                fc = forecast(f, parts, recent_parts, w.elapsed_fraction)
            detail: dict[str, Any] = {}
            if f.op == "ratio":
                detail = {"numerator": parts["num"].total if f.numerator.value else  # type: ignore[union-attr]
                          parts["num"].n, "denominator": parts["den"].total if f.denominator.value  # type: ignore[union-attr]
                          else parts["den"].n}  # fmt: skip
            elif f.op in ("avg", "percentile"):
                detail = {"count": parts["m"].n}
            if fc is not None and target is not None and w.period_end is not None:
                detail["pace"] = pace_text(kpi, fc, target, w.period_end)
            out.append(
                KpiValue(
                    kpi.id,
                    unit,
                    w.name,
                    value,
                    target,
                    status_of(kpi, target, value, fc, period_over=period_over, grows_only=additive),
                    fc,
                    w.period_end,
                    detail,
                )
            )
    return out


def _latest(conn: psycopg.Connection, m: Measure, now: datetime, fresh_s: float):
    inp = input_of(m)
    where, params = where_sql(m)
    val = value_expr(inp, m.value or "")
    rows = conn.execute(
        f"SELECT DISTINCT ON (t.{inp.source_col}) t.{inp.unit_col}, ({val})::float8 "  # type: ignore[arg-type]
        f"FROM {inp.table} t WHERE t.{inp.time_col} > %s AND t.{inp.time_col} <= %s "
        f"AND {where} ORDER BY t.{inp.source_col}, t.{inp.time_col} DESC",
        [now - timedelta(seconds=fresh_s), now, *params],
    ).fetchall()
    per_unit: dict[str, Parts] = {}
    for unit, v in rows:
        per_unit.setdefault(unit, Parts())
        per_unit[unit] += Parts(1, v)
    return per_unit


def dossier_risk(
    received_at: datetime, due_at: datetime, now: datetime, typical_s: float | None
) -> str:
    """'overdue' past the due time; 'at_risk' when the agency's typical processing time from
    receipt would end after the due time, or less than a day is left; else 'on_time'."""
    if now > due_at:
        return "overdue"
    if typical_s is not None and received_at + timedelta(seconds=typical_s) > due_at:
        return "at_risk"
    if due_at - now < timedelta(days=1):
        return "at_risk"
    return "on_time"


def open_dossiers(conn: psycopg.Connection, now: datetime) -> list[dict[str, Any]]:
    """Open dossiers with their due time, overdue flag and risk forecast per agency."""
    typical = dict(
        conn.execute(
            "SELECT agency, avg(extract(epoch FROM completed_at - received_at)) "
            "FROM dossier_state WHERE completed_at IS NOT NULL AND received_at IS NOT NULL "
            "AND completed_at > %s - INTERVAL '90 days' AND status <> 'returned' GROUP BY 1",
            (now,),
        ).fetchall()
    )
    out = []
    for d_id, unit, agency, code, received, due in conn.execute(
        "SELECT dossier_id, org_unit_id, agency, procedure_code, received_at, due_at "
        "FROM dossier_state WHERE completed_at IS NULL AND due_at IS NOT NULL "
        "AND received_at <= %s",
        (now,),
    ):
        t = typical.get(agency)
        out.append(
            {
                "dossier_id": d_id,
                "org_unit_id": unit,
                "agency": agency,
                "procedure_code": code,
                "received_at": received,
                "due_at": due,
                "overdue": now > due,
                "risk": dossier_risk(received, due, now, None if t is None else float(t)),
            }
        )
    return out


def compute_gauge(
    conn: psycopg.Connection, site: Site, kpi: KpiTarget, now: datetime
) -> list[KpiValue]:
    f = kpi.formula
    assert f is not None
    year = now.astimezone(calendar.LOCAL).year
    target = kpi.target_for(year)
    values: dict[str, float | None]
    if f.op == "latest":
        assert f.measure
        parts = roll_up_parts(site, _latest(conn, f.measure, now, f.fresh_s))
        values = {u: f.scale * p.total for u, p in parts.items()}
    elif f.op in ("overdue", "at_risk"):
        want = "overdue" if f.op == "overdue" else "at_risk"
        per_unit: dict[str, Parts] = {}
        for d in open_dossiers(conn, now):
            if d["risk"] == want:
                per_unit.setdefault(d["org_unit_id"], Parts())
                per_unit[d["org_unit_id"]] += Parts(1, 1)
        values = {u: f.scale * p.n for u, p in roll_up_parts(site, per_unit).items()}
    elif f.op == "state_share":
        values = _state_share(conn, site, f, now)
    else:
        raise ValueError(f.op)
    return [
        KpiValue(
            kpi.id,
            u,
            "now",
            v,
            target,
            status_of(kpi, target, v, None, period_over=False, grows_only=False),
        )
        for u, v in values.items()
    ]


def _state_share(
    conn: psycopg.Connection, site: Site, f: KpiFormula, now: datetime
) -> dict[str, float | None]:
    """Share of the expected units below each unit whose latest status is one of f.states."""
    m = f.measure or Measure(input="budget")
    inp = INPUTS[m.input]
    where, params = where_sql(m)
    year = now.astimezone(calendar.LOCAL).year + 1  # estimates are prepared for next year
    extra = ""
    if m.input == "budget":
        extra = " AND t.fiscal_year = %s"
        params = [*params, year]
    latest = dict(
        conn.execute(
            f"SELECT DISTINCT ON (t.{inp.unit_col}) t.{inp.unit_col}, "  # type: ignore[arg-type]
            f"({filter_expr(inp, 'status')})::text FROM {inp.table} t "
            f"WHERE t.{inp.time_col} <= %s AND {where}{extra} "
            f"ORDER BY t.{inp.unit_col}, t.{inp.time_col} DESC",
            [now, *params],
        ).fetchall()
    )
    expected = {u.id for u in site.org_units if not f.unit_kinds or u.kind in f.unit_kinds}
    out: dict[str, float | None] = {}
    for unit in site.units:
        below = site.subtree(unit) & expected
        if not below:
            out[unit] = None
            continue
        done = sum(1 for u in below if latest.get(u) in f.states)
        out[unit] = f.scale * done / len(below)
    return out


def compute_all(conn: psycopg.Connection, site: Site, now: datetime) -> list[KpiValue]:
    out: list[KpiValue] = []
    for kpi in site.all_kpis:
        f = kpi.formula
        if f is None:
            continue
        if f.gauge:
            out += compute_gauge(conn, site, kpi, now)
        else:
            windows = [calendar.window(w, now) for w in f.effective_windows()]
            out += compute_rollup_kpi(conn, site, kpi, now, windows)
    conn.commit()
    return out


def store_values(
    conn: psycopg.Connection, values: Iterable[KpiValue], now: datetime
) -> list[tuple[KpiValue, str | None]]:
    """Upsert kpi_current; append changed values to kpi_values. Returns (value, old status) for
    each value whose status changed (the input of kpi_status rules)."""
    values = list(values)
    with conn.transaction():
        old = {
            (r[0], r[1], r[2]): (r[3], r[4])
            for r in conn.execute(
                'SELECT kpi_id, org_unit_id, "window", value, status FROM kpi_current'
            )
        }
        changed, status_changes = [], []
        for v in values:
            prev = old.get((v.kpi_id, v.org_unit_id, v.window))
            if prev is None or prev[0] != v.value or prev[1] != v.status:
                changed.append(v)
            if (prev is None and v.status is not None) or (
                prev is not None and prev[1] != v.status
            ):
                status_changes.append((v, prev[1] if prev else None))  # first value counts too
        with conn.cursor() as cur:
            cur.executemany(
                """INSERT INTO kpi_current (kpi_id, org_unit_id, "window", value, target, status,
                       forecast, period_end, detail, computed_at)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                   ON CONFLICT (kpi_id, org_unit_id, "window") DO UPDATE SET
                     value = EXCLUDED.value, target = EXCLUDED.target, status = EXCLUDED.status,
                     forecast = EXCLUDED.forecast, period_end = EXCLUDED.period_end,
                     detail = EXCLUDED.detail, computed_at = EXCLUDED.computed_at""",
                [
                    (v.kpi_id, v.org_unit_id, v.window, v.value, v.target, v.status,
                     v.forecast, v.period_end, Jsonb(v.detail), now)
                    for v in values
                ],
            )  # fmt: skip
            cur.executemany(
                """INSERT INTO kpi_values (time, kpi_id, org_unit_id, "window", value, target,
                       status, forecast) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
                   ON CONFLICT DO NOTHING""",
                [
                    (now, v.kpi_id, v.org_unit_id, v.window, v.value, v.target, v.status,
                     v.forecast)
                    for v in changed
                    if v.value is not None
                ],
            )  # fmt: skip
    return status_changes


@dataclass
class CycleResult:
    hours: int
    values: int
    status_changes: list[tuple[KpiValue, str | None]]
    refresh_ms: float


def refresh_cycle(conn: psycopg.Connection, site: Site, now: datetime) -> CycleResult:
    """One KPI cycle: dirty hours → parts, due times, every KPI, stored."""
    t0 = time.perf_counter()
    register_measures(conn, site)
    hours = refresh_parts(conn, site, now=now)
    fill_due_times(conn, site)
    values = compute_all(conn, site, now)
    changes = store_values(conn, values, now)
    return CycleResult(hours, len(values), changes, (time.perf_counter() - t0) * 1000)
