"""The websocket `/ws`.

Authenticate with `?token=…` or a first message `{"op": "auth", "token": …}` within 5 s; anything
else is closed with 1008 (policy violation). Then:

- `{"op": "subscribe", "channels": ["kpi", "camera"], "resume": {"camera": "<seq>"}}` → for each
  channel a `snapshot` (or, with a `resume` seq the bus still holds, exactly the missed `delta`s
  in order followed by `resumed`), then `delta`s. Every snapshot and delta carries the channel's
  `seq` (the Redis Stream entry id of the last change it includes): keep the latest per channel
  and send it back after a reconnect.
- `{"op": "unsubscribe", "channels": [...]}`, `{"op": "ping"}` → `pong`.

Channels: kpi (all roles), camera, health, incidents (admin, operator, leader), assignments (the
caller's own incidents). A client that does not read is closed with 1013 once its buffer is full.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from api.deps import AppState, caller_for
from api.errors import ApiError
from api.live.hub import CHANNEL_ROLES, CHANNELS, KPI_INTERVAL_S, Hub, LiveClient

log = logging.getLogger("ioc.api.ws")
router = APIRouter()
WS_POLICY_VIOLATION = 1008
WS_TRY_AGAIN = 1013
WS_MAX_MESSAGE = 4096
AUTH_TIMEOUT_S = 5.0
SEND_TIMEOUT_S = 10.0


def parse_message(text: str) -> dict[str, Any]:
    if len(text) > WS_MAX_MESSAGE:
        raise ValueError("message too large")
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ValueError("message is not JSON") from None
    if not isinstance(msg, dict):
        raise ValueError("message must be a JSON object")
    return msg


async def send_loop(ws: WebSocket, client: LiveClient) -> None:
    """Send queued frames in order; merged KPI changes at most every KPI_INTERVAL_S."""
    try:
        await _send_frames(ws, client)
    except TimeoutError:
        client.drop("too_slow")


async def _send_frames(ws: WebSocket, client: LiveClient) -> None:
    loop = asyncio.get_running_loop()
    while not client.dropped:
        if client.frames:
            text = client.frames.popleft()
            if len(client.frames) < client.max_frames // 2:
                client.room.set()
            await asyncio.wait_for(ws.send_text(text), SEND_TIMEOUT_S)
            client.sent += 1
            continue
        wait = None
        if client.kpi_acc:
            wait = client.kpi_flushed + KPI_INTERVAL_S - loop.time()
            if wait <= 0:
                client.kpi_flushed = loop.time()
                await asyncio.wait_for(ws.send_text(client.take_kpi()), SEND_TIMEOUT_S)
                client.sent += 1
                continue
        client.room.set()
        client.wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(client.wake.wait(), wait)


async def read_loop(ws: WebSocket, client: LiveClient, hub: Hub) -> None:
    while True:
        text = await ws.receive_text()
        try:
            msg = parse_message(text)
        except ValueError as exc:
            client.push({"type": "error", "code": "bad_message", "message": str(exc)})
            continue
        op = msg.get("op")
        if op in ("subscribe", "unsubscribe"):
            channels = msg.get("channels")
            resume = msg.get("resume") or {}
            if not isinstance(channels, list) or not isinstance(resume, dict):
                client.push({"type": "error", "code": "bad_message", "message": "channels: a list"})
                continue
            for ch in channels[: len(CHANNELS)]:
                if ch not in CHANNELS:
                    client.push(
                        {
                            "type": "error",
                            "code": "unknown_channel",
                            "message": f"channels: {', '.join(CHANNELS)}",
                        }
                    )
                elif client.caller.role not in CHANNEL_ROLES[ch]:
                    client.push(
                        {
                            "type": "error",
                            "code": "forbidden",
                            "channel": ch,
                            "message": f"role '{client.caller.role}' may not follow '{ch}'",
                        }
                    )
                elif op == "unsubscribe":
                    client.subs.pop(ch, None)
                else:
                    seq = resume.get(ch)
                    await hub.subscribe(client, ch, seq if isinstance(seq, str) else None)
        elif op == "ping":
            client.push({"type": "pong", "ts": time.time()})
        elif op == "auth":
            continue
        else:
            client.push(
                {
                    "type": "error",
                    "code": "unknown_op",
                    "message": "ops: subscribe, unsubscribe, ping",
                }
            )


@router.websocket("/ws")
async def ws_endpoint(websocket: WebSocket) -> None:
    state: AppState = websocket.app.state.ioc
    token = websocket.query_params.get("token")
    await websocket.accept()
    try:
        if token is None:
            first = await asyncio.wait_for(websocket.receive_text(), AUTH_TIMEOUT_S)
            msg = parse_message(first)
            token = msg.get("token") if msg.get("op") == "auth" else None
            if not isinstance(token, str):
                token = None
        caller = caller_for(state, token)
    except (ApiError, ValueError, TimeoutError, WebSocketDisconnect):
        with contextlib.suppress(Exception):
            await websocket.close(WS_POLICY_VIOLATION, "authentication required")
        return
    hub = state.hub
    assert hub is not None
    client = hub.client(caller, state.settings.ws_buffer_frames)
    state.metrics.ws_clients.inc()
    client.push(
        {"type": "hello", "user": caller.username, "role": caller.role, "org_unit": caller.org_unit}
    )
    tasks = [
        asyncio.create_task(send_loop(websocket, client)),
        asyncio.create_task(read_loop(websocket, client, hub)),
        asyncio.create_task(client.gone.wait()),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        hub.clients.discard(client)
        state.metrics.ws_clients.dec()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
        if client.dropped:
            state.metrics.ws_dropped.labels(client.dropped).inc()
            log.warning(
                "dropped websocket client",
                extra={"user": caller.username, "reason": client.dropped},
            )
        with contextlib.suppress(Exception):
            code = WS_TRY_AGAIN if client.dropped else 1000
            await asyncio.wait_for(websocket.close(code, client.dropped or ""), 1)
        if client.dropped:
            _abort(websocket)


def _abort(websocket: WebSocket) -> None:
    """Cut a connection whose peer stopped reading, so its unsent bytes are freed now rather
    than when TCP gives up (uvicorn's protocol object holds the transport)."""
    proto = getattr(getattr(websocket, "_send", None), "__self__", None)
    transport = getattr(proto, "transport", None)
    if transport is not None:
        with contextlib.suppress(Exception):
            transport.abort()
