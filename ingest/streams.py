"""The typed streams: one schema (fields, types, units, ranges) per ``<kind>/<stream>``, and
where its rows go.

Built-in streams have their own table shape where that makes queries cheaper (WiFi readings,
dossier events, payments …); sensor measurements go to the narrow ``telemetry`` table (one row
per metric); streams declared in the site file (``streams:``) use the same field language and are
stored in ``stream_records`` (JSONB), so a new stream needs no code change. Validation models are
built once per site with pydantic, so every transport (MQTT, HTTP, FIWARE) validates the same way.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    TypeAdapter,
    create_model,
)

from core.errors import ConfigError
from core.site import Site, StreamDecl, StreamField

ALL_KINDS = ("wifi_gateway", "wifi_ap", "sensor", "service_system", "camera")
MAC_PATTERN = r"^[0-9A-Fa-f]{2}([:-]?[0-9A-Fa-f]{2}){5}$"


def F(name: str, type_: str, unit: str = "", **kw: Any) -> StreamField:
    return StreamField(name=name, type=type_, unit=unit, **kw)  # type: ignore[arg-type]


def device_hash(key: bytes, value: str) -> str:
    """Keyed hash of a device identifier (a MAC): stored instead of the identifier, so the IOC
    can count distinct devices without keeping anything that identifies a person's phone."""
    norm = value.strip().lower().replace("-", "").replace(":", "")
    return hmac.new(key, norm.encode(), hashlib.sha256).hexdigest()[:32]


def _aware(v: datetime) -> datetime:
    if v.tzinfo is None:
        raise ValueError("timestamp needs a time zone (e.g. 2026-01-01T08:00:00+07:00)")
    return v


def _no_bool(v: Any) -> Any:
    if isinstance(v, bool):
        raise ValueError("a number is expected, not true/false")
    return v


AwareDatetime = Annotated[datetime, AfterValidator(_aware)]


def _annotation(f: StreamField) -> Any:
    """The pydantic type of one declared field, with its range."""
    lim: dict[str, Any] = {}
    if f.min is not None:
        lim["ge"] = f.min
    if f.max is not None:
        lim["le"] = f.max
    desc = f"{f.description or f.name}{f' ({f.unit})' if f.unit else ''}"
    if f.type == "int":
        t: Any = Annotated[int, BeforeValidator(_no_bool), Field(description=desc, **lim)]
    elif f.type == "float":
        t = Annotated[
            float, BeforeValidator(_no_bool), Field(description=desc, allow_inf_nan=False, **lim)
        ]
    elif f.type == "str":
        t = Annotated[str, Field(min_length=1, max_length=f.max_length, description=desc)]
    elif f.type == "bool":
        t = StrictBool
    elif f.type == "enum":
        t = Literal[tuple(f.values)]  # type: ignore[valid-type]
    elif f.type == "datetime":
        t = AwareDatetime
    elif f.type == "device_id":
        t = Annotated[str, Field(pattern=MAC_PATTERN, description="device MAC (hashed on intake)")]
    else:  # org_unit: checked against the site after validation
        t = Annotated[str, Field(min_length=1, max_length=64)]
    return (t, ...) if f.required else (t | None, None)


def build_model(name: str, fields: tuple[StreamField, ...]) -> type[BaseModel]:
    """A pydantic model for one stream's payload: msg_id and ts, then the declared fields."""
    defs: dict[str, Any] = {
        "msg_id": (Annotated[str, Field(min_length=1, max_length=64)], ...),
        "ts": (AwareDatetime, ...),
    }
    for f in fields:
        defs[f.name] = _annotation(f)
    return create_model(  # type: ignore[call-overload]
        name, __config__=ConfigDict(extra="forbid", frozen=True), **defs
    )


@dataclass(frozen=True)
class Table:
    """Where a stream's rows go: the table and the columns after the common four."""

    name: str
    columns: tuple[str, ...]
    types: tuple[str, ...]
    rollup: str | None = None

    @property
    def all_columns(self) -> tuple[str, ...]:
        return ("time", "source_id", "org_unit_id", "msg_id", *self.columns)

    @property
    def all_types(self) -> tuple[str, ...]:
        return ("timestamptz", "text", "text", "text", *self.types)


