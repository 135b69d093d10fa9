"""HTTP intake for service systems that cannot speak MQTT, and FIWARE/Open311 adapters.

``POST /api/v1/intake/{source_id}/{stream}`` takes the same JSON as the MQTT payload (one object
or a batch array) with the source's own API key in ``X-API-Key``. Validation (ingest.decode) and
storage (ingest.store, binary COPY, idempotency key) are the MQTT path's; the answer comes after
the commit, so a client that gets 200 knows its records are stored, and one that retries after a
timeout is absorbed by the idempotency key (source, msg_id, ts).

Adapters map existing smart-city feeds onto the typed streams:
- NGSI-LD ``AccessPoint`` (WifiNetwork) → ``status``; ``CrowdFlowObserved`` → ``crowd_flow``;
  ``Alert`` → ``alert`` (``POST …/ngsi-ld/v1/entities`` or ``…/entityOperations/upsert``);
- Open311 GeoReport v2 ``ServiceRequest`` → ``field_report`` (``POST …/open311/requests``).

API keys are derived from the master secret per source (``ioc intake-key SOURCE`` prints one), so
nothing secret is stored; a key only opens its own source.
"""

from __future__ import annotations

import hashlib
import hmac
import queue
import threading
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
import redis
from fastapi import APIRouter, FastAPI, Header, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.auth import InvalidToken, read_token
from api.errors import AUTH_ERRORS, _resp
from core import bus, db
from core.broker import account_password
from core.errors import ServiceUnreachable
from core.settings import Settings
from core.site import Site, Source
from core.timescale import detect_edition
from ingest.decode import Rejected, Result
from ingest.pipeline import Decoded, Pipeline
from ingest.store import BatchWriter

# Intake answers 401 for a missing or wrong X-API-Key (one key per source).
INTAKE_ERRORS = {
    401: _resp(401, "bad_api_key", "X-API-Key is missing or not this source's key"),
    422: AUTH_ERRORS[422],
}

MAX_BODY_BYTES = 1024 * 1024
WRITERS = 2


def api_key_for(settings: Settings, source_id: str) -> str:
    """The HTTP intake key of one source (derived, never stored)."""
    return account_password(settings, f"intake:{source_id}")


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status)


class Intake:
    """Lazily opened resources of the intake: Redis, the pipeline and a few DB writers."""

    def __init__(self, settings: Settings, site: Site) -> None:
        self.settings = settings
        self.site = site
        self._lock = threading.Lock()
        self._pipeline: Pipeline | None = None
        self._writers: queue.Queue[BatchWriter] = queue.Queue()
        self._opened = 0

    @property
    def pipeline(self) -> Pipeline:
        with self._lock:
            if self._pipeline is None:
                self._pipeline = Pipeline(self.settings, self.site, bus.connect(self.settings))
            return self._pipeline

    def _writer(self) -> BatchWriter:
        try:
            return self._writers.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if self._opened < WRITERS:
                self._opened += 1
                try:
                    conn = db.connect(self.settings)
                    return BatchWriter(conn, detect_edition(conn))
                except Exception:
                    self._opened -= 1
                    raise
        return self._writers.get(timeout=10)

    def store(
        self, source_id: str, stream: str, results: list[Result], payload: bytes
    ) -> dict[str, Any]:
        """Commit one request's results (blocking; run in a thread), then publish."""
        d = Decoded()
        d.add(results, "http", f"http:{source_id}/{stream}", payload, time.time())
        w = self._writer()
        try:
            res = w.write(d.records, d.dead)
        except psycopg.Error:
            with self._lock:
                self._opened -= 1
            w.conn.close()
            raise
        self._writers.put(w)
        self.pipeline.after_commit(d, time.time())
        rejected = [
            {"index": i, "reason": r.reason, "code": r.code}
            for i, r in enumerate(results)
            if isinstance(r, Rejected)
        ]
        return {
            "accepted": len(d.records),
            "stored": res.inserted,
            "duplicates": res.duplicates,
            "rejected": rejected,
        }

    def close(self) -> None:
        while True:
            try:
                self._writers.get_nowait().conn.close()
            except queue.Empty:
                return


# ---------------------------------------------------------------------------- FIWARE / Open311
def _unwrap(v: Any) -> Any:
    """NGSI-LD normalized → plain value ({"type": "Property", "value": …}, DateTime objects)."""
    if isinstance(v, dict):
        if v.get("type") in ("Property", "GeoProperty", "Geoproperty") and "value" in v:
            return _unwrap(v["value"])
        if v.get("type") == "Relationship":
            return v.get("object")
        if "@value" in v:
            return v["@value"]
    return v


