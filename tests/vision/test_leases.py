"""Camera workers sharing a site's cameras through leases in Redis: the pure assignment logic, the
Redis side on the real Redis, and three real `ioc cameras` processes on a real RTSP server with
one killed by SIGKILL and one stopped gracefully."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import redis
import yaml

from analytics.vision.leases import LeaseStore, plan, quota
from core import bus
from core.settings import ROOT, Settings
from tests.vision.conftest import RtspServer, wait_for

CAMS = [f"cam-{i}" for i in range(7)]


def converge(workers: list[str], holders: dict[str, str | None], rounds: int = 10) -> int:
    """Run every worker's plan in turn until nothing changes; the number of moves."""
    moves = 0
    for _ in range(rounds):
        changed = False
        for w in workers:
            p = plan(w, CAMS, workers, holders)
            for c in p.release:
                holders[c] = None
                changed = True
            for c in p.claim:
                if holders.get(c) is None:  # SET NX: the first claimer wins
                    holders[c] = w
                    moves += 1
                    changed = True
        if not changed:
            return moves
    raise AssertionError("the plan did not settle")


def test_plan_shares_evenly_and_moves_only_what_it_must() -> None:
    holders: dict[str, str | None] = {}
    workers = ["w1", "w2", "w3"]
    converge(workers, holders)
    per = Counter(holders.values())
    assert set(holders) == set(CAMS) and None not in per
    assert sorted(per.values()) == [2, 2, 3]
    assert sum(quota(w, workers, len(CAMS)) for w in workers) == len(CAMS)
    before = dict(holders)
    assert converge(workers, holders) == 0 and holders == before  # stable: no churn
    # w2 dies: only its cameras move, and the survivors share them evenly.
    lost = {c for c, w in holders.items() if w == "w2"}
    for c in lost:
        holders[c] = None
    converge(["w1", "w3"], holders)
    assert {c for c in CAMS if holders[c] != before[c]} == lost
    assert sorted(Counter(holders.values()).values()) == [3, 4]
    # A new worker joins: it gets its share, taken from the others' surplus.
    converge(["w1", "w3", "w4"], holders)
    assert sorted(Counter(holders.values()).values()) == [2, 2, 3]
    # Whatever the order in which workers come and go, every camera has exactly one holder.
    for order in itertools.permutations(["a", "b", "c"]):
        h: dict[str, str | None] = {}
        for n in range(1, 4):
            converge(list(order[:n]), h)
            assert None not in h.values() and set(h) == set(CAMS)


def test_plan_leaves_cameras_held_by_others_alone() -> None:
    # w9 is not in my view of the live workers, but its lease still holds: not mine to take.
    p = plan("w1", ["a", "b"], ["w1"], {"a": "w9", "b": None})
    assert p.claim == ["b"] and p.release == []


@pytest.fixture
def store_pair(settings: Settings) -> tuple[LeaseStore, LeaseStore]:
    client = redis.Redis.from_url(settings.redis_url)
    keys = bus.Keys(f"{settings.redis_prefix}-{uuid.uuid4().hex[:6]}")
    return LeaseStore(client, keys, "a", 0.5), LeaseStore(client, keys, "b", 0.5)


def test_lease_store_on_redis(store_pair: tuple[LeaseStore, LeaseStore]) -> None:
    a, b = store_pair
    assert a.claim("cam") and not b.claim("cam")
    assert b.renew(["cam"]) == [] and b.release(["cam"]) == 0  # not b's to renew or release
    assert a.holders(["cam", "other"]) == {"cam": "a", "other": None}
    assert set(a.heartbeat()) == {"a"} and set(b.heartbeat()) == {"a", "b"}
    for _ in range(4):  # renewed past its TTL several times over
        time.sleep(0.25)
        assert a.renew(["cam"]) == ["cam"]
    time.sleep(0.7)  # a stops renewing: its lease and membership expire
    assert b.holders(["cam"]) == {"cam": None} and b.heartbeat() == ["b"]
    assert b.claim("cam") and a.renew(["cam"]) == []
    assert b.release(["cam"]) == 1 and a.claim("cam")
    a.release(["cam"])
    a.leave()
    b.leave()


def _site_file(tmp: Path, srv: RtspServer, mounts: list[str]) -> tuple[Path, list[str]]:
    raw = yaml.safe_load((ROOT / "sites" / "iahdrai.yaml").read_text())
    cams = raw["cameras"][:4]
    for i, cam in enumerate(cams):  # four cameras on two mounts
        cam["url"] = srv.url(mounts[i % len(mounts)])
        cam["detect_fps"] = 2
    raw["cameras"] = cams
    path = tmp / "site.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return path, [c["id"] for c in cams]


def _spans(client: redis.Redis, keys: bus.Keys) -> list[dict]:
    return [orjson.loads(f[b"m"]) for _, f in client.xrange(keys.camera_activity_stream)]


