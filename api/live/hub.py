"""Live fan-out. One reader per API process follows the bus streams in Redis (KPI, camera events,
source events, incidents) and hands each entry to the websocket clients subscribed to the matching
channel, cut to each client's scope. Redis Streams are the shared, bounded history: every API
process reads the same entries with the same ids, so a client may reconnect to any process and
resume from the last entry id (its per-channel `seq`) it received.

Each client has a bounded frame buffer. A client that does not read fills it and is dropped
without slowing anyone: nothing here ever awaits one client on another's behalf. KPI updates are
merged per client and sent at most every `KPI_INTERVAL_S`, so a burst of changes costs a few
frames a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aredis

from api.deps import Caller
from api.live import views
from api.live.views import ZERO, parse_id
from api.sources.service import health_of, last_seen, site_sources
from core import bus
from core.site import Site

log = logging.getLogger("ioc.api.live")

KPI_INTERVAL_S = 0.25
MAX_REPLAY = 2000
SNAPSHOT_EVENTS = 20
INCIDENT_WINDOW = 2000
ROOM_TIMEOUT_S = 10.0

CHANNELS = ("kpi", "camera", "health", "incidents", "assignments")
CHANNEL_ROLES = {
    "kpi": ("admin", "operator", "leader", "field"),
    "camera": ("admin", "operator", "leader"),
    "health": ("admin", "operator", "leader"),
    "incidents": ("admin", "operator", "leader"),
    "assignments": ("admin", "operator", "leader", "field"),
}


def channel_streams(keys: bus.Keys) -> dict[str, str]:
    """Which Redis Stream carries each channel."""
    return {
        "kpi": keys.kpi_stream,
        "camera": keys("stream", "camera_events"),
        "health": keys("stream", "events"),
        "incidents": keys("stream", "incidents"),
        "assignments": keys("stream", "incidents"),
    }


@dataclass(eq=False)
class Sub:
    last: tuple[int, int] = (0, 0)
    holding: list[tuple[tuple[int, int], str, dict[str, Any]]] | None = None


@dataclass(eq=False)
class LiveClient:
    caller: Caller
    max_frames: int
    camera_units: dict[str, str]
    subs: dict[str, Sub] = field(default_factory=dict)
    frames: deque[str] = field(default_factory=deque)
    kpi_acc: dict[str, dict[str, Any]] = field(default_factory=dict)
    kpi_seq: str = ZERO
    kpi_flushed: float = 0.0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    room: asyncio.Event = field(default_factory=asyncio.Event)
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: str | None = None
    sent: int = 0
    visible: int = 0  # bus entries that had something for this client

    # ------------------------------------------------------------------ queueing
    def push(self, frame: dict[str, Any]) -> None:
        if self.dropped:
            return
        self.frames.append(orjson.dumps(frame).decode())
        self.wake.set()
        if len(self.frames) > self.max_frames:
            self.drop("buffer_full")

    def drop(self, reason: str) -> None:
        """Free everything queued for this client and tell its connection to close."""
        if self.dropped:
            return
        self.dropped = reason
        self.frames.clear()
        self.kpi_acc.clear()
        for s in self.subs.values():
            s.holding = None
        self.wake.set()
        self.room.set()
        self.gone.set()

    def take_kpi(self) -> str:
        frame = {
            "type": "delta",
            "channel": "kpi",
            "seq": self.kpi_seq,
            "ts": time.time(),
            "kpis": self.kpi_acc,
        }
        self.kpi_acc = {}
        return orjson.dumps(frame).decode()

    # ------------------------------------------------------------------ delivery
    def offer(self, channel: str, eid_t: tuple[int, int], eid: str, msg: dict[str, Any]) -> None:
        """One bus entry for one subscribed channel: buffer it while a snapshot or replay is
        being prepared, skip what was already sent, else queue what the client may see."""
        sub = self.subs.get(channel)
        if sub is None or self.dropped:
            return
        if sub.holding is not None:
            sub.holding.append((eid_t, eid, msg))
            if len(sub.holding) > self.max_frames * 4:
                self.drop("buffer_full")
            return
        self.deliver(channel, sub, eid_t, eid, msg)

    def deliver(
        self, channel: str, sub: Sub, eid_t: tuple[int, int], eid: str, msg: dict[str, Any]
    ) -> None:
        if eid_t <= sub.last or self.dropped:
            return
        sub.last = eid_t
        if self._view(channel, eid, msg):
            self.visible += 1

    def _view(self, channel: str, eid: str, msg: dict[str, Any]) -> bool:
        c = self.caller
        if channel == "kpi":
            v = views.kpi_view(msg, c.scope)
            if v:
                for kpi, values in v.items():
                    self.kpi_acc.setdefault(kpi, {}).update(values)
                self.kpi_seq = eid
                self.wake.set()
            return bool(v)
        body: dict[str, Any] | None
        if channel == "camera":
            body = views.camera_view(msg, self.camera_units, c.scope)
            field_ = "event"
        elif channel == "health":
            body = views.health_view(msg, c.scope)
            field_ = "sources"
        elif channel == "incidents":
            body = views.incident_view(msg, c.scope)
            field_ = "incident"
        else:
            body = views.assignment_view(msg, c.username)
            field_ = "incident"
        if body:
            self.push({"type": "delta", "channel": channel, "seq": eid, field_: body})
        return bool(body)


class Hub:
    def __init__(
        self,
        redis: aredis.Redis,
        keys: bus.Keys,
        site: Site,
        on_entry: Callable[[str, dict[str, Any]], None] | None = None,
        open_incidents: Callable[[], Awaitable[list[dict[str, Any]] | None]] | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.site = site
        self.streams = channel_streams(keys)
        self.camera_units = {c.id: c.org_unit for c in site.cameras}
        self.clients: set[LiveClient] = set()
        self.on_entry = on_entry
        self.open_incidents = open_incidents
        self.entries = 0
        self.running = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name="live-hub")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def client(self, caller: Caller, max_frames: int) -> LiveClient:
        c = LiveClient(caller=caller, max_frames=max_frames, camera_units=self.camera_units)
        self.clients.add(c)
        return c

    # ------------------------------------------------------------------ reading the bus
    async def _last_id(self, stream: str) -> str:
        last = await self.redis.xrevrange(stream, "+", "-", count=1)
        return last[0][0].decode() if last else ZERO

    async def _follow(self) -> None:
        by_stream: dict[str, list[str]] = {}
        for ch, s in self.streams.items():
            by_stream.setdefault(s, []).append(ch)
        ids: dict[str, str] = {}
        while not ids:
            try:
                for s in by_stream:
                    ids[s] = await self._last_id(s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                ids = {}
                log.warning("bus not reachable (%s); retrying", exc)
                await asyncio.sleep(1)
        self.running = True
        while True:
            try:
                resp = await self.redis.xread(ids, block=1000, count=500)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("bus read failed (%s); retrying", exc)
                await asyncio.sleep(1)
                continue
            for stream_b, entries in resp or []:
                stream = stream_b.decode()
                for eid_b, fields in entries:
                    eid = eid_b.decode()
                    ids[stream] = eid
                    try:
                        msg = bus.decode_entry(fields)
                    except (KeyError, orjson.JSONDecodeError):
                        log.warning("skipping a malformed entry %s on %s", eid, stream)
                        continue
                    self.entries += 1
                    eid_t = parse_id(eid)
                    for ch in by_stream[stream]:
                        if self.on_entry:
                            self.on_entry(ch, msg)
                        for c in list(self.clients):
                            c.offer(ch, eid_t, eid, msg)

    # ------------------------------------------------------------------ subscribing
    async def subscribe(self, client: LiveClient, channel: str, resume: str | None) -> None:
        """Start a channel for a client: replay from `resume` when the bus still holds it, else
        a fresh snapshot; live entries that arrive meanwhile are held and sent after."""
        sub = Sub(holding=[])
        client.subs[channel] = sub
        if channel == "kpi":
            client.kpi_acc = {}
        reason = None
        try:
            if resume is not None:
                if await self._replay(client, channel, sub, resume):
                    return
                reason = "resume_unavailable"
            seq = await self._last_id(self.streams[channel])
            frame = await self.snapshot(client, channel)
            frame.update(type="snapshot", channel=channel, seq=seq)
            if reason:
                frame["reason"] = reason
            sub.last = parse_id(seq)
            client.push(frame)
        finally:
            held, sub.holding = sub.holding, None
            for eid_t, eid, msg in held or []:
                client.offer(channel, eid_t, eid, msg)

    async def _replay(self, client: LiveClient, channel: str, sub: Sub, resume: str) -> bool:
        if not views.STREAM_ID.match(resume):
            return False
        stream = self.streams[channel]
        first = await self.redis.xrange(stream, "-", "+", count=1)
        if not first:
            return False
        want, oldest, newest = parse_id(resume), parse_id(first[0][0].decode()), None
        if want < oldest:
            return False  # entries after it may have been trimmed: a snapshot is exact
        entries = await self.redis.xrange(stream, "(" + resume, "+", count=MAX_REPLAY + 1)
        newest = parse_id(await self._last_id(stream))
        if len(entries) > MAX_REPLAY or want > newest:
            return False
        sub.last = want
        before = client.visible
        for eid_b, fields in entries:  # live entries keep being held until the replay is done
            eid = eid_b.decode()
            client.deliver(channel, sub, parse_id(eid), eid, bus.decode_entry(fields))
            if len(client.frames) >= client.max_frames // 2:
                await _wait_room(client)
            if client.dropped:
                return True
        client.push(
            {
                "type": "resumed",
                "channel": channel,
                "from": resume,
                "replayed": client.visible - before,
            }
        )
        return True

    async def snapshot(self, client: LiveClient, channel: str) -> dict[str, Any]:
        scope = client.caller.scope
        if channel == "kpi":
            raw = await self.redis.hgetall(self.keys.kpi_latest)
            kpis: dict[str, dict[str, Any]] = {}
            for k, v in raw.items():
                kpi, _, unit = k.decode().partition(":")
                if unit in scope:
                    kpis.setdefault(kpi, {})[unit] = orjson.loads(v)["value"]
            return {"kpis": kpis}
        if channel == "camera":
            entries = await self.redis.xrevrange(self.streams["camera"], "+", "-", count=500)
            events: list[dict[str, Any]] = []
            for eid_b, fields in entries:
                ev = views.camera_view(bus.decode_entry(fields), self.camera_units, scope)
                if ev:
                    events.append({**ev, "seq": eid_b.decode()})
                if len(events) >= SNAPSHOT_EVENTS:
                    break
            raw = await self.redis.hgetall(self.keys("camera", "status"))
            status = {
                k.decode(): orjson.loads(v)
                for k, v in raw.items()
                if self.camera_units.get(k.decode()) in scope
            }
            return {"events": events[::-1], "cameras": status}
        if channel == "health":
            seen = await last_seen(self.redis, self.keys, self.site)
            now = time.time()
            return {
                "sources": {
                    s["id"]: {
                        "health": health_of(seen.get(s["id"]), s["expected_interval_s"], now),
                        "org_unit": s["org_unit"],
                        "last_seen": seen.get(s["id"]),
                        "expected_interval_s": s["expected_interval_s"],
                    }
                    for s in site_sources(self.site)
                    if s["org_unit"] in scope
                },
                "ts": now,
            }
        entries = await self.redis.xrevrange(self.streams[channel], "+", "-", count=INCIDENT_WINDOW)
        folded = views.fold_incidents(bus.decode_entry(f) for _, f in reversed(entries))
        stored = await self.open_incidents() if self.open_incidents else None
        if stored is not None:  # the incident table is the truth; the stream adds what is newer
            folded = {**{str(i["id"]): i for i in stored}, **folded}
        if channel == "incidents":
            items = [i for i in folded.values() if i.get("org_unit") in scope]
        else:
            items = [i for i in folded.values() if i.get("assignee") == client.caller.username]
        return {"incidents": [i for i in items if i.get("status") != "closed"]}


async def _wait_room(client: LiveClient) -> None:
    """Let the sender drain half the buffer before replaying more (bounded wait)."""
    while len(client.frames) >= client.max_frames // 2 and not client.dropped:
        client.room.clear()
        try:
            await asyncio.wait_for(client.room.wait(), ROOM_TIMEOUT_S)
        except TimeoutError:
            client.drop("too_slow")
