"""`ioc ingest`: the MQTT consumer.

paho's network thread only enqueues; a writer thread takes batches (up to ``IOC_INGEST_BATCH_MAX``
messages or ``IOC_INGEST_BATCH_MS``), validates, commits, and only then acknowledges each message
to the broker (MQTT 5 manual acks). The broker's in-flight window (Receive Maximum, announced by
the client and capped by Mosquitto's ``max_inflight_messages``) bounds how many unacknowledged
messages can be in memory, so when the database is slow or down the backlog stays in the broker.
Messages received on an earlier connection are never acked on a newer one: the broker redelivers
them and the idempotency key absorbs the copy.

The window also caps throughput (at most ``IOC_MQTT_RECEIVE_MAXIMUM`` messages between broker
and commit): it is set to twice the batch size so one batch commits while the next fills. One
process uses a plain persistent subscription (restored by Mosquitto after a restart); with
``IOC_INGEST_SHARED`` several processes split the load in an MQTT 5 shared subscription. Between
batches the writer checks source silence (offline/back events) and publishes source health.
See docs/ingest.md.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
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
from ingest.decode import Record
from ingest.pipeline import Decoded, Pipeline, decode_safely
from ingest.store import BatchWriter
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
    dead_by_code: dict[str, int] = field(default_factory=dict)


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
        self._held = 0
        self._held_lock = threading.Lock()
        self.generation = 0
        self._stop = threading.Event()
        self._connected = threading.Event()
        self.client = self._make_client()
        self.redis = bus.connect(settings)
        self.pipeline = Pipeline(settings, site, self.redis)
        self._pending_events: list[Record] = []
        self._prepared: queue.Queue[tuple[list[Incoming], Decoded]] = queue.Queue(maxsize=2)
        self._next_health = 0.0
        self._next_snapshot = 0.0

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
        # Subscribe on every connect: Mosquitto 2.0 does not restore shared subscriptions from
        # its persistence file after a restart (plain ones it does; see ingest_shared).
        group = "ioc-ingest" if self.settings.ingest_shared else None
        client.subscribe(subscription(self.settings.topic_prefix, group=group), qos=1)
        self._connected.set()
        log.info("connected to broker (session present: %s)", flags.session_present)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()
        if not self._stop.is_set():
            log.warning("disconnected from broker (%s); reconnecting", reason_code)

    @property
    def held(self) -> int:
        """Messages received and not yet acked: what ingest holds in memory (at most one
        in-flight window, since the broker sends no more until acks come)."""
        return self._held

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        with self._held_lock:
            self._held += 1
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
        """Validate and commit one batch, then ack it and publish latest values and health."""
        self.commit_batch(writer, batch, self.decode_batch(batch))

    def decode_batch(self, batch: list[Incoming]) -> Decoded:
        now = datetime.now(UTC)
        d = Decoded()
        for m in batch:
            d.add(
                decode_safely(self.pipeline.decoder, m.topic, m.payload, now),
                "mqtt",
                m.topic,
                m.payload,
                m.received,
            )
        return d

    def commit_batch(self, writer: BatchWriter, batch: list[Incoming], d: Decoded) -> None:
        """Commit a decoded batch, then ack its messages (raises psycopg.Error: nothing acked)."""
        extra = self.pipeline.pending_back + self._pending_events
        result = writer.write(d.records + extra, d.dead)
        self.pipeline.pending_back = []
        self._pending_events = []
        self.stats.batches += 1
        self.stats.received += len(batch)
        self.stats.stored += result.inserted
        self.stats.duplicates += result.duplicates
        self.stats.rejected += result.rejected
        for dl in d.dead:
            self.stats.dead_by_code[dl.code] = self.stats.dead_by_code.get(dl.code, 0) + 1
        for m in batch:
            if m.generation == self.generation:
                self.client.ack(m.mid, 1)
        with self._held_lock:
            self._held -= len(batch)
        if d.dead:
            log.warning(
                "rejected %d message(s), e.g. %s: %s",
                len(d.dead),
                d.dead[0].topic,
                d.dead[0].reason,
            )
        self.pipeline.after_commit(d, time.time())

    def _health_tick(self, writer: BatchWriter | None) -> None:
        """Every second: raise 'source offline' events; every few seconds, publish quality."""
        now = time.time()
        if now < self._next_health:
            return
        self._next_health = now + 1.0
        try:
            self._pending_events += self.pipeline.health_records(now)
            if now >= self._next_snapshot:
                self.pipeline.health.publish_snapshot(now)
                self._next_snapshot = now + 5.0
        except Exception as exc:  # Redis down: health resumes when it is back
            log.warning("source health check failed: %s", exc)
        if writer is not None and (self._pending_events or self.pipeline.pending_back):
            try:
                writer.write(self._pending_events + self.pipeline.pending_back, [])
                self._pending_events, self.pipeline.pending_back = [], []
            except psycopg.Error:
                pass  # kept; written with the next batch

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
        # Decoding (GIL-bound) runs in its own thread while the writer waits on the database;
        # at most two decoded batches wait, and nothing is acked before its commit.
        decoder = threading.Thread(target=self._decode_loop, name="ingest-decode", daemon=True)
        decoder.start()
        pending: tuple[list[Incoming], Decoded] | None = None
        while not self._stop.is_set():
            self._health_tick(writer)
            item = pending or self._next_prepared()
            pending = None
            if item is None:
                if stop_after_idle_s and time.monotonic() - idle_since > stop_after_idle_s:
                    break
                continue
            batch, decoded = item
            idle_since = time.monotonic()
            if writer is None:
                writer = self._open_writer(edition)
                if writer is None:
                    pending = item
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 10)
                    continue
            try:
                self.commit_batch(writer, batch, decoded)
                backoff = 0.5
            except psycopg.Error as exc:
                # Nothing was acked: keep the batch and retry; the broker holds the rest.
                self.stats.db_errors += 1
                log.warning(
                    "database write failed (%s); retrying in %.1fs", exc.__class__.__name__, backoff
                )
                pending = item
                with contextlib.suppress(psycopg.Error):
                    writer.conn.close()
                writer = None
                time.sleep(backoff)
                backoff = min(backoff * 2, 10)
        self._stop.set()
        decoder.join(5)
        self.client.disconnect()
        self.client.loop_stop()
        if writer is not None:
            writer.conn.close()
        st = self.stats
        log.info(
            "ingest %s stopped: received=%d stored=%d duplicates=%d rejected=%d db_errors=%d",
            self.client_id,
            st.received,
            st.stored,
            st.duplicates,
            st.rejected,
            st.db_errors,
        )

    def _decode_loop(self) -> None:
        while not self._stop.is_set():
            batch = self._take_batch()
            if not batch:
                continue
            item = (batch, self.decode_batch(batch))
            while not self._stop.is_set():
                try:
                    self._prepared.put(item, timeout=0.2)
                    break
                except queue.Full:
                    continue

    def _next_prepared(self) -> tuple[list[Incoming], Decoded] | None:
        try:
            return self._prepared.get(timeout=0.2)
        except queue.Empty:
            return None

    def stop(self) -> None:
        self._stop.set()

    def wait_connected(self, timeout: float = 10) -> bool:
        return self._connected.wait(timeout)
