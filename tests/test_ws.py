"""The websocket under reconnects, slow readers and several API processes, against the real
Redis: exact resume from per-channel seq numbers, snapshot when the window is gone, KPI
coalescing, a non-reading client dropped with memory flat, two processes delivering one stream."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import socket
import time

import httpx
import orjson
import pytest
import websockets

from api.auth import Principal, issue_token
from core import bus
from tests.api_util import ApiServer, ServeProcess, bearer

CAMERA_OF = {"iahdrai-iadal": "cam-cau-sesan", "iahdrai-iadom": "cam-cho-iadom"}


@pytest.fixture(scope="module")
def api(migrated):
    with ApiServer(migrated) as server:
        yield server


@pytest.fixture(scope="module")
def tokens(migrated):
    secret = migrated.jwt_secret.get_secret_value()

    def tok(name: str, role: str, unit: str) -> str:
        return issue_token(secret, Principal(name, role, unit), 15)  # type: ignore[arg-type]

    return {
        "district": tok("op-ws", "operator", "iahdrai"),
        "iadal": tok("ld-ws-iadal", "leader", "iahdrai-iadal"),
        "field": tok("cb-ws-iadal", "field", "iahdrai-iadal"),
    }


@pytest.fixture
def keys(migrated) -> bus.Keys:
    return bus.Keys(migrated.redis_prefix)


def publish_camera(rds, keys, n: int, *, tag: str, unit: str = "iahdrai-iadal", pad: int = 0):
    """Camera events as the camera pipeline writes them; returns their ids."""
    pipe = rds.pipeline()
    ids = [f"{tag}-{i}" for i in range(n)]
    for eid in ids:
        msg = {
            "phase": "start",
            "id": eid,
            "camera": CAMERA_OF[unit],
            "rule": "intrusion",
            "zone": "bridge",
            "label": "person",
            "score": 0.9,
        }
        if pad:
            msg["detail"] = {"pad": "x" * pad}
        pipe.xadd(keys("stream", "camera_events"), {"m": orjson.dumps(msg)}, maxlen=50_000)
    pipe.execute()
    return ids


async def recv(ws, timeout: float = 5.0) -> dict:
    return orjson.loads(await asyncio.wait_for(ws.recv(), timeout))


async def open_ws(port: int, token: str, sub: dict) -> tuple[object, dict]:
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws?token={token}", max_size=2**22)
    hello = await recv(ws)
    assert hello["type"] == "hello"
    await ws.send(orjson.dumps({"op": "subscribe", **sub}).decode())
    return ws, await recv(ws)


async def collect(ws, want: int, *, channel: str = "camera", timeout: float = 10.0) -> list[dict]:
    out: list[dict] = []
    deadline = time.monotonic() + timeout
    while len([m for m in out if m["type"] == "delta"]) < want:
        left = deadline - time.monotonic()
        assert left > 0, f"got {len(out)} of {want} messages"
        m = await recv(ws, left)
        if m.get("channel") == channel:
            out.append(m)
    return out


async def quiet(ws, seconds: float = 0.4) -> list[dict]:
    """Whatever else arrives in the next moment (should be nothing)."""
    extra = []
    try:
        while True:
            extra.append(await recv(ws, seconds))
    except TimeoutError:
        return extra


def test_reconnect_gets_exactly_the_missed_messages_in_order(api, tokens, rds, keys):
    async def scenario() -> None:
        ws, snap = await open_ws(api.port, tokens["iadal"], {"channels": ["camera"]})
        assert snap["type"] == "snapshot" and snap["channel"] == "camera"
        publish_camera(rds, keys, 3, tag="other", unit="iahdrai-iadom")  # not this commune's
        first = publish_camera(rds, keys, 5, tag="a")
        got = await collect(ws, 5)
        assert [m["event"]["id"] for m in got] == first
        assert all(m["event"]["org_unit"] == "iahdrai-iadal" for m in got)
        seqs = [m["seq"] for m in got]
        assert seqs == sorted(seqs, key=lambda s: tuple(map(int, s.split("-"))))
        last = seqs[-1]
        await ws.close()

        missed = publish_camera(rds, keys, 6, tag="b")  # while away
        publish_camera(rds, keys, 2, tag="other2", unit="iahdrai-iadom")
        ws = await websockets.connect(f"ws://127.0.0.1:{api.port}/ws?token={tokens['iadal']}")
        assert (await recv(ws))["type"] == "hello"
        await ws.send(
            orjson.dumps(
                {"op": "subscribe", "channels": ["camera"], "resume": {"camera": last}}
            ).decode()
        )
        live = publish_camera(rds, keys, 4, tag="c")  # racing the replay
        msgs = await collect(ws, len(missed) + len(live))
        msgs += [m for m in await quiet(ws) if m.get("channel") == "camera"]
        deltas = [m["event"]["id"] for m in msgs if m["type"] == "delta"]
        assert deltas == missed + live  # nothing lost, nothing twice, nothing out of scope
        kinds = [m["type"] for m in msgs]
        assert "snapshot" not in kinds and kinds.count("resumed") == 1
        resumed = kinds.index("resumed")
        assert resumed >= len(missed)  # the replay covers at least what was missed
        assert msgs[resumed]["replayed"] == resumed
        await ws.close()

    asyncio.run(scenario())


def test_resume_from_too_old_a_seq_gets_a_fresh_snapshot(api, tokens, rds, keys):
    publish_camera(rds, keys, 2, tag="old")

    async def scenario() -> None:
        for seq in ("1-0", "not-a-seq", "99999999999999-0"):
            ws, snap = await open_ws(
                api.port, tokens["iadal"], {"channels": ["camera"], "resume": {"camera": seq}}
            )
            assert snap["type"] == "snapshot" and snap["reason"] == "resume_unavailable"
            assert snap["events"] and all(e["org_unit"] == "iahdrai-iadal" for e in snap["events"])
            assert re.fullmatch(r"\d+-\d+", snap["seq"])
            await ws.close()

    asyncio.run(scenario())


def test_channels_follow_role_and_scope(api, tokens, rds, keys):
    async def scenario() -> None:
        ws, first = await open_ws(api.port, tokens["field"], {"channels": ["camera", "kpi"]})
        assert first == {**first, "type": "error", "code": "forbidden", "channel": "camera"}
        snap = await recv(ws)
        assert snap["type"] == "snapshot" and snap["channel"] == "kpi"
        await ws.send('{"op": "subscribe", "channels": ["nope"]}')
        assert (await recv(ws))["code"] == "unknown_channel"
        await ws.send("not json")
        assert (await recv(ws))["code"] == "bad_message"
        await ws.send('{"op": "ping"}')
        assert (await recv(ws))["type"] == "pong"
        await ws.close()

    asyncio.run(scenario())


def test_assignments_and_incidents_channels(api, tokens, rds, keys):
    stream = keys("stream", "incidents")

    def incident(i: str, unit: str, assignee: str | None, status: str = "open") -> None:
        inc = {
            "id": i,
            "org_unit": unit,
            "assignee": assignee,
            "status": status,
            "severity": "high",
            "title": "Ngập cầu Sê San",
        }
        rds.xadd(stream, {"m": orjson.dumps({"incident": inc})})

    incident("inc-1", "iahdrai-iadal", "cb-ws-iadal")

    async def scenario() -> None:
        ws, snap = await open_ws(api.port, tokens["field"], {"channels": ["assignments"]})
        assert [i["id"] for i in snap["incidents"]] == ["inc-1"]
        ws2, snap2 = await open_ws(api.port, tokens["iadal"], {"channels": ["incidents"]})
        assert "inc-1" in [i["id"] for i in snap2["incidents"]]  # other tests add theirs
        assert {i["org_unit"] for i in snap2["incidents"]} == {"iahdrai-iadal"}
        incident("inc-2", "iahdrai-iadom", None)  # another commune: neither sees it
        incident("inc-3", "iahdrai-iadal", "someone-else")
        incident("inc-4", "iahdrai-iadal", "cb-ws-iadal")
        mine = await collect(ws, 1, channel="assignments")
        assert [m["incident"]["id"] for m in mine] == ["inc-4"]
        scoped = await collect(ws2, 2, channel="incidents")
        assert [m["incident"]["id"] for m in scoped] == ["inc-3", "inc-4"]
        await ws.close()
        await ws2.close()

    asyncio.run(scenario())


def test_kpi_updates_are_coalesced(api, tokens, rds, keys):
    async def scenario() -> None:
        ws, snap = await open_ws(api.port, tokens["district"], {"channels": ["kpi"]})
        assert snap["type"] == "snapshot"
        t0 = time.monotonic()
        for i in range(1, 201):  # 200 changes in about a second
            bus.xadd_json(
                rds,
                keys.kpi_stream,
                {
                    "seq": i,
                    "kpi": "wifi_clients",
                    "ts": time.time(),
                    "values": {"iahdrai-iadom": i, "kontum": -1},
                },
            )
            if i % 20 == 0:
                await asyncio.sleep(0.1)
        frames = []
        while True:
            m = await recv(ws)
            if m.get("channel") == "kpi":
                frames.append(m)
                assert "kontum" not in m["kpis"]["wifi_clients"]  # above the scope
                if m["kpis"]["wifi_clients"].get("iahdrai-iadom") == 200:
                    break
        elapsed = time.monotonic() - t0
        assert len(frames) <= elapsed / 0.25 + 2, (len(frames), elapsed)
        values = [f["kpis"]["wifi_clients"]["iahdrai-iadom"] for f in frames]
        assert values == sorted(values)
        # KPI resume: values missed while away arrive merged, newest wins
        last = frames[-1]["seq"]
        await ws.close()
        for v in (201, 202, 203):
            bus.xadd_json(
                rds,
                keys.kpi_stream,
                {
                    "seq": v,
                    "kpi": "wifi_clients",
                    "ts": time.time(),
                    "values": {"iahdrai-iadal": v},
                },
            )
        ws, first = await open_ws(
            api.port, tokens["district"], {"channels": ["kpi"], "resume": {"kpi": last}}
        )
        msgs = [first, *await quiet(ws, 0.6)]
        kinds = [m["type"] for m in msgs if m.get("channel") == "kpi"]
        assert "snapshot" not in kinds and "resumed" in kinds
        merged = [m for m in msgs if m["type"] == "delta"]
        assert len(merged) == 1 and merged[0]["kpis"] == {"wifi_clients": {"iahdrai-iadal": 203}}
        await ws.close()

    asyncio.run(scenario())


# ---------------------------------------------------------------------- several processes
@pytest.fixture(scope="module")
def two_procs(migrated):
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOC_")}
    env.update(
        IOC_DATABASE_URL=migrated.database_url.get_secret_value(),
        IOC_REDIS_PREFIX=migrated.redis_prefix,
        IOC_TOPIC_PREFIX=migrated.topic_prefix,
        IOC_SITE_FILE=str(migrated.site_file),
    )
    with ServeProcess(env) as a, ServeProcess(env) as b:
        yield a, b


def test_two_api_processes_deliver_the_same_stream(two_procs, tokens, rds, keys):
    a, b = two_procs

    async def scenario() -> None:
        wa, _ = await open_ws(a.port, tokens["iadal"], {"channels": ["camera"]})
        wb, _ = await open_ws(b.port, tokens["iadal"], {"channels": ["camera"]})
        ids = publish_camera(rds, keys, 30, tag="two")
        ga, gb = await asyncio.gather(collect(wa, 30), collect(wb, 30))
        pairs_a = [(m["seq"], m["event"]["id"]) for m in ga]
        assert pairs_a == [(m["seq"], m["event"]["id"]) for m in gb]
        assert [i for _, i in pairs_a] == ids
        await wa.close()
        missed = publish_camera(rds, keys, 7, tag="two-missed")
        # resume on the other process with the seq the first one gave
        wa2, _ = await open_ws(
            b.port, tokens["iadal"], {"channels": ["camera"], "resume": {"camera": pairs_a[-1][0]}}
        )
        got = await collect(wa2, 6)  # the first was consumed by open_ws
        got = [_ for _ in got]
        await wa2.close()
        await wb.close()
        return got, missed

    got, missed = asyncio.run(scenario())
    assert [m["event"]["id"] for m in got if m["type"] == "delta"] == missed[1:]


def _raw_ws(port: int, token: str, first: dict) -> socket.socket:
    """A websocket client that subscribes and then never reads (tiny receive buffer)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            f"GET /ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    payload = orjson.dumps(first)
    assert len(payload) < 126
    mask = os.urandom(4)
    s.sendall(
        bytes([0x81, 0x80 | len(payload)])
        + mask
        + bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
    )
    return s


