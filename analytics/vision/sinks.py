"""The I/O edges of the camera pipeline: events to TimescaleDB, events and camera status on the
Redis bus, line counts as a time series. Everything else in the package is pure or file-only."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
import redis
from psycopg.types.json import Jsonb

from analytics.vision.events import CameraEvent
from core.bus import Keys, xadd_json

_UPSERT = """
INSERT INTO camera_events (start_at, id, camera_id, org_unit_id, rule, zone, label, track_ids,
                           end_at, peak_count, best_score, model, model_version, snapshot, detail)
VALUES (%(start_at)s, %(id)s, %(camera_id)s, %(org_unit_id)s, %(rule)s, %(zone)s, %(label)s,
        %(track_ids)s, %(end_at)s, %(peak_count)s, %(best_score)s, %(model)s, %(model_version)s,
        %(snapshot)s, %(detail)s)
ON CONFLICT (id, start_at) DO UPDATE SET
    end_at = EXCLUDED.end_at, peak_count = EXCLUDED.peak_count, best_score = EXCLUDED.best_score,
    track_ids = EXCLUDED.track_ids, label = EXCLUDED.label,
    snapshot = coalesce(EXCLUDED.snapshot, camera_events.snapshot), detail = EXCLUDED.detail
"""


def event_row(ev: CameraEvent, org_unit: str) -> dict[str, Any]:
    return {
        "start_at": ev.started_at,
        "id": ev.id,
        "camera_id": ev.camera,
        "org_unit_id": org_unit,
        "rule": ev.rule,
        "zone": ev.zone,
        "label": ev.label,
        "track_ids": sorted(ev.track_ids),
        "end_at": ev.ended_at,
        "peak_count": ev.max_count,
        "best_score": ev.score,
        "model": ev.model,
        "model_version": ev.model_version,
        "snapshot": ev.snapshot,
        "detail": Jsonb(ev.detail),
    }


def store_events(conn: psycopg.Connection, events: list[tuple[CameraEvent, str]]) -> None:
    """Insert or update (when an event ends) events with their camera's org unit."""
    if not events:
        return
    with conn.cursor() as cur:
        cur.executemany(_UPSERT, [event_row(ev, unit) for ev, unit in events])


def store_counts(conn: psycopg.Connection, camera: str, counts: Counter) -> None:
    """Add line-crossing counts {(zone, direction, label, minute epoch): n} to the series."""
    rows = [
        (datetime.fromtimestamp(minute, UTC), camera, zone, direction, label, n)
        for (zone, direction, label, minute), n in counts.items()
    ]
    if rows:
        conn.cursor().executemany(
            """INSERT INTO camera_counts (time, camera_id, zone, direction, label, count)
               VALUES (%s, %s, %s, %s, %s, %s)
               ON CONFLICT (camera_id, zone, direction, label, time)
               DO UPDATE SET count = camera_counts.count + EXCLUDED.count""",
            rows,
        )


def mark_false_positive(
    conn: psycopg.Connection, event_id: str, false_positive: bool, reviewer: str
) -> bool:
    """An operator's verdict on an event; False when there is no such event."""
    cur = conn.execute(
        """UPDATE camera_events SET false_positive = %s, reviewed_by = %s, reviewed_at = now()
           WHERE id = %s""",
        (false_positive, reviewer, event_id),
    )
    return cur.rowcount > 0


def publish_event(
    client: redis.Redis,
    keys: Keys,
    ev: CameraEvent,
    phase: str,
    extra: dict[str, Any] | None = None,
) -> None:
    """``phase`` is "start" (as soon as the rule completes) or "end"."""
    xadd_json(client, keys.camera_events_stream, {"phase": phase, **ev.to_json(), **(extra or {})})


def publish_status(client: redis.Redis, keys: Keys, camera: str, state: str, reason: str) -> None:
    status = {
        "camera": camera,
        "state": state,
        "reason": reason,
        "at": datetime.now(UTC).isoformat(),
    }
    client.hset(keys.camera_status, camera, orjson.dumps(status))


def publish_activity(client: redis.Redis, keys: Keys, camera: str, beat: dict[str, Any]) -> None:
    """A camera's frame counters (``camera:stats``) and, when it processed frames since the last
    beat, the span of wall-clock time it did so and by which worker (``stream:camera_activity``)."""
    at = datetime.now(UTC).isoformat()
    counters = {k: v for k, v in beat.items() if k != "span"}
    client.hset(keys.camera_stats, camera, orjson.dumps({**counters, "at": at}))
    if beat.get("span"):
        first, last = beat["span"]
        entry = {"camera": camera, "worker": beat.get("worker"), "first": first, "last": last}
        xadd_json(client, keys.camera_activity_stream, entry)
