"""The site file: one YAML document describing the district the IOC watches.

It lists the org-unit tree (province → district → communes, and agencies), the sources (WiFi
gateways and access points, sensors, service systems), cameras with their zones, and the KPI targets
from the plan. Everything is validated up front so a typo fails at start-up with the path of the
bad key, not hours later in a running service.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.errors import ConfigError

OrgKind = Literal["province", "department", "district", "commune", "ward", "town", "agency"]
SourceKind = Literal["camera", "wifi_gateway", "wifi_ap", "service_system", "sensor"]
Ident = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OrgUnit(_Model):
    id: str = Ident
    kind: OrgKind
    name: str = Field(min_length=1, max_length=200)
    name_en: str | None = None
    parent: str | None = None
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)


class Source(_Model):
    id: str = Ident
    kind: SourceKind
    org_unit: str
    name: str = Field(min_length=1, max_length=200)
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)
    expected_interval_s: float = Field(60, gt=0, le=86_400)


FieldType = Literal["int", "float", "str", "bool", "enum", "datetime", "device_id", "org_unit"]
RESERVED_FIELDS = frozenset({"msg_id", "ts"})


class StreamField(_Model):
    """One field of a stream: its type, unit and accepted range (values outside are rejected)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    type: FieldType
    unit: str = ""
    min: float | None = None
    max: float | None = None
    values: list[str] = Field(default_factory=list, description="accepted values of an enum")
    max_length: int = Field(200, ge=1, le=10_000)
    required: bool = True
    description: str | None = None

    @model_validator(mode="after")
    def _check(self) -> StreamField:
        if self.name in RESERVED_FIELDS:
            raise ValueError(f"'{self.name}' is set by every message; choose another field name")
        if self.type == "enum" and not self.values:
            raise ValueError("an enum field needs its accepted `values`")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min is greater than max")
        return self


