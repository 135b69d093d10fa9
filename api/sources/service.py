"""Source health from the live state in Redis: when each source was last heard from, against the
interval it promised in the site file."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aredis

from core import bus
from core.site import Site

LATE_FACTOR = 1.5
OFFLINE_FACTOR = 3.0  # the same rule as ingest: silent for three intervals is offline


def health_of(last_seen: float | None, expected_interval_s: float, now: float) -> str:
    """'online', 'late', 'offline', or 'unknown' when the source was never heard from."""
    if last_seen is None:
        return "unknown"
    age = now - last_seen
    if age <= expected_interval_s * LATE_FACTOR + 2:
        return "online"
    if age <= expected_interval_s * OFFLINE_FACTOR + 2:
        return "late"
    return "offline"


def site_sources(site: Site) -> list[dict[str, Any]]:
    """Every source of the site, cameras included, in a stable order."""
    out = [
        {
            "id": s.id,
            "kind": s.kind,
            "org_unit": s.org_unit,
            "name": s.name,
            "lat": s.lat,
            "lon": s.lon,
            "expected_interval_s": s.expected_interval_s,
        }
        for s in site.sources
    ]
    out += [
        {
            "id": c.id,
            "kind": "camera",
            "org_unit": c.org_unit,
            "name": c.name,
            "lat": c.lat,
            "lon": c.lon,
            "expected_interval_s": 10.0,
        }
        for c in site.cameras
    ]
    return sorted(out, key=lambda s: s["id"])


async def last_seen(redis: aredis.Redis, keys: bus.Keys, site: Site) -> dict[str, float]:
    """Source id → epoch seconds of its latest message, from the latest-values hashes and, where
    ingest keeps them, the per-source health hashes."""
    out: dict[str, float] = {}
    kinds = sorted({s.kind for s in site.sources})
    pipe = redis.pipeline()
    for kind in kinds:
        pipe.hgetall(keys.latest_ts(kind))
    for s in site.sources:
        pipe.hget(keys("health", s.id), "last_seen")
    res = await pipe.execute()
    for h in res[: len(kinds)]:
        for k, v in h.items():
            out[k.decode()] = float(v)
    for s, v in zip(site.sources, res[len(kinds) :], strict=True):
        if v is not None:
            out[s.id] = max(out.get(s.id, 0.0), float(v))
    cams = await redis.hgetall(keys("camera", "status"))
    for k, _v in cams.items():
        out.setdefault(k.decode(), 0.0)
    return {k: v for k, v in out.items() if v > 0}