WIFI = Table(
    "wifi_ap_readings",
    ("up", "clients", "rx_bytes", "tx_bytes", "logins"),
    ("bool", "int4", "int8", "int8", "int4"),
    rollup="wifi_ap_1m",
)
WIFI_LOGINS = Table("wifi_logins", ("device_hash", "method"), ("text", "text"))
TELEMETRY = Table("telemetry", ("metric", "value"), ("text", "float8"))
DOSSIERS = Table(
    "dossier_events",
    (
        "dossier_id",
        "event",
        "channel",
        "procedure_code",
        "agency",
        "dossier_org_unit",
        "end_to_end",
    ),
    ("text", "text", "text", "text", "text", "text", "bool"),
)
PAYMENTS = Table(
    "payments",
    ("payment_id", "dossier_id", "amount_vnd", "method", "status", "procedure_code"),
    ("text", "text", "int8", "text", "text", "text"),
)
FIELD_REPORTS = Table(
    "field_reports",
    ("report_id", "category", "status", "lat", "lon", "description"),
    ("text", "text", "text", "float8", "float8", "text"),
)
PRESS = Table(
    "press_items",
    ("item_id", "outlet", "topic", "sentiment", "title", "url"),
    ("text", "text", "text", "float8", "text", "text"),
)
BUDGET = Table(
    "budget_status",
    ("budget_unit", "fiscal_year", "plan", "status", "amount_vnd"),
    ("text", "int4", "text", "text", "int8"),
)
EVENTS = Table("events", ("kind", "payload"), ("text", "jsonb"))
RECORDS = Table("stream_records", ("stream", "data"), ("text", "jsonb"))
TABLES = (
    WIFI,
    WIFI_LOGINS,
    TELEMETRY,
    DOSSIERS,
    PAYMENTS,
    FIELD_REPORTS,
    PRESS,
    BUDGET,
    EVENTS,
    RECORDS,
)


@dataclass(frozen=True)
class Stream:
    """A validated stream: its schema and how a valid payload becomes rows of its table."""

    name: str
    kinds: tuple[str, ...]
    title: str
    fields: tuple[StreamField, ...]
    table: Table
    layout: Literal["wide", "narrow", "event", "record"] = "wide"
    # wide layout: table column -> payload field (or a constant function of the values)
    mapping: dict[str, str] = field(default_factory=dict)
    latest: bool = False  # keep a "latest value" per source in Redis

    @property
    def numeric_fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.type in ("int", "float"))

    @property
    def org_unit_fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.type == "org_unit")

    @property
    def device_fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.type == "device_id")

    def describe(self) -> dict[str, Any]:
        """The schema as data (for the docs and the API): fields with types, units, ranges."""
        return {
            "stream": self.name,
            "kinds": list(self.kinds),
            "title": self.title,
            "table": self.table.name,
            "fields": [f.model_dump(exclude_defaults=True) for f in self.fields],
        }


def _wide(columns: tuple[str, ...], **rename: str) -> dict[str, str]:
    return {c: rename.get(c, c) for c in columns}


