"""What one client may see of one bus message, as pure functions of the message and the client's
scope. Each returns None when nothing of the message is for that client."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
ZERO = "0-0"


def parse_id(entry_id: str) -> tuple[int, int]:
    """A Redis Stream entry id as a comparable pair."""
    ms, _, n = entry_id.partition("-")
    return int(ms), int(n or 0)


def kpi_view(msg: Mapping[str, Any], scope: frozenset[str]) -> dict[str, dict[str, Any]] | None:
    """{kpi: {unit: value}} for the units of the scope."""
    values = {u: v for u, v in msg.get("values", {}).items() if u in scope}
    return {msg["kpi"]: values} if values else None


def camera_view(
    msg: Mapping[str, Any], camera_units: Mapping[str, str], scope: frozenset[str]
) -> dict[str, Any] | None:
    """A camera event (start or end) if its camera belongs to the scope."""
    unit = camera_units.get(msg.get("camera", ""))
    if unit is None or unit not in scope:
        return None
    return {**msg, "org_unit": unit}


HEALTH_KINDS = {"source_offline": "offline", "source_back": "online"}


def health_view(msg: Mapping[str, Any], scope: frozenset[str]) -> dict[str, Any] | None:
    """Source offline / back events (ingest's events stream) as {source: {health, ts, …}}."""
    out = {}
    for ev in msg.get("events", []):
        kind = HEALTH_KINDS.get(ev.get("stream", ""))
        if kind and ev.get("org_unit") in scope:
            out[ev["source_id"]] = {
                "health": kind,
                "org_unit": ev["org_unit"],
                "ts": ev.get("ts"),
                "last_seen": ev.get("last_seen", ev.get("ts")),
            }
    return out or None


def incident_view(msg: Mapping[str, Any], scope: frozenset[str]) -> dict[str, Any] | None:
    inc = msg.get("incident")
    if not isinstance(inc, dict) or inc.get("org_unit") not in scope:
        return None
    return inc


def assignment_view(msg: Mapping[str, Any], username: str) -> dict[str, Any] | None:
    """An incident change that concerns the user's own assignments (assigned now, or before)."""
    inc = msg.get("incident")
    if not isinstance(inc, dict):
        return None
    if inc.get("assignee") == username or msg.get("previous_assignee") == username:
        return inc
    return None


def fold_incidents(messages: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Latest state of each incident over a window of the incidents stream (oldest first)."""
    out: dict[str, dict[str, Any]] = {}
    for m in messages:
        inc = m.get("incident")
        if isinstance(inc, dict) and "id" in inc:
            out[str(inc["id"])] = inc
    return out
