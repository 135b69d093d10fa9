"""Camera leases in Redis, so several `ioc cameras` workers share a site's cameras.

Each camera is held by at most one worker through a key ``camera:lease:<id>`` (value: the worker
id, with a TTL) taken with ``SET NX PX`` and renewed every few seconds. Workers announce
themselves in a sorted set scored by expiry time (Redis' own clock, so workers on machines whose
clocks differ agree). A worker that dies stops renewing; its leases and its membership expire
together and the others take its cameras. A worker treats a lease as its own only until its last
successful renewal plus the TTL minus a safety margin, measured on its own monotonic clock from the
moment the renewal was sent, so a paused worker stops processing before another can take over.

``plan`` is pure: who should claim or release what, given the live workers and the holders.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import redis

from core.bus import Keys

# KEYS[1] members zset; ARGV: worker id, ttl ms. Returns the live members.
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""
# KEYS: lease keys; ARGV: worker id, ttl ms. Renews those still ours; returns 1/0 for each.
_RENEW = """
local out = {}
for i, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then
    redis.call('PEXPIRE', k, ARGV[2])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""
# KEYS: lease keys; ARGV: worker id. Deletes those still ours.
_RELEASE = """
local n = 0
for _, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then
    redis.call('DEL', k)
    n = n + 1
  end
end
return n
"""


def _weight(camera: str, worker: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{camera}\0{worker}".encode(), digest_size=8).digest())


def quota(me: str, workers: Iterable[str], n_cameras: int) -> int:
    """My fair share: cameras split evenly, the first workers (by id) taking one more."""
    ranked = sorted(set(workers) | {me})
    base, extra = divmod(n_cameras, len(ranked))
    return base + (1 if ranked.index(me) < extra else 0)


@dataclass(frozen=True)
class Plan:
    claim: list[str]  # free cameras to try to take, best first
    release: list[str]  # cameras I hold beyond my share


def plan(
    me: str, cameras: Iterable[str], workers: Iterable[str], holders: dict[str, str | None]
) -> Plan:
    """What ``me`` should do now. Cameras are preferred by rendezvous hashing, so the same worker
    tends to get the same camera back; counts follow ``quota`` so the load is even. Cameras held
    by another worker are left alone (its lease decides, not our view of who is alive)."""
    cams = sorted(set(cameras))
    workers = set(workers) | {me}
    share = quota(me, workers, len(cams))
    mine = [c for c in cams if holders.get(c) == me]
    free = [c for c in cams if not holders.get(c)]

    # Prefer the cameras for which I am the rendezvous winner, then by my own weight.
    def pref(c: str) -> tuple[bool, int]:
        best = max(workers, key=lambda w: (_weight(c, w), w))
        return (best != me, -_weight(c, me))

    if len(mine) > share:
        surplus = sorted(mine, key=pref, reverse=True)[: len(mine) - share]
        return Plan([], sorted(surplus))
    return Plan(sorted(free, key=pref)[: share - len(mine)], [])


class LeaseStore:
    """The Redis side: membership, claim, renew, release, holders."""

    def __init__(self, client: redis.Redis, keys: Keys, worker: str, ttl_s: float) -> None:
        self.client, self.keys, self.worker = client, keys, worker
        self.ttl_ms = max(100, int(ttl_s * 1000))
        self._heartbeat = client.register_script(_HEARTBEAT)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def key(self, camera: str) -> str:
        return self.keys("camera", "lease", camera)

    @property
    def members_key(self) -> str:
        return self.keys("camera", "workers")

    def heartbeat(self) -> list[str]:
        """Announce myself; the live workers."""
        live = self._heartbeat(keys=[self.members_key], args=[self.worker, self.ttl_ms])
        return [w.decode() if isinstance(w, bytes) else w for w in live]

    def holders(self, cameras: list[str]) -> dict[str, str | None]:
        if not cameras:
            return {}
        vals = self.client.mget([self.key(c) for c in cameras])
        return {c: (v.decode() if v else None) for c, v in zip(cameras, vals, strict=True)}

    def claim(self, camera: str) -> bool:
        return bool(self.client.set(self.key(camera), self.worker, nx=True, px=self.ttl_ms))

    def renew(self, cameras: list[str]) -> list[str]:
        """Renew my leases; the cameras still mine."""
        if not cameras:
            return []
        res = self._renew(keys=[self.key(c) for c in cameras], args=[self.worker, self.ttl_ms])
        return [c for c, ok in zip(cameras, res, strict=True) if ok]

    def release(self, cameras: list[str]) -> int:
        if not cameras:
            return 0
        return int(self._release(keys=[self.key(c) for c in cameras], args=[self.worker]))

    def leave(self) -> None:
        self.client.zrem(self.members_key, self.worker)


def lease_deadline(sent_at: float, ttl_s: float, margin: float = 0.2) -> float:
    """Until when (monotonic) a lease renewed by a request sent at ``sent_at`` is surely ours:
    the TTL less a margin for clock drift and for stopping a camera."""
    return sent_at + ttl_s * (1 - margin)
