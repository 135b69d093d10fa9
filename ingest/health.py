"""Source health, live in Redis: last seen, message rate, clock skew, offline/back, and a
data-quality score per source — the ministry's "đúng, đủ, sạch, sống" rule for IOC data:

- sống (alive): the source was heard from within its expected interval;
- đủ (complete): as many messages as expected in the last window;
- sạch (clean): the share of its messages that passed validation;
- đúng (right): its clock agrees with ours.

Counters are updated atomically by a Lua script after each committed batch, so several ingest
processes share one view; the offline transition is a compare-and-set, so exactly one process
raises each "source offline" (and "source back") event.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from core import bus
from core.site import Site, Source

WINDOW_S = 600  # completeness and validity look at the last 10 minutes
BUCKET_S = 60
OFFLINE_FACTOR = 3.0  # silent for 3 expected intervals = offline
SKEW_OK_S = 30.0
SKEW_BAD_S = 300.0

# KEYS: none (names built from ARGV[1], the prefix). ARGV: prefix, now, bucket, then per source
# id, ok, bad, max source ts, clock offset (arrival - source ts, smallest in the batch).
_UPDATE = """
local p, now, bucket = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local back = {}
for i = 4, #ARGV, 5 do
  local id = ARGV[i]
  local ok, bad = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local h = p .. ':health:' .. id
  local w = p .. ':health_win:' .. id
  redis.call('HINCRBY', h, 'ok', ok)
  redis.call('HINCRBY', h, 'bad', bad)
  redis.call('HINCRBY', w, 'ok:' .. bucket, ok)
  redis.call('HINCRBY', w, 'bad:' .. bucket, bad)
  redis.call('EXPIRE', w, 1200)
  local seen = tonumber(redis.call('HGET', h, 'last_seen') or '0')
  if seen < now then redis.call('HSET', h, 'last_seen', ARGV[2]) end
  if ok > 0 then
    local ts = tonumber(ARGV[i + 3])
    local cur = tonumber(redis.call('HGET', h, 'last_ts') or '0')
    if cur < ts then redis.call('HSET', h, 'last_ts', ARGV[i + 3]) end
    redis.call('HSET', h, 'skew_s', ARGV[i + 4])
  end
  if redis.call('HGET', h, 'offline') == '1' then
    redis.call('HSET', h, 'offline', '0')
    table.insert(back, id)
  end
