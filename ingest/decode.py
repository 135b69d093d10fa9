"""Decoding and validation of incoming messages: pure functions, no I/O.

A message is accepted as typed records or rejected with a reason (and a short code, counted per
source) that ends in the dead-letter table; one bad message — or one bad item of a batched
message — never affects the others. MQTT, the HTTP intake and the FIWARE adapters all come here.

A payload is one JSON object, or a JSON array of objects (a batch, up to ``MAX_BATCH_ITEMS``);
every object carries ``msg_id`` (the idempotency key with the source id) and ``ts`` (the source's
own time, ISO 8601 with a time zone).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ValidationError

from core.site import Site, Source
from ingest.streams import (
    WIFI,
    CompiledStream,
    Registry,
    Stream,
    Table,
    device_hash,
)
from ingest.topics import parse_topic

MAX_PAYLOAD_BYTES = 64 * 1024
MAX_BATCH_ITEMS = 1000
MAX_FUTURE = timedelta(minutes=5)
MAX_PAST = timedelta(days=366)
_MAC_RE = re.compile(rb"(?<![0-9A-Fa-f])([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}(?![0-9A-Fa-f])")


@dataclass(frozen=True, slots=True)
class WifiApReading:
    time: datetime
    source_id: str
    org_unit_id: str
    msg_id: str
    up: bool
    clients: int
    rx_bytes: int | None
    tx_bytes: int | None
    logins: int | None

    @property
    def table(self) -> Table:
        return WIFI

    @property
    def stream_name(self) -> str:
        return "wifi_ap"

    def rows(self) -> list[tuple[Any, ...]]:
        return [
            (
                self.time,
                self.source_id,
                self.org_unit_id,
                self.msg_id,
                self.up,
                self.clients,
                self.rx_bytes,
                self.tx_bytes,
                self.logins,
            )
        ]


@dataclass(frozen=True, slots=True)
class Record:
    """A valid message of any stream other than WiFi status (device ids already hashed)."""

    stream: Stream
    time: datetime
    source_id: str
    org_unit_id: str
    msg_id: str
    values: dict[str, Any]

    @property
    def table(self) -> Table:
        return self.stream.table

    @property
    def stream_name(self) -> str:
        return self.stream.name

    def rows(self) -> list[tuple[Any, ...]]:
        head = (self.time, self.source_id, self.org_unit_id, self.msg_id)
        s = self.stream
        if s.layout == "narrow":
            return [
                (*head, f"{s.name}.{k}", float(self.values[k]))
                for k in s.numeric_fields
                if self.values.get(k) is not None
            ]
        if s.layout in ("event", "record"):
            return [(*head, s.name, _jsonable(self.values))]
        return [(*head, *(self.values.get(src) for src in s.mapping.values()))]


Accepted = WifiApReading | Record


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str
    source_id: str | None = None
    code: str = "invalid"


Result = Accepted | Rejected

_CODES = {
    "json_invalid": "malformed_json",
    "finite_number": "not_finite",
    "missing": "missing_field",
    "extra_forbidden": "unknown_field",
    "greater_than_equal": "out_of_range",
    "less_than_equal": "out_of_range",
    "literal_error": "bad_value",
    "string_too_long": "too_long",
}


def _jsonable(values: dict[str, Any]) -> Jsonb:
    return Jsonb(values)


def _first_error(exc: ValidationError, prefix: str = "") -> tuple[str, str]:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    loc = prefix + loc if loc else prefix.rstrip(".")
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "json_invalid":
        return "malformed JSON", "malformed_json"
    code = _CODES.get(err["type"], "wrong_type")
    if "time zone" in msg:
        code = "no_time_zone"
    return (f"{loc}: {msg}" if loc else msg), code


def _rejected(exc: ValidationError, source_id: str, prefix: str = "") -> Rejected:
    reason, code = _first_error(exc, prefix)
    return Rejected(reason, source_id, code)


def scrub(payload: bytes) -> bytes:
    """A rejected payload as kept in the dead-letter table: MAC addresses masked, so a device
    identifier is never stored raw even when its message was invalid."""
    return _MAC_RE.sub(b"<mac>", payload)


class Decoder:
    """Validates messages against a site's sources and streams. Pure: `now` is passed in."""

    def __init__(self, site: Site, hash_key: bytes = b"") -> None:
        self.site = site
        self.registry = Registry(site)
        self.hash_key = hash_key

    # ------------------------------------------------------------------ entry points
    def decode_message(self, topic: str, payload: bytes, now: datetime) -> list[Result]:
        """One MQTT message (one object or a batch) → one result per item."""
        t = parse_topic(topic)
        if t is None:
            return [
                Rejected(
                    "topic does not match <prefix>/<org unit>/<kind>/<source id>/<stream>",
                    code="bad_topic",
                )
            ]
        if len(payload) > MAX_PAYLOAD_BYTES:
            return [Rejected(f"payload over {MAX_PAYLOAD_BYTES} bytes", t.source_id, "too_large")]
        found = self.resolve(t.source_id, t.kind, t.org_unit, t.stream)
        if isinstance(found, Rejected):
            return [found]
        src, c = found
        if payload.lstrip()[:1] == b"[":
            return self._decode_batch(src, c, payload, now)
        try:
            m = c.model.model_validate_json(payload)
        except ValidationError as exc:
            return [_rejected(exc, src.id)]
        return [self._accept(src, c, m, now)]

    def decode_objects(
        self, source_id: str, stream: str, items: list[Any], now: datetime
    ) -> list[Result]:
        """Already-parsed objects for one source and stream (HTTP intake, FIWARE adapters)."""
        src = self.site.source_by_id.get(source_id)
        if src is None:
            return [Rejected(f"unknown source '{source_id}'", source_id, "unknown_source")]
        found = self.resolve(source_id, src.kind, src.org_unit, stream)
        if isinstance(found, Rejected):
            return [found] * max(1, len(items))
        out: list[Result] = []
        for i, item in enumerate(items):
            out.append(
                self._decode_one(src, found[1], item, now, f"[{i}]." if len(items) > 1 else "")
            )
        return out

    def resolve(
        self, source_id: str, kind: str, org_unit: str, stream: str
    ) -> tuple[Source, CompiledStream] | Rejected:
        src = self.site.source_by_id.get(source_id)
        if src is None:
            return Rejected(f"unknown source '{source_id}'", source_id, "unknown_source")
        if src.kind != kind or src.org_unit != org_unit:
            return Rejected(
                f"topic says {org_unit}/{kind}, site file says {src.org_unit}/{src.kind}",
                source_id,
                "source_mismatch",
            )
        c = self.registry.get(kind, stream)
        if c is None:
            return Rejected(f"unknown stream '{kind}/{stream}'", source_id, "unknown_stream")
        return src, c

    # ------------------------------------------------------------------ internals
    def _decode_batch(
        self, src: Source, c: CompiledStream, payload: bytes, now: datetime
    ) -> list[Result]:
        try:
            models = c.many.validate_json(payload)
        except ValidationError:
            pass  # at least one bad item: validate one by one to keep the good ones
        else:
            if len(models) > MAX_BATCH_ITEMS:
                return [Rejected(f"batch over {MAX_BATCH_ITEMS} items", src.id, "too_large")]
            if not models:
                return [Rejected("empty batch", src.id, "empty")]
            return [self._accept(src, c, m, now) for m in models]
        try:
            items = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return [Rejected("malformed JSON", src.id, "malformed_json")]
        if len(items) > MAX_BATCH_ITEMS:
            return [Rejected(f"batch over {MAX_BATCH_ITEMS} items", src.id, "too_large")]
        return [self._decode_one(src, c, item, now, f"[{i}].") for i, item in enumerate(items)]

    def _decode_one(
        self, src: Source, c: CompiledStream, item: Any, now: datetime, prefix: str
    ) -> Result:
        try:
            m = c.model.model_validate_json(orjson.dumps(item))
        except (ValidationError, TypeError) as exc:
            if isinstance(exc, TypeError):
                return Rejected(f"{prefix}not serialisable as JSON", src.id, "wrong_type")
            return _rejected(exc, src.id, prefix)
        return self._accept(src, c, m, now)

    def _accept(self, src: Source, c: CompiledStream, m: BaseModel, now: datetime) -> Result:
        ts = m.ts.astimezone(UTC)  # type: ignore[attr-defined]
        if ts > now + MAX_FUTURE:
            return Rejected("timestamp in the future (source clock ahead?)", src.id, "future_ts")
        if ts < now - MAX_PAST:
            return Rejected("timestamp more than a year in the past", src.id, "past_ts")
        s = c.stream
        if s.table is WIFI:
            return WifiApReading(
                time=ts,
                source_id=src.id,
                org_unit_id=src.org_unit,
                msg_id=m.msg_id,  # type: ignore[attr-defined]
                up=m.status == "up",  # type: ignore[attr-defined]
                clients=m.clients,  # type: ignore[attr-defined]
                rx_bytes=m.rx_bytes,  # type: ignore[attr-defined]
                tx_bytes=m.tx_bytes,  # type: ignore[attr-defined]
                logins=m.logins,  # type: ignore[attr-defined]
            )
        values = m.model_dump(mode="json", exclude={"msg_id", "ts"}, exclude_none=True)
        for f in s.org_unit_fields:
            if f in values and values[f] not in self.site.units:
                return Rejected(f"{f}: unknown org unit '{values[f]}'", src.id, "unknown_org_unit")
        for f in s.device_fields:
            if f in values:
                values[f] = device_hash(self.hash_key, values[f])
        return Record(s, ts, src.id, src.org_unit, m.msg_id, values)  # type: ignore[attr-defined]


_DECODERS: dict[int, tuple[Site, Decoder]] = {}


def decoder_for(site: Site, hash_key: bytes = b"") -> Decoder:
    got = _DECODERS.get(id(site))
    if got is None or got[0] is not site or got[1].hash_key != hash_key:
        got = (site, Decoder(site, hash_key))
        _DECODERS[id(site)] = got
    return got[1]


def decode(topic: str, payload: bytes, site: Site, now: datetime) -> Result:
    """Validate one MQTT message carrying one object (a batch gives its first item's result)."""
    return decoder_for(site).decode_message(topic, payload, now)[0]
