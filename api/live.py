"""Live fan-out: one reader per API process follows the KPI stream in Redis and hands each update
to the websocket clients whose scope it touches. Each client has a bounded queue: a client that
does not read is dropped, nobody else waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aredis

from core import bus

log = logging.getLogger("ioc.api.live")
CLIENT_QUEUE = 256


@dataclass(eq=False)
class LiveClient:
    scope: frozenset[str]
    channels: set[str] = field(default_factory=set)
    queue: asyncio.Queue[dict[str, Any]] = field(
        default_factory=lambda: asyncio.Queue(CLIENT_QUEUE)
    )
    dropped: bool = False


class Hub:
    def __init__(self, redis: aredis.Redis, keys: bus.Keys) -> None:
        self.redis = redis
        self.keys = keys
        self.clients: set[LiveClient] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name="live-hub")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def deliver(self, message: dict[str, Any]) -> None:
        """Send one KPI stream message to every subscribed client, cut to its scope."""
        for c in list(self.clients):
            if "kpi" not in c.channels or c.dropped:
                continue
            values = {u: v for u, v in message["values"].items() if u in c.scope}
            if not values:
                continue
            out = {
                "type": "delta",
                "channel": "kpi",
                "seq": message["seq"],
                "kpi": message["kpi"],
                "ts": message["ts"],
                "values": values,
            }
            try:
                c.queue.put_nowait(out)
            except asyncio.QueueFull:
                c.dropped = True
                log.warning("dropping a websocket client that does not read")

    async def _follow(self) -> None:
        last_id = "$"
        while True:
            try:
                resp = await self.redis.xread(
                    {self.keys.kpi_stream: last_id}, block=1000, count=200
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("bus read failed (%s); retrying", exc)
                await asyncio.sleep(1)
                continue
            for _stream, entries in resp or []:
                for entry_id, fields in entries:
                    last_id = entry_id
                    self.deliver(bus.decode_entry(fields))

    async def kpi_snapshot(self, scope: frozenset[str]) -> dict[str, Any]:
        import orjson

        raw = await self.redis.hgetall(self.keys.kpi_latest)
        seq = int(await self.redis.get(self.keys("seq", "kpi")) or 0)
        values: dict[str, dict[str, Any]] = {}
        for k, v in raw.items():
            kpi, _, unit = k.decode().partition(":")
            if unit in scope:
                values.setdefault(kpi, {})[unit] = orjson.loads(v)["value"]
        return {"type": "snapshot", "channel": "kpi", "seq": seq, "kpis": values}
