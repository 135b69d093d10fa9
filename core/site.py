"""The site file: one YAML document describing the district the IOC watches.

It lists the org-unit tree (province → district → communes, and agencies), the sources (WiFi
gateways and access points, sensors, service systems), cameras with their zones, and the KPI targets
from the plan. Everything is validated up front so a typo fails at start-up with the path of the
bad key, not hours later in a running service.
"""

from __future__ import annotations

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


class KpiTarget(_Model):
    id: str = Ident
    name: str
    name_en: str | None = None
    unit: str = ""
    direction: Literal["higher", "lower"] = "higher"
    target: float | None = None
    targets_by_year: dict[int, float] = {}


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
