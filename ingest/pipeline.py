"""What MQTT and the HTTP intake share: decode a batch into records and dead letters, and after
the batch is committed, publish latest values, events and source health on the bus.

Nothing here acknowledges anything: the caller commits first (store.BatchWriter), then calls
`after_commit`, then acks (MQTT) or answers (HTTP).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from core import bus
from core.settings import Settings
from core.site import Site
from ingest.decode import Accepted, Decoder, Record, Rejected, Result, WifiApReading, scrub
from ingest.health import Health, tally
from ingest.store import DeadLetter
from ingest.streams import SOURCE_BACK, SOURCE_OFFLINE

log = logging.getLogger("ioc.ingest")
EVENTS_PER_BATCH = 500


def hash_key(settings: Settings) -> bytes:
    """Key of the device-identifier hash, derived from the master secret (never stored)."""
    key = settings.mqtt_password.get_secret_value().encode()
    return hmac.new(key, b"ioc:device-hash", hashlib.sha256).digest()


@dataclass
class Decoded:
    records: list[Accepted] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    seen: list[tuple[str | None, float | None, float]] = field(default_factory=list)

    def add(
        self,
        results: list[Result],
        transport: str,
        topic: str | None,
        payload: bytes,
        arrival: float,
    ) -> None:
        for r in results:
            if isinstance(r, Rejected):
                self.dead.append(
                    DeadLetter(
                        transport, topic, r.source_id, r.reason, scrub(payload[:65536]), r.code
                    )
                )
                self.seen.append((r.source_id, None, arrival))
            else:
                self.records.append(r)
                self.seen.append((r.source_id, r.time.timestamp(), arrival))


def decode_safely(decoder: Decoder, topic: str, payload: bytes, now: datetime) -> list[Result]:
    """The decoder never raises on input (property-tested); should a bug make it raise, the
    message becomes a dead letter instead of stopping ingestion."""
    try:
        return decoder.decode_message(topic, payload, now)
    except Exception as exc:
        log.exception("decoder failed on a message of %s", topic)
        return [Rejected(f"internal error while decoding ({type(exc).__name__})", None, "internal")]


class Pipeline:
    def __init__(self, settings: Settings, site: Site, client: redis.Redis) -> None:
        self.settings = settings
        self.site = site
        self.keys = bus.Keys(settings.redis_prefix)
        self.redis = client
        self.decoder = Decoder(site, hash_key(settings))
        self.health = Health(client, self.keys, site)
        self.pending_back: list[Record] = []  # "source back" events, stored with the next batch

    def after_commit(self, d: Decoded, now: float) -> None:
        """Publish what a committed batch changed; Redis trouble never fails the batch."""
        try:
            self._publish_latest(d.records)
            self._publish_events(d.records)
            if d.dead:
                self._count_dead(d.dead)
            back = self.health.record(tally(d.seen), now)
            for sid in back:
                self.emit_health_event(sid, back=True, at=now)
        except Exception as exc:  # data is stored and acked; the live view catches up later
            log.warning("could not publish live values to Redis: %s", exc)

    # ------------------------------------------------------------------ live values
    def _publish_latest(self, records: list[Accepted]) -> None:
        per_stream: dict[str, dict[str, tuple[float, dict[str, Any]]]] = {}
        for r in records:
            if isinstance(r, WifiApReading):
                ts = r.time.timestamp()
                cur = per_stream.setdefault("wifi_ap", {})
                if r.source_id not in cur or cur[r.source_id][0] < ts:
                    cur[r.source_id] = (
                        ts,
                        {"clients": r.clients, "up": r.up, "ts": ts, "org_unit": r.org_unit_id},
                    )
            elif r.stream.latest:
                ts = r.time.timestamp()
                cur = per_stream.setdefault(r.stream.name, {})
                if r.source_id not in cur or cur[r.source_id][0] < ts:
                    cur[r.source_id] = (ts, {**r.values, "ts": ts, "org_unit": r.org_unit_id})
        for stream, latest in per_stream.items():
            if bus.set_latest_if_newer(self.redis, self.keys, stream, latest):
                bus.xadd_json(
                    self.redis,
                    self.keys.readings_stream,
                    {"stream": stream, "values": {k: v for k, (_, v) in latest.items()}},
                )

    def _publish_events(self, records: list[Accepted]) -> None:
        events = [
            {
                "stream": r.stream.name,
                "source_id": r.source_id,
                "org_unit": r.org_unit_id,
                "ts": r.time.timestamp(),
                "msg_id": r.msg_id,
                **r.values,
            }
            for r in records
            if isinstance(r, Record) and not r.stream.latest
        ]
        for i in range(0, len(events), EVENTS_PER_BATCH):
            bus.xadd_json(
                self.redis,
                self.keys("stream", "events"),
                {"events": events[i : i + EVENTS_PER_BATCH]},
            )

    def _count_dead(self, dead: list[DeadLetter]) -> None:
        pipe = self.redis.pipeline()
        for d in dead:
            pipe.hincrby(self.keys("dead_letters"), d.code, 1)
            if d.source_id:
                pipe.hincrby(self.keys("dead_letters", "by_source"), d.source_id, 1)
        pipe.execute()

    # ------------------------------------------------------------------ source events
    def health_records(self, now: float) -> list[Record]:
        """Check silence; return 'source offline' records to store (this process raised them)."""
        out = []
        at = datetime.fromtimestamp(now, UTC)
        for src, last in self.health.check_offline(now):
            values = {"last_seen": last, "silent_s": round(now - last, 1)}
            out.append(
                Record(SOURCE_OFFLINE, at, src.id, src.org_unit, f"offline-{int(last)}", values)
            )
            self._xadd_health("source_offline", src.id, src.org_unit, now, values)
        return out

    def emit_health_event(self, source_id: str, *, back: bool, at: float) -> None:
        src = self.site.source_by_id.get(source_id)
        if src is None:
            return
        self._xadd_health("source_back" if back else "source_offline", src.id, src.org_unit, at, {})
        self.pending_back.append(
            Record(
                SOURCE_BACK,
                datetime.fromtimestamp(at, UTC),
                src.id,
                src.org_unit,
                f"back-{int(at * 1000)}",
                {},
            )
        )

    def _xadd_health(self, kind: str, sid: str, unit: str, ts: float, values: dict) -> None:
        bus.xadd_json(
            self.redis,
            self.keys("stream", "events"),
            {"events": [{"stream": kind, "source_id": sid, "org_unit": unit, "ts": ts, **values}]},
        )
