"""The bus: Redis holds live state (latest values, KPI values) and carries updates between
processes as Redis Streams, so a reader that reconnects can replay what it missed.

Key names are namespaced by ``IOC_REDIS_PREFIX`` so that test runs and sites never mix.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import orjson
import redis
import redis.asyncio as aredis

from core.errors import ServiceUnreachable
from core.settings import Settings

STREAM_MAXLEN = 10_000

# Set a field of the latest-values hash only when the reading is newer than the one stored, so a
# late or redelivered reading never overwrites a newer "latest".
_SET_IF_NEWER = """
local n = 0
for i = 1, #ARGV, 3 do
  local cur = redis.call('HGET', KEYS[2], ARGV[i])
  if (not cur) or tonumber(cur) < tonumber(ARGV[i + 1]) then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
    n = n + 1
  end
end
return n
"""


class Keys:
    """Names of every Redis key the IOC uses, under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def __call__(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    @property
    def readings_stream(self) -> str:
        return self("stream", "readings")

    @property
    def kpi_stream(self) -> str:
        return self("stream", "kpi")

    @property
    def camera_events_stream(self) -> str:
        """Camera events, published when they start and again when they end."""
        return self("stream", "camera_events")

    @property
    def camera_status(self) -> str:
        """Hash camera id → latest status JSON (online / offline, since when)."""
        return self("camera", "status")

    @property
    def camera_stats(self) -> str:
        """Hash camera id → frame counters of the worker running it (read, processed, dropped)."""
        return self("camera", "stats")

    @property
    def camera_activity_stream(self) -> str:
        """One entry per camera and second of processing: which worker processed which span."""
        return self("stream", "camera_activity")

    @property
    def kpi_latest(self) -> str:
        return self("kpi", "latest")

    def latest(self, stream: str) -> str:
        return self("latest", stream)

    def latest_ts(self, stream: str) -> str:
        return self("latest_ts", stream)


def _unreachable(settings: Settings, exc: Exception) -> ServiceUnreachable:
    parts = urlsplit(settings.redis_url)
    where = f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379}"
    reason = "connection refused" if "refused" in str(exc).lower() else exc.__class__.__name__
    return ServiceUnreachable(
        f"Redis is not reachable at {where} ({reason}): start it with "
        "`bash deploy/bootstrap.sh setup`"
    )


def connect(settings: Settings) -> redis.Redis:
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise _unreachable(settings, exc) from None
    return client


async def aconnect(settings: Settings) -> aredis.Redis:
    client = aredis.Redis.from_url(settings.redis_url, socket_connect_timeout=3)
    try:
        await client.ping()
    except redis.RedisError as exc:
        raise _unreachable(settings, exc) from None
    return client


def set_latest_if_newer(
    client: redis.Redis, keys: Keys, stream: str, values: dict[str, tuple[float, Any]]
) -> int:
    """Store {source_id: (epoch_s, value)} as latest where newer; return how many changed."""
    if not values:
        return 0
    argv: list[Any] = []
    for source_id, (ts, value) in values.items():
        argv += [source_id, repr(ts), orjson.dumps(value)]
    return int(client.eval(_SET_IF_NEWER, 2, keys.latest(stream), keys.latest_ts(stream), *argv))


def xadd_json(client: redis.Redis, stream: str, message: dict[str, Any]) -> bytes:
    return client.xadd(stream, {"m": orjson.dumps(message)}, maxlen=STREAM_MAXLEN, approximate=True)


def decode_entry(fields: dict[bytes, bytes]) -> dict[str, Any]:
    return orjson.loads(fields[b"m"])