def _metric(url: str, token: str, name: str) -> float:
    text = httpx.get(url + "/metrics", headers=bearer(token)).text
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def test_a_client_that_does_not_read_is_dropped_and_memory_stays_flat(two_procs, tokens, rds, keys):
    a, _ = two_procs
    slow = _raw_ws(a.port, tokens["iadal"], {"op": "subscribe", "channels": ["camera"]})
    time.sleep(0.3)
    dropped_before = _metric(a.url, tokens["district"], "ioc_ws_dropped_total")
    rss_before = a.rss_mb()

    async def scenario() -> float:
        fast, _ = await open_ws(a.port, tokens["iadal"], {"channels": ["camera"]})
        received, t_max = 0, 0.0
        for batch in range(100):  # 100 × 200 events of 2 KB = 40 MB through the process
            t = time.monotonic()
            ids = publish_camera(rds, keys, 200, tag=f"flood{batch}", pad=2000)
            got = await collect(fast, 200, timeout=20)
            assert [m["event"]["id"] for m in got] == ids  # nobody waits for the slow one
            received += len(got)
            t_max = max(t_max, time.monotonic() - t)
        await fast.close()
        assert received == 20_000
        return t_max

    asyncio.run(scenario())
    assert _metric(a.url, tokens["district"], "ioc_ws_dropped_total") == dropped_before + 1
    growth = a.rss_mb() - rss_before
    print(f"RSS growth {growth:.1f} MB after 40 MB to a client that never reads")
    assert growth < 20, growth
    slow.settimeout(2)
    try:
        buf = b""
        while chunk := slow.recv(65536):
            buf += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    slow.close()
