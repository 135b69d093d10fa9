"""`ioc ingest`: the MQTT consumer.

paho's network thread only enqueues; a writer thread takes batches (up to ``IOC_INGEST_BATCH_MAX``
messages or ``IOC_INGEST_BATCH_MS``), validates, commits, and only then acknowledges each message
to the broker (MQTT 5 manual acks). The broker's in-flight window (Receive Maximum, announced by
the client and capped by Mosquitto's ``max_inflight_messages``) bounds how many unacknowledged
messages can be in memory, so when the database is slow or down the backlog stays in the broker.
Messages received on an earlier connection are never acked on a newer one: the broker redelivers
them and the idempotency key absorbs the copy.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from core import bus, db
from core.broker import INGEST_USER
from core.errors import ServiceUnreachable
from core.migrate import check_schema
from core.mqtt import new_client
from core.settings import Settings
from core.site import Site
from core.timescale import detect_edition
from ingest.decode import Rejected, WifiApReading, decode
from ingest.store import BatchWriter, DeadLetter
from ingest.topics import subscription

log = logging.getLogger("ioc.ingest")


@dataclass(frozen=True, slots=True)
class Incoming:
    generation: int
    mid: int
    topic: str
    payload: bytes
    received: float


@dataclass
class IngestStats:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    batches: int = 0
    db_errors: int = 0


class IngestService:
    def __init__(self, settings: Settings, site: Site, *, client_id: str | None = None) -> None:
        self.settings = settings
        self.site = site
        self.keys = bus.Keys(settings.redis_prefix)
        # A stable id: a restarted process resumes its persistent session and its backlog. (A
        # random id would leave an orphan session in the shared-subscription group that keeps
        # receiving its share of the messages until it expires.)
        self.client_id = client_id or settings.ingest_client_id
        self.queue: queue.Queue[Incoming] = queue.Queue()
        self.stats = IngestStats()
        self.generation = 0
        self._stop = threading.Event()
        self._connected = threading.Event()
        self.client = self._make_client()
        self.redis = bus.connect(settings)

    # ------------------------------------------------------------------ MQTT side
    def _make_client(self) -> mqtt.Client:
        c = new_client(self.settings, INGEST_USER, self.client_id, manual_ack=True)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_disconnect = self._on_disconnect
        c.reconnect_delay_set(min_delay=1, max_delay=10)
        c.max_inflight_messages_set(100)
        return c

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("broker refused the connection: %s", reason_code)
            return
        self.generation += 1
        client.subscribe(subscription(self.settings.topic_prefix), qos=1)
        self._connected.set()
        log.info("connected to broker (session present: %s)", flags.session_present)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()
        if not self._stop.is_set():
            log.warning("disconnected from broker (%s); reconnecting", reason_code)

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        self.queue.put(Incoming(self.generation, msg.mid, msg.topic, msg.payload, time.time()))

    def connect(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 24 * 3600
        props.ReceiveMaximum = self.settings.mqtt_receive_maximum
        host, port = self.settings.mqtt_endpoint()
        try:
            self.client.connect(host, port, keepalive=30, clean_start=False, properties=props)
        except OSError as exc:
            raise ServiceUnreachable(
                f"Mosquitto is not reachable at {host}:{port} ({exc.strerror or exc}): "
                "start it with `ioc broker start`"
            ) from None
        self.client.loop_start()

    # ------------------------------------------------------------------ writer side
    def _take_batch(self) -> list[Incoming]:
        try:
            first = self.queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.settings.ingest_batch_ms / 1000
        while len(batch) < self.settings.ingest_batch_max:
            left = deadline - time.monotonic()
            try:
                batch.append(self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def process(self, writer: BatchWriter, batch: list[Incoming]) -> None:
        """Validate and commit one batch, then ack it and publish the latest values."""
        now = datetime.now(UTC)
        readings: list[WifiApReading] = []
        dead: list[DeadLetter] = []
        for m in batch:
            r = decode(m.topic, m.payload, self.site, now)
            if isinstance(r, Rejected):
                dead.append(DeadLetter("mqtt", m.topic, r.source_id, r.reason, m.payload[:65536]))
            else:
                readings.append(r)
        result = writer.write(readings, dead)
        self.stats.batches += 1
        self.stats.received += len(batch)
        self.stats.stored += result.inserted
        self.stats.duplicates += result.duplicates
        self.stats.rejected += result.rejected
        for m in batch:
            if m.generation == self.generation:
                self.client.ack(m.mid, 1)
        if dead:
            log.warning(
                "rejected %d message(s), e.g. %s: %s", len(dead), dead[0].topic, dead[0].reason
            )
        self._publish(readings)

    def _publish(self, readings: list[WifiApReading]) -> None:
        if not readings:
            return
        latest: dict[str, tuple[float, dict]] = {}
        for r in readings:
            ts = r.time.timestamp()
            if r.source_id not in latest or latest[r.source_id][0] < ts:
                latest[r.source_id] = (
                    ts,
                    {"clients": r.clients, "up": r.up, "ts": ts, "org_unit": r.org_unit_id},
                )
        try:
            changed = bus.set_latest_if_newer(self.redis, self.keys, "wifi_ap", latest)
            if changed:
                bus.xadd_json(
                    self.redis,
                    self.keys.readings_stream,
                    {"stream": "wifi_ap", "values": {k: v for k, (_, v) in latest.items()}},
                )
        except Exception as exc:  # Redis down: data is stored, live view catches up later
            log.warning("could not publish live values to Redis: %s", exc)

    def _open_writer(self, edition: str | None) -> BatchWriter | None:
        try:
            conn = db.connect(self.settings)
            return BatchWriter(conn, edition or detect_edition(conn))  # type: ignore[arg-type]
        except Exception as exc:
            log.warning("database not available (%s)", str(exc).splitlines()[0])
            return None

    def run(self, *, stop_after_idle_s: float | None = None) -> None:
        """Run until stop() (or until idle that long, for tests and benchmarks)."""
        conn = db.connect(self.settings)  # raises the one-line error when unreachable
        check_schema(conn)
        writer: BatchWriter | None = BatchWriter(conn, detect_edition(conn))
        edition = writer.edition
        self.connect()
        log.info(
            "ingest %s running (batch %d msgs / %d ms, receive maximum %d)",
            self.client_id,
            self.settings.ingest_batch_max,
            self.settings.ingest_batch_ms,
            self.settings.mqtt_receive_maximum,
        )
        idle_since = time.monotonic()
        backoff = 0.5
        pending: list[Incoming] = []
        while not self._stop.is_set():
            batch = pending or self._take_batch()
            pending = []
            if not batch:
                if stop_after_idle_s and time.monotonic() - idle_since > stop_after_idle_s:
                    break
                continue
            idle_since = time.monotonic()
            if writer is None:
                writer = self._open_writer(edition)
                if writer is None:
                    pending = batch
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 10)
                    continue
            try:
                self.process(writer, batch)
                backoff = 0.5
            except psycopg.Error as exc:
                # Nothing was acked: keep the batch and retry; the broker holds the rest.
                self.stats.db_errors += 1
                log.warning(
                    "database write failed (%s); retrying in %.1fs", exc.__class__.__name__, backoff
                )
                pending = batch
                with contextlib.suppress(psycopg.Error):
                    writer.conn.close()
                writer = None
                time.sleep(backoff)
                backoff = min(backoff * 2, 10)
        self.client.disconnect()
        self.client.loop_stop()
        if writer is not None:
            writer.conn.close()

    def stop(self) -> None:
        self._stop.set()

    def wait_connected(self, timeout: float = 10) -> bool:
        return self._connected.wait(timeout)