class StreamDecl(_Model):
    """A stream declared in the site file: ingested, validated and stored without code change
    (topic ``<prefix>/<org unit>/<kind>/<source id>/<id>``, stored in ``stream_records``)."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    kind: SourceKind
    name: str = Field(min_length=1, max_length=200)
    name_en: str | None = None
    fields: list[StreamField] = Field(min_length=1, max_length=100)

    @model_validator(mode="after")
    def _unique_fields(self) -> StreamDecl:
        seen: set[str] = set()
        for i, f in enumerate(self.fields):
            if f.name in seen:
                raise ValueError(f"fields[{i}].name: duplicate field '{f.name}'")
            seen.add(f.name)
        return self


class Zone(_Model):
    id: str = Ident
    name: str
    kind: Literal["polygon", "line"] = "polygon"
    points: list[tuple[float, float]]

    @model_validator(mode="after")
    def _check_points(self) -> Zone:
        need = 3 if self.kind == "polygon" else 2
        if len(self.points) < need:
            raise ValueError(f"a {self.kind} needs at least {need} points")
        for x, y in self.points:
            if not (0 <= x <= 1 and 0 <= y <= 1):
                raise ValueError("points are fractions of the frame, each in [0, 1]")
        return self


RuleKind = Literal[
    "intrusion", "crowding", "loitering", "line_crossing", "stopped_vehicle", "tampering"
]
Fraction = tuple[float, float]


class CameraRule(_Model):
    """One event rule on a camera zone (see analytics/vision/rules.py for the semantics)."""

    kind: RuleKind
    zone: str | None = None
    labels: list[str] = []  # empty: the rule's default classes
    min_score: float = Field(0.45, ge=0, le=1)  # on the track's median score
    min_area: float = Field(0.0005, ge=0, le=1)  # box area as a fraction of the frame
    min_count: int = Field(1, ge=1, le=10_000)  # crowding
    min_duration_s: float = Field(0, ge=0, le=86_400)  # crowding, loitering, stopped vehicle
    debounce_s: float = Field(1.0, ge=0, le=3600)  # condition must hold this long to start
    cooldown_s: float = Field(30, ge=0, le=86_400)  # no new event for the same thing after one
    schedule: str | None = Field(None, pattern=r"^\d{2}:\d{2}-\d{2}:\d{2}$")  # local time


class Camera(_Model):
    id: str = Ident
    org_unit: str
    name: str
    url: str
    substream_url: str | None = None
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)
    zones: list[Zone] = []
    rules: list[CameraRule] = []
    detect_fps: float = Field(5, gt=0, le=60)
    motion_masks: list[list[Fraction]] = []  # motion ignored inside
    privacy_masks: list[list[Fraction]] = []  # blacked out in every stored image
    blur_people: bool = False  # blur detected people in stored snapshots
    model: str | None = None  # model card path; default: models/nanodet-m-416-coco.yaml

    @model_validator(mode="after")
    def _check_rules(self) -> Camera:
        kinds = {z.id: z.kind for z in self.zones}
        for i, r in enumerate(self.rules):
            if r.kind == "tampering":
                continue
            if r.zone is None or r.zone not in kinds:
                raise ValueError(f"rules[{i}].zone: unknown zone '{r.zone}' of this camera")
            want = "line" if r.kind == "line_crossing" else "polygon"
            if kinds[r.zone] != want:
                raise ValueError(f"rules[{i}]: {r.kind} needs a {want} zone")
        return self


FilterValue = str | int | float | bool
WindowName = Literal["now", "today", "week", "month", "quarter", "ytd", "24h", "7d", "30d"]
CALENDAR_WINDOWS = ("today", "week", "month", "quarter", "ytd")


class Measure(_Model):
    """Rows of one input that pass a filter, counted or summed (`value`), per org unit and hour."""

    input: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    where: dict[str, FilterValue | list[FilterValue]] = {}
    value: str | None = None  # a named value of the input; None counts rows
    bins: list[float] = []  # histogram edges (percentile KPIs)


class KpiFormula(_Model):
    """How a KPI is computed: over rollups (count, sum, avg, ratio, percentile) or a live gauge.

    ``online_rate = completed where channel = online / completed`` is
    ``{op: ratio, numerator: {input: dossiers, where: {event: [...], channel: online}},
    denominator: {input: dossiers, where: {event: [...]}}, scale: 100}``.
    """

    op: Literal[
        "count", "sum", "avg", "ratio", "percentile", "latest", "overdue", "at_risk", "state_share"
    ]
    measure: Measure | None = None
    numerator: Measure | None = None
    denominator: Measure | None = None
    q: float | None = Field(None, gt=0, lt=1)
    scale: float = 1.0
    fresh_s: float = Field(300, gt=0)  # latest: readings older than this are ignored
    states: list[str] = []  # state_share: the states that count as done
    unit_kinds: list[str] = []  # state_share: which org units are expected to report
    windows: list[WindowName] = []
    per_zone: bool = False  # camera_events: also one KPI per camera zone

    @model_validator(mode="after")
    def _check(self) -> KpiFormula:
        if self.per_zone and (self.measure is None or self.measure.input != "camera_events"):
            raise ValueError("per_zone needs a camera_events measure")
        if self.op == "ratio" and (self.numerator is None or self.denominator is None):
            raise ValueError("a ratio needs a numerator and a denominator")
        if self.op in ("count", "sum", "avg", "percentile", "latest") and self.measure is None:
            raise ValueError(f"'{self.op}' needs a measure")
        if self.op in ("sum", "avg", "latest") and self.measure and not self.measure.value:
            raise ValueError(f"'{self.op}' needs measure.value")
        if self.op == "percentile":
            if self.q is None:
                raise ValueError("a percentile needs q (e.g. 0.9)")
            b = self.measure.bins if self.measure else []
            if len(b) < 2 or any(x >= y for x, y in itertools.pairwise(b)):
                raise ValueError("a percentile needs increasing measure.bins (at least 2)")
        if self.op == "state_share" and not self.states:
            raise ValueError("state_share needs the done `states`")
        return self

    @property
    def gauge(self) -> bool:
        return self.op in ("latest", "overdue", "at_risk", "state_share")

    def effective_windows(self) -> list[str]:
        if self.windows:
            return list(self.windows)
        return ["now"] if self.gauge else [*CALENDAR_WINDOWS, "30d"]


class KpiTarget(_Model):
    id: str = Ident
    name: str
    name_en: str | None = None
    unit: str = ""
    direction: Literal["higher", "lower"] = "higher"
    target: float | None = None
    targets_by_year: dict[int, float] = {}
    at_risk_margin: float = Field(5.0, ge=0)  # how far off target a gauge is "at risk"
    domain: str = "e_government"
    formula: KpiFormula | None = None

    def target_for(self, year: int) -> float | None:
        """The plan's target for a year: that year's, else the latest earlier one, else `target`."""
        if year in self.targets_by_year:
            return self.targets_by_year[year]
        earlier = [y for y in self.targets_by_year if y < year]
        if earlier:
            return self.targets_by_year[max(earlier)]
        return self.target


Severity = Literal["critical", "high", "medium", "low", "info"]


class FlapPolicy(_Model):
    window_s: float = Field(600, gt=0)
    max_changes: int = Field(4, ge=2)


class Rule(_Model):
    """A condition that opens an incident: on a signal, a KPI status or camera events."""

    id: str = Ident
    kind: Literal["threshold", "rate_of_change", "silence", "anomaly", "kpi_status", "camera"]
    name: str
    severity: Severity = "medium"
    domain: str = "general"
    team: str | None = None  # who is dispatched
    signal: Measure | None = None  # threshold / rate_of_change / anomaly: input + filter + value
    op: Literal[">", ">=", "<", "<="] = ">"
    value: float | None = None  # threshold, rate per minute, or z-score limit
    for_s: float = Field(0, ge=0)  # pending period: the condition must hold this long
    clear_for_s: float = Field(0, ge=0)  # and be clear this long before auto-resolve
    auto_resolve: bool = True
    flap: FlapPolicy = FlapPolicy()
    weeks: int = Field(4, ge=2, le=12)  # anomaly: same hour of this many previous weeks
    silence_factor: float = Field(3.0, gt=1)  # silence: expected interval × factor
    kpi: str | None = None  # kpi_status
    statuses: list[Literal["at_risk", "missed"]] = ["missed"]
    camera_rules: list[str] = []  # camera: which camera rules (empty = all)
    sources: list[str] = []  # restrict to these sources (empty = all matching)

    @model_validator(mode="after")
    def _check(self) -> Rule:
        if self.kind in ("threshold", "rate_of_change", "anomaly"):
            if self.signal is None or not self.signal.value:
                raise ValueError(f"a {self.kind} rule needs signal.value")
            if self.value is None:
                raise ValueError(f"a {self.kind} rule needs `value`")
        if self.kind == "kpi_status" and not self.kpi:
            raise ValueError("a kpi_status rule needs `kpi`")
        return self


class SlaPolicy(_Model):
    ack_s: float = Field(gt=0)
    resolve_s: float = Field(gt=0)


class EscalationStep(_Model):
    """Who is told when an incident is still unacknowledged `after_s` past its SLA ack time."""

    after_s: float = Field(ge=0)
    notify: Literal["next_on_duty", "duty_leader"]


class Gateway(_Model):
    """An HTTP webhook to an SMS-brandname or Zalo-OA gateway (the provider's own API)."""

    url: str = Field(pattern=r"^https?://")
    template: str = "[IOC] {title} - {place}. Mở ứng dụng để xác nhận."
    timeout_s: float = Field(5, gt=0, le=60)
    token_setting: str | None = None  # optional bearer token, from this environment variable


class Operations(_Model):
    """Incident handling: SLA per severity, escalation, delivery channels, reporting."""

    sla: dict[str, SlaPolicy] = {
        "critical": SlaPolicy(ack_s=300, resolve_s=4 * 3600),
        "high": SlaPolicy(ack_s=900, resolve_s=8 * 3600),
        "medium": SlaPolicy(ack_s=3600, resolve_s=24 * 3600),
        "low": SlaPolicy(ack_s=4 * 3600, resolve_s=72 * 3600),
        "info": SlaPolicy(ack_s=24 * 3600, resolve_s=7 * 86400),
    }
    escalation: list[EscalationStep] = [
        EscalationStep(after_s=0, notify="next_on_duty"),
        EscalationStep(after_s=600, notify="duty_leader"),
    ]
    escalation_repeat_s: float = Field(900, gt=0)
    correlation_window_s: float = Field(900, gt=0)
    correlation_radius_m: float = Field(300, gt=0)
    channels: list[list[str]] = [["websocket"], ["email"], ["zalo", "sms"]]
    gateways: dict[str, Gateway] = {}
    retries: int = Field(3, ge=1, le=10)
    retry_backoff_s: float = Field(1.0, ge=0)
    report_endpoint: str | None = None
    report_mailbox: str | None = None
    report_units: list[str] = []


class Procedure(_Model):
    """An administrative procedure's legal processing time in working days."""

    code: str = Field(min_length=1, max_length=64)
    name: str = ""
    working_days: int = Field(ge=0, le=365)


class SiteInfo(_Model):
    id: str = Ident
    name: str
    name_en: str | None = None
    timezone: str = "Asia/Ho_Chi_Minh"


class Site(_Model):
    """A validated district description."""

    site: SiteInfo
    org_units: list[OrgUnit] = Field(min_length=1)
    sources: list[Source] = []
    cameras: list[Camera] = []
    kpis: list[KpiTarget] = []
    streams: list[StreamDecl] = []
    rules: list[Rule] = []
    operations: Operations = Operations()
    procedures: list[Procedure] = []
    default_working_days: int = Field(10, ge=1, le=365)

    @model_validator(mode="after")
    def _check_refs(self) -> Site:
        ids: set[str] = set()
        for i, u in enumerate(self.org_units):
            if u.id in ids:
                raise ValueError(f"org_units[{i}].id: duplicate org unit '{u.id}'")
            ids.add(u.id)
        for i, u in enumerate(self.org_units):
            if u.parent is not None and u.parent not in ids:
                raise ValueError(f"org_units[{i}].parent: unknown org unit '{u.parent}'")
        parent = {u.id: u.parent for u in self.org_units}
        for u in self.org_units:
            seen, cur = set(), u.id
            while cur is not None:
                if cur in seen:
                    raise ValueError(f"org_units: cycle through '{u.id}'")
                seen.add(cur)
                cur = parent[cur]
        src_ids: set[str] = set()
        for section, items in (("sources", self.sources), ("cameras", self.cameras)):
            for i, s in enumerate(items):
                if s.id in src_ids:
                    raise ValueError(f"{section}[{i}].id: duplicate source '{s.id}'")
                src_ids.add(s.id)
                if s.org_unit not in ids:
                    raise ValueError(f"{section}[{i}].org_unit: unknown org unit '{s.org_unit}'")
        stream_keys: set[tuple[str, str]] = set()
        for i, d in enumerate(self.streams):
            if (d.kind, d.id) in stream_keys:
                raise ValueError(f"streams[{i}].id: duplicate stream '{d.kind}/{d.id}'")
            stream_keys.add((d.kind, d.id))
        kpi_ids: set[str] = set()
        for i, k in enumerate(self.kpis):
            if k.id in kpi_ids:
                raise ValueError(f"kpis[{i}].id: duplicate KPI '{k.id}'")
            kpi_ids.add(k.id)
        rule_ids: set[str] = set()
        for i, r in enumerate(self.rules):
            if r.id in rule_ids:
                raise ValueError(f"rules[{i}].id: duplicate rule '{r.id}'")
            rule_ids.add(r.id)
            if r.kpi and r.kpi not in kpi_ids:
                raise ValueError(f"rules[{i}].kpi: unknown KPI '{r.kpi}'")
        for i, u in enumerate(self.operations.report_units):
            if u not in ids:
                raise ValueError(f"operations.report_units[{i}]: unknown org unit '{u}'")
        return self

    # ------------------------------------------------------------------ tree helpers
    @cached_property
    def units(self) -> dict[str, OrgUnit]:
        return {u.id: u for u in self.org_units}

    @cached_property
    def children(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {u.id: [] for u in self.org_units}
        for u in self.org_units:
            if u.parent:
                out[u.parent].append(u.id)
        return out

    def ancestors(self, unit_id: str) -> list[str]:
        """The unit itself, then its parent, up to the root."""
        out, cur = [], unit_id
        while cur is not None:
            out.append(cur)
            cur = self.units[cur].parent
        return out

    def subtree(self, unit_id: str) -> set[str]:
        """The unit and every unit below it (what a user bound to it may see)."""
        out, stack = set(), [unit_id]
        while stack:
            cur = stack.pop()
            out.add(cur)
            stack.extend(self.children[cur])
        return out

    def all_sources(self) -> Iterator[tuple[str, str, str, str]]:
        """(id, kind, org_unit, name) of every source, cameras included."""
        for s in self.sources:
            yield s.id, s.kind, s.org_unit, s.name
        for c in self.cameras:
            yield c.id, "camera", c.org_unit, c.name

    @cached_property
    def source_by_id(self) -> dict[str, Source]:
        return {s.id: s for s in self.sources}

    @cached_property
    def all_kpis(self) -> list[KpiTarget]:
        """The declared KPIs, plus one per camera zone for `per_zone` KPIs (id
        `<kpi>--<camera>--<zone>`), so events per zone have their own values and history."""
        out: list[KpiTarget] = []
        for k in self.kpis:
            out.append(k)
            f = k.formula
            if f is None or not f.per_zone or f.measure is None:
                continue
            for cam in self.cameras:
                for z in cam.zones:
                    m = f.measure.model_copy(
                        update={"where": {**f.measure.where, "camera_id": cam.id, "zone": z.id}}
                    )
                    out.append(
                        k.model_copy(
                            update={
                                "id": f"{k.id}--{cam.id}--{z.id}",
                                "name": f"{k.name} — {cam.name}: {z.name}",
                                "formula": f.model_copy(update={"measure": m, "per_zone": False}),
                            }
                        )
                    )
        return out

    @cached_property
    def kpi_by_id(self) -> dict[str, KpiTarget]:
        return {k.id: k for k in self.all_kpis}

    @cached_property
    def procedure_days(self) -> dict[str, int]:
        return {p.code: p.working_days for p in self.procedures}


def _format_error(path: Path, exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in err["loc"])
    loc = loc.replace(".[", "[")
    msg = err["msg"].removeprefix("Value error, ")
    return f"site file {path}: {loc + ': ' if loc else ''}{msg}"


def parse_site(text: str, path: Path | str = "<site>") -> Site:
    """Parse and validate a site document; raise ConfigError naming the bad key."""
    path = Path(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"site file {path}:{where} is not valid YAML") from None
    if not isinstance(data, dict):
        raise ConfigError(f"site file {path}: expected a mapping at the top level")
    try:
        return Site.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(path, exc)) from None


def load_site(path: Path) -> Site:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"site file {path}: cannot be read ({exc.strerror})") from None
    return parse_site(text, path)