def _msg_id(*parts: Any) -> str:
    return hashlib.sha256(orjson.dumps([str(p) for p in parts])).hexdigest()[:32]


def _point(e: dict[str, Any]) -> dict[str, float]:
    loc = _unwrap(e.get("location"))
    if isinstance(loc, dict) and loc.get("type") == "Point":
        c = loc.get("coordinates") or []
        if len(c) >= 2:
            return {"lon": c[0], "lat": c[1]}
    return {}


def ngsi_to_stream(e: Any) -> tuple[str, dict[str, Any]] | str:
    """One NGSI-LD entity → (stream, payload object) or the reason it cannot be mapped."""
    if not isinstance(e, dict):
        return "entity must be a JSON object"
    kind, eid = e.get("type"), e.get("id")
    if not isinstance(eid, str) or not eid:
        return "entity has no id"
    if kind == "AccessPoint":
        ts = _unwrap(
            e.get("timeInstant") or e.get("dateLastValueReported") or e.get("dateObserved")
        )
        state = _unwrap(e.get("apState"))
        body = {
            "msg_id": _msg_id(eid, ts),
            "ts": ts,
            "status": {"up": "up", "down": "down", "ok": "up"}.get(state, state),
            "clients": _unwrap(e.get("clientsConnected")),
        }
        return "status", body
    if kind == "CrowdFlowObserved":
        ts = _unwrap(e.get("dateObserved") or e.get("dateObservedTo"))
        body = {"msg_id": _msg_id(eid, ts), "ts": ts, "people_count": _unwrap(e.get("peopleCount"))}
        for src, dst in (("occupancy", "occupancy"), ("averageCrowdSpeed", "average_speed")):
            if e.get(src) is not None:
                body[dst] = _unwrap(e[src])
        return "crowd_flow", body
    if kind == "Alert":
        ts = _unwrap(e.get("dateIssued") or e.get("validFrom"))
        body = {
            "msg_id": _msg_id(eid, ts),
            "ts": ts,
            "category": _unwrap(e.get("category")),
            "severity": _unwrap(e.get("severity")),
        }
        if e.get("subCategory") is not None:
            body["sub_category"] = _unwrap(e["subCategory"])
        if e.get("description") is not None:
            body["description"] = _unwrap(e["description"])
        body.update(_point(e))
        return "alert", body
    return f"unsupported NGSI-LD type '{kind}' (AccessPoint, CrowdFlowObserved, Alert)"


OPEN311_STATUS = {"open": "new", "closed": "resolved"}


def open311_to_stream(r: Any) -> tuple[str, dict[str, Any]] | str:
    """One Open311 GeoReport v2 service request → the field_report stream."""
    if not isinstance(r, dict):
        return "service request must be a JSON object"
    rid = r.get("service_request_id")
    ts = r.get("updated_datetime") or r.get("requested_datetime")
    if not rid:
        return "service_request_id is required"
    body: dict[str, Any] = {
        "msg_id": _msg_id(rid, ts, r.get("status")),
        "ts": ts,
        "report_id": str(rid),
        "category": r.get("service_code") or r.get("service_name"),
        "status": OPEN311_STATUS.get(r.get("status"), r.get("status")),
    }
    for src, dst in (("lat", "lat"), ("long", "lon"), ("description", "description")):
        if r.get(src) is not None:
            body[dst] = r[src]
    return "field_report", body


