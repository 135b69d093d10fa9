"""Decoding and validation of incoming messages: pure functions, no I/O.

A message is accepted as a typed reading or rejected with a reason that ends in the dead-letter
table; one bad message never affects the others of its batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.site import Site
from ingest.topics import parse_topic

MAX_PAYLOAD_BYTES = 64 * 1024
MAX_FUTURE = timedelta(minutes=5)
MAX_PAST = timedelta(days=366)


class WifiApStatus(BaseModel):
    """Payload of ``…/wifi_ap/<id>/status``: one reading of a public-WiFi access point."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    msg_id: str = Field(min_length=1, max_length=64)
    ts: datetime = Field(description="Source timestamp, ISO 8601 with time zone")
    status: Literal["up", "down"]
    clients: int = Field(ge=0, le=100_000, description="Connected clients (devices)")
    rx_bytes: int | None = Field(None, ge=0)
    tx_bytes: int | None = Field(None, ge=0)
    logins: int | None = Field(None, ge=0, le=1_000_000, description="Portal logins since boot")

    @field_validator("ts")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("timestamp needs a time zone (e.g. 2026-01-01T08:00:00+07:00)")
        return v


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


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str
    source_id: str | None = None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "json_invalid":
        return "malformed JSON"
    return f"{loc}: {msg}" if loc else msg


def decode(topic: str, payload: bytes, site: Site, now: datetime) -> WifiApReading | Rejected:
    """Validate one MQTT message against the topic scheme, the site and the stream's schema."""
    t = parse_topic(topic)
    if t is None:
        return Rejected("topic does not match <prefix>/<org unit>/<kind>/<source id>/<stream>")
    if len(payload) > MAX_PAYLOAD_BYTES:
        return Rejected(f"payload over {MAX_PAYLOAD_BYTES} bytes", t.source_id)
    src = site.source_by_id.get(t.source_id)
    if src is None:
        return Rejected(f"unknown source '{t.source_id}'", t.source_id)
    if src.kind != t.kind or src.org_unit != t.org_unit:
        return Rejected(
            f"topic says {t.org_unit}/{t.kind}, site file says {src.org_unit}/{src.kind}",
            t.source_id,
        )
    if (t.kind, t.stream) != ("wifi_ap", "status"):
        return Rejected(f"unknown stream '{t.kind}/{t.stream}'", t.source_id)
    try:
        m = WifiApStatus.model_validate_json(payload)
    except ValidationError as exc:
        return Rejected(_first_error(exc), t.source_id)
    ts = m.ts.astimezone(UTC)
    if ts > now + MAX_FUTURE:
        return Rejected("timestamp in the future (source clock ahead?)", t.source_id)
    if ts < now - MAX_PAST:
        return Rejected("timestamp more than a year in the past", t.source_id)
    return WifiApReading(
        time=ts,
        source_id=t.source_id,
        org_unit_id=src.org_unit,
        msg_id=m.msg_id,
        up=m.status == "up",
        clients=m.clients,
        rx_bytes=m.rx_bytes,
        tx_bytes=m.tx_bytes,
        logins=m.logins,
    )
