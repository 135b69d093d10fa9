"""Prometheus metrics of one API process (its own registry, so several apps can live in one
test process), and the bus figures read from Redis at scrape time."""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aredis
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from core import bus

STREAMS = ("readings", "kpi", "camera_events", "events", "incidents")


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.ws_clients = Gauge("ioc_ws_clients", "Connected websocket clients", registry=r)
        self.ws_dropped = Counter(
            "ioc_ws_dropped", "Websocket clients dropped", ["reason"], registry=r
        )
        self.bus_entries = Counter(
            "ioc_live_entries", "Bus entries fanned out, per channel", ["channel"], registry=r
        )
        self.event_latency = Histogram(
            "ioc_live_event_latency_seconds",
            "From a KPI change (analytics timestamp) to the API reading it off the bus",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.http = Histogram(
            "ioc_http_request_seconds",
            "HTTP requests by route template and status",
            ["method", "route", "status"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.stream_length = Gauge(
            "ioc_bus_stream_length",
            "Entries held in a bus stream (queue depth)",
            ["stream"],
            registry=r,
        )
        self.stream_added = Gauge(
            "ioc_bus_stream_entries_added",
            "Entries ever added to a bus stream (rate() of it is the ingest rate)",
            ["stream"],
            registry=r,
        )
        self.stream_age = Gauge(
            "ioc_bus_stream_last_entry_age_seconds",
            "Age of the newest entry",
            ["stream"],
            registry=r,
        )

    def on_entry(self, channel: str, msg: dict[str, Any]) -> None:
        self.bus_entries.labels(channel).inc()
        if channel == "kpi" and isinstance(msg.get("ts"), int | float):
            self.event_latency.observe(max(0.0, time.time() - msg["ts"]))

    async def render(self, redis: aredis.Redis, keys: bus.Keys) -> bytes:
        pipe = redis.pipeline()
        for s in STREAMS:
            pipe.xinfo_stream(keys("stream", s))
        res = await pipe.execute(raise_on_error=False)
        now_ms = time.time() * 1000
        for s, info in zip(STREAMS, res, strict=True):
            if isinstance(info, Exception):
                continue  # the stream does not exist (yet)
            self.stream_length.labels(s).set(info.get("length", 0))
            if "entries-added" in info:
                self.stream_added.labels(s).set(info["entries-added"])
            last = info.get("last-generated-id") or b"0-0"
            ms = int((last.decode() if isinstance(last, bytes) else last).split("-")[0])
            if ms:
                self.stream_age.labels(s).set(max(0.0, (now_ms - ms) / 1000))
        return generate_latest(self.registry)