# ---------------------------------------------------------------------------- routes
def intake_router(settings: Settings, site: Site, intake: Intake | None = None) -> APIRouter:
    intake = intake or Intake(settings, site)
    router = APIRouter(prefix="/api/v1/intake", tags=["intake"], responses=INTAKE_ERRORS)

    def authorise(source_id: str, key: str | None) -> Source | JSONResponse:
        src = site.source_by_id.get(source_id)
        expected = api_key_for(settings, source_id)
        if not key or not hmac.compare_digest(key.encode(), expected.encode()) or src is None:
            return _error(401, "bad_api_key", "a valid X-API-Key for this source is required")
        return src

    async def body_of(request: Request) -> bytes | JSONResponse:
        size = int(request.headers.get("content-length") or 0)
        if size > MAX_BODY_BYTES:
            return _error(413, "too_large", f"body over {MAX_BODY_BYTES} bytes")
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return _error(413, "too_large", f"body over {MAX_BODY_BYTES} bytes")
        return body

    async def commit(source_id: str, stream: str, results: list[Result], body: bytes):
        try:
            out = await run_in_threadpool(intake.store, source_id, stream, results, body)
        except (psycopg.Error, OSError, queue.Empty, ServiceUnreachable) as exc:
            return _error(
                503, "storage_unavailable", f"not stored, retry later ({type(exc).__name__})"
            )
        status = 422 if out["rejected"] and not out["accepted"] else 200
        return JSONResponse(out, status)

    @router.post("/{source_id}/{stream}")
    async def post_stream(
        source_id: str,
        stream: str,
        request: Request,
        x_api_key: str | None = Header(None),
    ) -> JSONResponse:
        """Records of one stream (an object or an array), validated like MQTT messages."""
        src = authorise(source_id, x_api_key)
        if isinstance(src, JSONResponse):
            return src
        body = await body_of(request)
        if isinstance(body, JSONResponse):
            return body
        topic = f"{settings.topic_prefix}/{src.org_unit}/{src.kind}/{src.id}/{stream}"
        results = intake.pipeline.decoder.decode_message(topic, body, datetime.now(UTC))
        return await commit(source_id, stream, results, body)

    async def adapted(source_id: str, request: Request, key: str | None, convert, many: bool):
        src = authorise(source_id, key)
        if isinstance(src, JSONResponse):
            return src
        body = await body_of(request)
        if isinstance(body, JSONResponse):
            return body
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _error(400, "malformed_json", "the body is not valid JSON")
        items = data if isinstance(data, list) and many else [data]
        now = datetime.now(UTC)
        results: list[Result] = []
        for item in items:
            mapped = convert(item)
            if isinstance(mapped, str):
                results.append(Rejected(mapped, src.id, "unsupported"))
            else:
                results += intake.pipeline.decoder.decode_objects(
                    src.id, mapped[0], [mapped[1]], now
                )
        return await commit(source_id, "adapter", results, body)

    @router.post("/{source_id}/ngsi-ld/v1/entities")
    async def ngsi_entity(
        source_id: str, request: Request, x_api_key: str | None = Header(None)
    ) -> JSONResponse:
        """One NGSI-LD entity (normalized or keyValues)."""
        return await adapted(source_id, request, x_api_key, ngsi_to_stream, many=False)

    @router.post("/{source_id}/ngsi-ld/v1/entityOperations/upsert")
    async def ngsi_upsert(
        source_id: str, request: Request, x_api_key: str | None = Header(None)
    ) -> JSONResponse:
        """An array of NGSI-LD entities."""
        return await adapted(source_id, request, x_api_key, ngsi_to_stream, many=True)

    @router.post("/{source_id}/open311/requests")
    async def open311(
        source_id: str, request: Request, x_api_key: str | None = Header(None)
    ) -> JSONResponse:
        """Open311 GeoReport v2 service requests (one object or an array)."""
        return await adapted(source_id, request, x_api_key, open311_to_stream, many=True)

    return router


def health_router(settings: Settings, site: Site, intake: Intake) -> APIRouter:
    """Source health and data quality for the dashboard (bearer token, scoped to the caller's
    org-unit subtree like every other read)."""
    router = APIRouter(prefix="/api/v1/sources", tags=["sources"], responses=AUTH_ERRORS)

    @router.get("/health")
    async def source_health(authorization: str | None = Header(None)) -> JSONResponse:
        """Per source: last seen, rate, clock skew, offline, quality (đúng, đủ, sạch, sống)."""
        token = (authorization or "").removeprefix("Bearer ").strip()
        try:
            p = read_token(settings.jwt_secret.get_secret_value(), token)
        except InvalidToken:
            return _error(401, "unauthenticated", "a valid bearer token is required")
        if p.org_unit not in site.units:
            return _error(403, "forbidden", "your org unit is not in this site")
        scope = site.subtree(p.org_unit)
        try:
            raw = await run_in_threadpool(
                intake.pipeline.redis.hgetall, intake.pipeline.keys("health_summary")
            )
        except (ServiceUnreachable, OSError, redis.RedisError) as exc:
            return _error(503, "bus_unavailable", f"live state unavailable ({type(exc).__name__})")
        out = {}
        for k, v in raw.items():
            entry = orjson.loads(v)
            if entry.get("org_unit") in scope:
                out[k.decode()] = entry
        return JSONResponse(dict(sorted(out.items())))

    return router


def register_intake(app: FastAPI, settings: Settings, site: Site) -> Intake:
    """Mount the intake (and source-health) routes on an app; returns the resources."""
    intake = Intake(settings, site)
    app.include_router(intake_router(settings, site, intake))
    app.include_router(health_router(settings, site, intake))
    return intake
