"""Rules against the data: feeds each rule's observations to the pure engine and turns its
actions into incidents. Called by the operations job every cycle with the cycle's clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from analytics.kpi.engine import KpiValue
from analytics.kpi.inputs import input_of, value_expr, where_sql
from analytics.ops import rules as eng
from analytics.ops.incidents import auto_resolve, open_incident, place_of, touch
from core.site import Rule, Site


def _load(conn: psycopg.Connection, rule: Rule, key: str) -> eng.RuleState:
    row = conn.execute(
        "SELECT state FROM rule_state WHERE rule_id = %s AND key = %s", (rule.id, key)
    ).fetchone()
    return eng.RuleState.from_json(row[0] if row else None)


def _save(conn: psycopg.Connection, rule: Rule, key: str, st: Any, now: datetime) -> None:
    data = st.to_json() if isinstance(st, eng.RuleState) else st
    conn.execute(
        "INSERT INTO rule_state (rule_id, key, state, updated_at) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (rule_id, key) DO UPDATE SET state = EXCLUDED.state, "
        "updated_at = EXCLUDED.updated_at",
        (rule.id, key, Jsonb(data), now),
    )
    conn.commit()


def apply_actions(
    conn: psycopg.Connection,
    site: Site,
    rule: Rule,
    actions: list[eng.Action],
    where: str | None,
    default_unit: str,
    title: str | None = None,
) -> list[tuple[str, int | None, str]]:
    """Incidents from actions: (action, incident id, outcome)."""
    out = []
    place = place_of(site, where, default_unit)
    for a in actions:
        at = datetime.fromtimestamp(a.at, UTC)
        if a.kind == "fire":
            iid, what = open_incident(
                conn, site, rule, a.key, place, at, title=title, evidence=a.evidence
            )
            out.append(("fire", iid, what))
        elif a.kind == "touch":
            touch(conn, rule, a.key, at)
        elif a.kind == "clear":
            out.append(("clear", auto_resolve(conn, rule, a.key, at), "resolved"))
    return out


def observe(
    conn: psycopg.Connection,
    site: Site,
    rule: Rule,
    key: str,
    t: datetime,
    *,
    value: float | None = None,
    cond: bool | None = None,
    history: list[float] | None = None,
    last_seen: float | None = None,
    expected_s: float = 60.0,
    where: str | None = None,
    title: str | None = None,
    evidence: dict | None = None,
) -> list[tuple[str, int | None, str]]:
    """One observation of one key of a rule, persisted state and incidents included."""
    st = _load(conn, rule, key)
    now = t.timestamp()
    if rule.kind in ("threshold", "rate_of_change"):
        assert value is not None
        st, actions = eng.observe_value(rule, st, key, value, now, evidence)
    elif rule.kind == "anomaly":
        assert value is not None
        st, actions = eng.observe_anomaly(rule, st, key, value, history or [], now)
    elif rule.kind == "silence":
        st, actions = eng.observe_silence(rule, st, key, last_seen, expected_s, now)
    else:
        st, actions = eng.step(rule, st, key, bool(cond), now, value, evidence)
    out = apply_actions(conn, site, rule, actions, where or key, site.org_units[0].id, title)
    if any(o[2] == "silenced" for o in out):
        st.firing = False  # fire again when the silence is over and the condition still holds
    _save(conn, rule, key, st, t)
    return out


# ---------------------------------------------------------------------------- feeds


def _cursor(conn: psycopg.Connection, rule: Rule, default: datetime) -> datetime:
    row = conn.execute(
        "SELECT state->>'t' FROM rule_state WHERE rule_id = %s AND key = '_cursor'", (rule.id,)
    ).fetchone()
    return datetime.fromisoformat(row[0]) if row and row[0] else default


def eval_signal(conn: psycopg.Connection, site: Site, rule: Rule, now: datetime) -> list:
    """Threshold / rate of change: every new reading of the signal since the last cycle."""
    assert rule.signal and rule.signal.value
    inp = input_of(rule.signal)
    where, params = where_sql(rule.signal)
    since = _cursor(conn, rule, now - timedelta(minutes=10))
    rows = conn.execute(
        f"SELECT t.{inp.time_col}, t.{inp.source_col}, "  # type: ignore[arg-type]
        f"({value_expr(inp, rule.signal.value)})::float8 FROM {inp.table} t "
        f"WHERE t.{inp.time_col} > %s AND t.{inp.time_col} <= %s AND {where} "
        f"ORDER BY t.{inp.time_col}",
        [since, now, *params],
    ).fetchall()
    conn.commit()
    out = []
    for t, source, v in rows:
        if rule.sources and source not in rule.sources:
            continue
        out += observe(conn, site, rule, source, t, value=v, evidence={"source": source})
    if rows:
        _save(conn, rule, "_cursor", {"t": rows[-1][0].isoformat()}, now)
    return out


ANOMALY_EVERY_S = 300.0


def eval_anomaly(conn: psycopg.Connection, site: Site, rule: Rule, now: datetime) -> list:
    """The last hour's mean per source against the same hour of the previous weeks.

    Reads only those hour-long ranges (indexed on time), at most every ANOMALY_EVERY_S."""
    assert rule.signal and rule.signal.value
    last = _cursor(conn, rule, datetime.min.replace(tzinfo=UTC))
    if (now - last).total_seconds() < ANOMALY_EVERY_S and last <= now:
        return []
    inp = input_of(rule.signal)
    where, params = where_sql(rule.signal)
    tcol = f"t.{inp.time_col}"
    cols, args, ranges, rargs = [], [], [], []
    for k in range(rule.weeks + 1):
        end = now - timedelta(days=7 * k)
        cols.append(f"avg(v) FILTER (WHERE tm > %s AND tm <= %s) AS w{k}")
        args += [end - timedelta(hours=1), end]
        ranges.append(f"({tcol} > %s AND {tcol} <= %s)")
        rargs += [end - timedelta(hours=1), end]
    rows = conn.execute(
        f"SELECT src, {', '.join(cols)} FROM (SELECT t.{inp.source_col} AS src, "  # type: ignore[arg-type]
        f"{tcol} AS tm, ({value_expr(inp, rule.signal.value)})::float8 AS v "
        f"FROM {inp.table} t WHERE ({' OR '.join(ranges)}) AND {where}) x GROUP BY src",
        [*args, *rargs, *params],
    ).fetchall()
    conn.commit()
    out = []
    for r in rows:
        src, current, hist = r[0], r[1], [h for h in r[2:] if h is not None]
        if current is None or len(hist) < 2 or (rule.sources and src not in rule.sources):
            continue
        out += observe(conn, site, rule, src, now, value=current, history=hist)
    _save(conn, rule, "_cursor", {"t": now.isoformat()}, now)
    return out


def eval_silence(
    conn: psycopg.Connection, site: Site, rule: Rule, last_seen: dict[str, float], now: datetime
) -> list:
    """Every active source against its expected interval (last seen from source health)."""
    out = []
    for s in site.sources:
        if rule.sources and s.id not in rule.sources:
            continue
        if not rule.sources and s.id not in last_seen:
            continue  # no health information for this source yet (never reported)
        out += observe(
            conn, site, rule, s.id, now, last_seen=last_seen.get(s.id),
            expected_s=s.expected_interval_s,
        )  # fmt: skip
    return out


def eval_kpi_changes(
    conn: psycopg.Connection,
    site: Site,
    rule: Rule,
    changes: list[tuple[KpiValue, str | None]],
    now: datetime,
) -> list:
    out = []
    for v, _old in changes:
        if v.kpi_id != rule.kpi:
            continue
        kpi = site.kpi_by_id[v.kpi_id]
        key = f"{v.kpi_id}:{v.org_unit_id}:{v.window}"
        title = f"{rule.name}: {kpi.name} ({v.window}) — {site.units[v.org_unit_id].name}"
        out += observe(
            conn, site, rule, key, now, cond=v.status in rule.statuses, value=v.value,
            where=v.org_unit_id, title=title,
            evidence={"kpi": v.kpi_id, "value": v.value, "target": v.target,
                      "status": v.status, "window": v.window, "forecast": v.forecast},
        )  # fmt: skip
    return out


def eval_camera(conn: psycopg.Connection, site: Site, rule: Rule, now: datetime) -> list:
    """Camera events that started (fire) or ended (clear) since the last cycle."""
    since = _cursor(conn, rule, now - timedelta(minutes=10))
    rows = conn.execute(
        "SELECT id, camera_id, zone, rule, start_at, end_at, snapshot, peak_count, best_score "
        "FROM camera_events WHERE coalesce(false_positive, false) = false "
        "AND ((start_at > %s AND start_at <= %s) OR (end_at > %s AND end_at <= %s)) "
        "ORDER BY greatest(start_at, coalesce(end_at, start_at))",
        (since, now, since, now),
    ).fetchall()
    conn.commit()
    out = []
    for eid, cam, zone, crule, start, end, snap, peak, score in rows:
        if rule.camera_rules and crule not in rule.camera_rules:
            continue
        if rule.sources and cam not in rule.sources:
            continue
        key = f"{cam}:{zone or '-'}:{crule}"
        ev = {"camera_event": eid, "snapshot": snap, "peak_count": peak, "score": score}
        if start > since:
            out += observe(conn, site, rule, key, start, cond=True, where=cam, evidence=ev)
        if end is not None and since < end <= now:
            out += observe(conn, site, rule, key, end, cond=False, where=cam, evidence=ev)
    last = max([max(r[4], r[5] or r[4]) for r in rows], default=None)
    if last is not None:
        _save(conn, rule, "_cursor", {"t": min(last, now).isoformat()}, now)
    return out


def evaluate_all(
    conn: psycopg.Connection,
    site: Site,
    now: datetime,
    *,
    last_seen: dict[str, float] | None = None,
    kpi_changes: list[tuple[KpiValue, str | None]] | None = None,
) -> list:
    out = []
    for rule in site.rules:
        if rule.kind in ("threshold", "rate_of_change"):
            out += eval_signal(conn, site, rule, now)
        elif rule.kind == "anomaly":
            out += eval_anomaly(conn, site, rule, now)
        elif rule.kind == "silence" and last_seen is not None:
            out += eval_silence(conn, site, rule, last_seen, now)
        elif rule.kind == "kpi_status" and kpi_changes:
            out += eval_kpi_changes(conn, site, rule, kpi_changes, now)
        elif rule.kind == "camera":
            out += eval_camera(conn, site, rule, now)
    return out