def test_three_workers_share_cameras_and_survive_a_kill(
    migrated: Settings,
    env_for: Callable[..., dict[str, str]],
    rtsp_server: Callable[..., RtspServer],
    tmp_path: Path,
) -> None:
    ttl = 3.0
    srv = rtsp_server("m1", "m2")
    site, cams = _site_file(tmp_path, srv, ["m1", "m2"])
    env = env_for(IOC_SITE_FILE=str(site), IOC_VAR_DIR=str(tmp_path / "var"))
    client = redis.Redis.from_url(migrated.redis_url)
    keys = bus.Keys(migrated.redis_prefix)
    store = LeaseStore(client, keys, "observer", ttl)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs = {}
    try:
        for w in ("w1", "w2", "w3"):
            logs[w] = open(tmp_path / f"{w}.log", "wb")  # noqa: SIM115
            procs[w] = subprocess.Popen(
                [sys.executable, "-m", "core.cli", "cameras", "--worker-id", w,
                 "--lease-ttl", str(ttl), "--threads", "1", "--stall", "3"],
                env=env, cwd=ROOT, stdout=logs[w], stderr=subprocess.STDOUT,
            )  # fmt: skip

        def shared() -> dict[str, str | None] | None:
            h = store.holders(cams)
            ok = None not in h.values() and set(h.values()) == {"w1", "w2", "w3"}
            busy = {s["camera"] for s in _spans(client, keys)}
            return h if ok and busy == set(cams) else None

        holders = wait_for(shared, timeout=90, every=0.2)
        assert sorted(Counter(holders.values()).values()) == [1, 1, 2]
        victim = Counter(holders.values()).most_common(1)[0][0]
        moved = [c for c, w in holders.items() if w == victim]
        killed_at = time.time()
        os.kill(procs[victim].pid, signal.SIGKILL)
        procs[victim].wait(10)

        def taken_over() -> bool:
            h = store.holders(moved)
            after = {
                s["camera"] for s in _spans(client, keys)
                if s["worker"] != victim and s["first"] > killed_at
            }  # fmt: skip
            return all(h[c] not in (None, victim) for c in moved) and set(moved) <= after

        wait_for(taken_over, timeout=ttl + 20, every=0.2)
        takeover_s = time.time() - killed_at
        print(f"cameras of the killed worker processed again after {takeover_s:.1f} s")

        # A graceful stop hands its leases back at once (not after the TTL).
        gentle = next(w for w in ("w1", "w2", "w3") if w != victim)
        procs[gentle].terminate()
        assert procs[gentle].wait(30) == 0
        assert gentle not in store.holders(cams).values()
        assert gentle not in store.heartbeat()
        last = next(w for w in ("w1", "w2", "w3") if w not in (victim, gentle))
        wait_for(lambda: set(store.holders(cams).values()) == {last}, timeout=ttl + 20)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
        for w, p in procs.items():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            logs[w].close()
        store.leave()
    assert store.holders(cams) == dict.fromkeys(cams), "leases left behind after a graceful stop"
    # Never two workers on one camera at once: per camera, spans of different workers are disjoint.
    spans = _spans(client, keys)
    for cam in cams:
        mine = sorted((s for s in spans if s["camera"] == cam), key=lambda s: s["first"])
        assert len({s["worker"] for s in mine}) >= 2 or cam not in moved
        for x, y in itertools.combinations(mine, 2):
            if x["worker"] != y["worker"]:
                assert x["last"] < y["first"] or y["last"] < x["first"], (cam, x, y)
    for cam in moved:
        # The victim's frames after its last recorded span went unrecorded: whoever took over
        # must have started after the kill.
        gone = max(s["last"] for s in spans if s["camera"] == cam and s["worker"] == victim)
        later = [s for s in spans if s["camera"] == cam and s["worker"] != victim]
        assert all(s["first"] > killed_at for s in later if s["last"] > gone)
    assert all(p.returncode in (0, -signal.SIGKILL) for p in procs.values())


def test_a_worker_cut_off_from_redis_stops_its_cameras_before_its_lease_ends(
    migrated: Settings, rtsp_server: Callable[..., RtspServer], tmp_path: Path
) -> None:
    """Fencing: a worker that cannot renew stops processing by its own clock, before the lease in
    Redis can expire and another worker take the camera."""
    from analytics.vision.service import CameraService
    from core.site import Camera, load_site
    from tests.conftest import free_port

    port, password = free_port(), uuid.uuid4().hex
    conf = ["--port", str(port), "--bind", "127.0.0.1", "--requirepass", password,
            "--save", "", "--appendonly", "no", "--dir", str(tmp_path)]  # fmt: skip
    redis_proc = subprocess.Popen(["redis-server", *conf], stdout=subprocess.DEVNULL)
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    try:
        wait_for(lambda: _pings(url), timeout=10)
        settings = migrated.model_copy(update={"redis_url": url})
        srv = rtsp_server("cam")
        cam = load_site(ROOT / "sites" / "iahdrai.yaml").cameras[0]
        one = Camera.model_validate({**cam.model_dump(), "url": srv.url("cam"), "detect_fps": 2})
        site = load_site(ROOT / "sites" / "iahdrai.yaml").model_copy(update={"cameras": [one]})
        svc = CameraService(settings, site, media_dir=tmp_path, threads=1, lease_ttl_s=2.0)
        runner = threading.Thread(target=svc.run, daemon=True)
        runner.start()
        try:
            run = wait_for(lambda: svc.running.get(cam.id), timeout=30)
            wait_for(lambda: run.last_frame_at > 0, timeout=30)
            redis_proc.kill()
            redis_proc.wait()
            wait_for(run.done.is_set, timeout=30)
            wait_for(lambda: svc.running.get(cam.id) is not run, timeout=10)  # not restarted
        finally:
            svc.stop()
            runner.join(timeout=30)
        assert not runner.is_alive()
        # The last frame came before the deadline, which is before the lease could expire.
        assert 0 < run.last_frame_at <= run.deadline
    finally:
        if redis_proc.poll() is None:
            redis_proc.kill()
            redis_proc.wait()


def _pings(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url).ping())
    except redis.ConnectionError:
        return False