BUILTIN: tuple[Stream, ...] = (
    Stream(
        "status",
        ("wifi_ap", "wifi_gateway"),
        "Trạng thái điểm phát WiFi / gateway",
        (
            F("status", "enum", values=["up", "down"]),
            F("clients", "int", "thiết bị", min=0, max=100_000),
            F("rx_bytes", "int", "byte", min=0, required=False),
            F("tx_bytes", "int", "byte", min=0, required=False),
            F("logins", "int", "lượt", min=0, max=1_000_000, required=False),
        ),
        WIFI,
        latest=True,
    ),
    Stream(
        "login",
        ("wifi_ap", "wifi_gateway"),
        "Đăng nhập WiFi công cộng (định danh thiết bị được băm)",
        (
            F("device", "device_id", description="device MAC, hashed before storage"),
            F("method", "enum", values=["sms", "social", "voucher", "click"]),
        ),
        WIFI_LOGINS,
        mapping={"device_hash": "device", "method": "method"},
    ),
    Stream(
        "water_level",
        ("sensor",),
        "Mực nước",
        (
            F("level_m", "float", "m", min=-50, max=500),
            F("flow_m3s", "float", "m³/s", min=0, max=100_000, required=False),
        ),
        TELEMETRY,
        layout="narrow",
        latest=True,
    ),
    Stream(
        "air_quality",
        ("sensor",),
        "Chất lượng không khí",
        (
            F("pm25", "float", "µg/m³", min=0, max=1000),
            F("pm10", "float", "µg/m³", min=0, max=2000, required=False),
            F("aqi", "int", "VN_AQI", min=0, max=500, required=False),
            F("temperature_c", "float", "°C", min=-30, max=60, required=False),
            F("humidity_pct", "float", "%", min=0, max=100, required=False),
        ),
        TELEMETRY,
        layout="narrow",
        latest=True,
    ),
    Stream(
        "crowd_flow",
        ("sensor", "camera"),
        "Lưu lượng người (FIWARE CrowdFlowObserved)",
        (
            F("people_count", "int", "người", min=0, max=1_000_000),
            F("occupancy", "float", "tỉ lệ", min=0, max=1, required=False),
            F("average_speed", "float", "m/s", min=0, max=50, required=False),
        ),
        TELEMETRY,
        layout="narrow",
        latest=True,
    ),
    Stream(
        "dossier",
        ("service_system",),
        "Sự kiện hồ sơ TTHC (một cửa điện tử)",
        (
            F("dossier_id", "str", max_length=64),
            F(
                "event",
                "enum",
                values=[
                    "received",
                    "in_progress",
                    "transferred",
                    "completed_on_time",
                    "completed_late",
                    "returned",
                ],
            ),
            F("channel", "enum", values=["online", "counter"]),
            F("procedure_code", "str", max_length=64),
            F("agency", "str", max_length=200),
            F("org_unit", "org_unit"),
            F("end_to_end", "bool", required=False, description="online end to end (toàn trình)"),
        ),
        DOSSIERS,
        mapping=_wide(DOSSIERS.columns, dossier_org_unit="org_unit"),
    ),
    Stream(
        "payment",
        ("service_system",),
        "Thanh toán trực tuyến",
        (
            F("payment_id", "str", max_length=64),
            F("dossier_id", "str", max_length=64, required=False),
            F("amount_vnd", "int", "VND", min=0, max=1_000_000_000_000),
            F("method", "enum", values=["bank_card", "e_wallet", "qr", "bank_transfer", "other"]),
            F("status", "enum", values=["succeeded", "failed", "refunded"]),
            F("procedure_code", "str", max_length=64, required=False),
        ),
        PAYMENTS,
        mapping=_wide(PAYMENTS.columns),
    ),
    Stream(
        "field_report",
        ("service_system",),
        "Phản ánh hiện trường",
        (
            F("report_id", "str", max_length=64),
            F("category", "str", max_length=100),
            F("status", "enum", values=["new", "assigned", "in_progress", "resolved", "rejected"]),
            F("lat", "float", "°", min=-90, max=90, required=False),
            F("lon", "float", "°", min=-180, max=180, required=False),
            F("description", "str", max_length=4000, required=False),
        ),
        FIELD_REPORTS,
        mapping=_wide(FIELD_REPORTS.columns),
    ),
    Stream(
        "press",
        ("service_system",),
        "Tin báo chí, mạng xã hội",
        (
            F("item_id", "str", max_length=64),
            F("outlet", "str", max_length=200),
            F("topic", "str", max_length=200),
            F("sentiment", "float", "−1…1", min=-1, max=1),
            F("title", "str", max_length=1000, required=False),
            F("url", "str", max_length=2000, required=False),
        ),
        PRESS,
        mapping=_wide(PRESS.columns),
    ),
    Stream(
        "budget_estimate",
        ("service_system",),
        "Tình hình nộp dự toán NSNN",
        (
            F("unit", "org_unit", description="budget unit"),
            F("fiscal_year", "int", "năm", min=2000, max=2100),
            F("plan", "enum", values=["annual", "medium_term", "long_term"]),
            F(
                "status",
                "enum",
                values=[
                    "not_started",
                    "drafting",
                    "submitted",
                    "approved",
                    "allocated",
                    "returned",
                ],
            ),
            F("amount_vnd", "int", "VND", min=0, max=10**15, required=False),
        ),
        BUDGET,
        mapping=_wide(BUDGET.columns, budget_unit="unit"),
    ),
    Stream(
        "alert",
        ALL_KINDS,
        "Cảnh báo (FIWARE Alert)",
        (
            F("category", "str", max_length=64),
            F("sub_category", "str", max_length=64, required=False),
            F("severity", "enum", values=["informational", "low", "medium", "high", "critical"]),
            F("description", "str", max_length=4000, required=False),
            F("lat", "float", "°", min=-90, max=90, required=False),
            F("lon", "float", "°", min=-180, max=180, required=False),
        ),
        EVENTS,
        layout="event",
    ),
)


@dataclass(frozen=True)
class CompiledStream:
    stream: Stream
    model: type[BaseModel]
    many: TypeAdapter[list[Any]]


class Registry:
    """Every stream of a site, keyed by (source kind, stream name), with compiled validators."""

    def __init__(self, site: Site) -> None:
        self.by_key: dict[tuple[str, str], CompiledStream] = {}
        compiled: dict[str, CompiledStream] = {}
        for s in BUILTIN:
            c = _compile(s)
            compiled[s.name] = c
            for k in s.kinds:
                self.by_key[(k, s.name)] = c
        for i, d in enumerate(site.streams):
            if (d.kind, d.id) in self.by_key:
                raise ConfigError(
                    f"site file: streams[{i}].id: '{d.kind}/{d.id}' is a built-in stream"
                )
            self.by_key[(d.kind, d.id)] = _compile(declared_stream(d))

    def get(self, kind: str, stream: str) -> CompiledStream | None:
        return self.by_key.get((kind, stream))

    def describe(self) -> list[dict[str, Any]]:
        seen, out = set(), []
        for c in self.by_key.values():
            if id(c) not in seen:
                seen.add(id(c))
                out.append(c.stream.describe())
        return out


def declared_stream(d: StreamDecl) -> Stream:
    return Stream(d.id, (d.kind,), d.name, tuple(d.fields), RECORDS, layout="record")


def _compile(s: Stream) -> CompiledStream:
    model = build_model(f"Stream_{s.name}", s.fields)
    return CompiledStream(s, model, TypeAdapter(list[model]))  # type: ignore[valid-type]


# Source-health events, written by ingest itself to the events table (not accepted from devices).
SOURCE_OFFLINE = Stream(
    "source_offline", ALL_KINDS, "Nguồn dữ liệu mất tín hiệu", (), EVENTS, layout="event"
)
SOURCE_BACK = Stream(
    "source_back", ALL_KINDS, "Nguồn dữ liệu có tín hiệu trở lại", (), EVENTS, layout="event"
)