end
return back
"""

# Mark offline only if not already: returns 1 for the one caller that made the transition.
_MARK_OFFLINE = """
if redis.call('HGET', KEYS[1], 'offline') == '1' then return 0 end
local seen = tonumber(redis.call('HGET', KEYS[1], 'last_seen') or '0')
if seen > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'offline', '1')
return 1
"""


@dataclass(frozen=True, slots=True)
class SourceTally:
    ok: int
    bad: int
    max_ts: float
    offset_s: float  # arrival minus source time, smallest of the batch


def tally(
    items: list[tuple[str | None, float | None, float]],
) -> dict[str, SourceTally]:
    """(source id, source ts or None when rejected, arrival) per message → per-source tally."""
    acc: dict[str, list[float]] = {}
    for source_id, ts, arrival in items:
        if source_id is None:
            continue
        a = acc.setdefault(source_id, [0, 0, 0.0, math.inf])
        if ts is None:
            a[1] += 1
        else:
            a[0] += 1
            a[2] = max(a[2], ts)
            a[3] = min(a[3], arrival - ts)
    return {
        k: SourceTally(int(a[0]), int(a[1]), a[2], 0.0 if a[3] == math.inf else a[3])
        for k, a in acc.items()
    }


def offline_after(src: Source) -> float:
    return src.expected_interval_s * OFFLINE_FACTOR


def quality(
    src: Source,
    *,
    now: float,
    last_seen: float | None,
    skew_s: float | None,
    ok_window: int,
    bad_window: int,
) -> dict[str, Any]:
    """The data-quality score of one source (0–100) and its four parts (each 0–1). Pure."""
    interval = src.expected_interval_s
    if last_seen is None:
        alive = 0.0
    else:
        age = now - last_seen
        alive = 1.0 if age <= 2 * interval else max(0.0, 1 - (age - 2 * interval) / interval)
    expected = WINDOW_S / interval
    total = ok_window + bad_window
    complete = min(1.0, ok_window / expected) if expected >= 1 else (1.0 if alive else 0.0)
    clean = ok_window / total if total else (1.0 if last_seen else 0.0)
    if skew_s is None:
        right = 0.0
    else:
        s = abs(skew_s)
        right = 1.0 if s <= SKEW_OK_S else max(0.0, 1 - (s - SKEW_OK_S) / (SKEW_BAD_S - SKEW_OK_S))
    parts = {"song": alive, "du": complete, "sach": clean, "dung": right}
    return {
        "score": round(100 * sum(parts.values()) / 4),
        "parts": {k: round(v, 3) for k, v in parts.items()},
        "clock_flag": skew_s is not None and abs(skew_s) > SKEW_OK_S,
    }


class Health:
    """The Redis side of source health for one prefix."""

    def __init__(self, client: redis.Redis, keys: bus.Keys, site: Site) -> None:
        self.r = client
        self.keys = keys
        self.site = site
        self._update = client.register_script(_UPDATE)
        self._mark = client.register_script(_MARK_OFFLINE)
        self.started = time.time()

    def record(self, tallies: dict[str, SourceTally], now: float) -> list[str]:
        """Apply a committed batch; return the sources that were offline and are back."""
        if not tallies:
            return []
        argv: list[Any] = [self.keys.prefix, repr(now), str(int(now // BUCKET_S))]
        for sid, t in tallies.items():
            argv += [sid, t.ok, t.bad, repr(t.max_ts), repr(round(t.offset_s, 3))]
        return [b.decode() for b in self._update(args=argv)]

    def check_offline(self, now: float) -> list[tuple[Source, float]]:
        """Sources silent past their limit that this call marked offline, with last seen."""
        out = []
        pipe = self.r.pipeline()
        for s in self.site.sources:
            pipe.hmget(self.keys("health", s.id), "last_seen", "offline")
        for s, (seen, off) in zip(self.site.sources, pipe.execute(), strict=True):
            if off == b"1":
                continue
            last = float(seen) if seen else self.started
            if now - last > offline_after(s) and self._mark(
                keys=[self.keys("health", s.id)], args=[repr(now - offline_after(s))]
            ):
                out.append((s, last))
        return out

    def snapshot(self, now: float) -> dict[str, dict[str, Any]]:
        """Health and quality of every source of the site, as the dashboard shows it."""
        pipe = self.r.pipeline()
        for s in self.site.sources:
            pipe.hgetall(self.keys("health", s.id))
            pipe.hgetall(self.keys("health_win", s.id))
        res = pipe.execute()
        out: dict[str, dict[str, Any]] = {}
        first = int((now - WINDOW_S) // BUCKET_S)
        cur = int(now // BUCKET_S)
        for i, s in enumerate(self.site.sources):
            h = {k.decode(): v.decode() for k, v in res[2 * i].items()}
            w = {k.decode(): int(v) for k, v in res[2 * i + 1].items()}
            ok_w = sum(v for k, v in w.items() if k.startswith("ok:") and int(k[3:]) > first)
            bad_w = sum(v for k, v in w.items() if k.startswith("bad:") and int(k[4:]) > first)
            last_min = w.get(f"ok:{cur - 1}", 0) + w.get(f"bad:{cur - 1}", 0)
            seen = float(h["last_seen"]) if "last_seen" in h else None
            skew = float(h["skew_s"]) if "skew_s" in h else None
            q = quality(s, now=now, last_seen=seen, skew_s=skew, ok_window=ok_w, bad_window=bad_w)
            out[s.id] = {
                "kind": s.kind,
                "org_unit": s.org_unit,
                "last_seen": seen,
                "last_ts": float(h["last_ts"]) if "last_ts" in h else None,
                "rate_per_min": last_min,
                "ok": int(h.get("ok", 0)),
                "bad": int(h.get("bad", 0)),
                "skew_s": skew,
                "offline": h.get("offline") == "1",
                **q,
            }
        return out

    def publish_snapshot(self, now: float) -> dict[str, dict[str, Any]]:
        snap = self.snapshot(now)
        if snap:
            self.r.hset(
                self.keys("health_summary"),
                mapping={k: orjson.dumps(v) for k, v in snap.items()},
            )
        return snap
