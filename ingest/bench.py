"""`ioc bench ingest`: ingestion against its physical ceilings, in one run.

1. raw MQTT ceiling: a bare paho subscriber (separate process, QoS 1, parses the JSON with
   orjson and nothing else) fed by the same publishers;
2. raw COPY ceiling: binary COPY of the same rows, in batches of ``IOC_INGEST_BATCH_MAX``, one
   commit each, straight into ``wifi_ap_readings`` (no staging, no conflict check);
3. the project end to end: ``ioc ingest`` (a separate process) at QoS 1 with manual acks after
   commit, for ``--duration`` seconds; then it drains, and the rows are counted.

Everything runs on throwaway parts: a Mosquitto with the project's configuration on a free port
and a temporary database on the configured PostgreSQL, both removed at the end. Latency is
publish time (the payload's ``ts``) → ``ingested_at`` (the committing transaction's start, so it
includes batching and the COPY but not the commit itself, a few ms).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
import psycopg

from core.settings import ROOT, Settings
from core.site import load_site

HELPER = [sys.executable, "-m", "ingest.bench"]


def _status(i: int, ts: str, batch: int, run: str, n: int) -> bytes:
    if batch == 1:
        return orjson.dumps({"msg_id": f"{run}-{n}", "ts": ts, "status": "up", "clients": i % 500})
    return orjson.dumps(
        [
            {"msg_id": f"{run}-{n}-{k}", "ts": ts, "status": "up", "clients": (i + k) % 500}
            for k in range(batch)
        ]
    )


# ---------------------------------------------------------------------------- helper processes
def publish_main(a: argparse.Namespace) -> None:
    """Publish for `seconds` (at `rate`/s, or as fast as the broker acks), QoS 1; print counts."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from core.broker import PUBLISHER_USER, account_password
    from core.settings import load_settings

    settings = load_settings(mqtt_port=a.port)
    site = load_site(settings.site_file)
    aps = [s for s in site.sources if s.kind == "wifi_ap"]
    acked = [0]
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{a.run}", protocol=mqtt.MQTTv5
    )
    c.username_pw_set(PUBLISHER_USER, account_password(settings, PUBLISHER_USER))
    c.max_inflight_messages_set(2000)
    c.on_publish = lambda *args: acked.__setitem__(0, acked[0] + 1)
    c.connect("127.0.0.1", a.port, keepalive=60)
    c.loop_start()
    topics = [f"{a.prefix}/{s.org_unit}/wifi_ap/{s.id}/status" for s in aps]
    n, t0 = 0, time.time()
    end = t0 + a.seconds
    while True:
        now = time.time()
        if now >= end:
            break
        if a.rate and n >= (now - t0) * a.rate:
            time.sleep(0.0005)
            continue
        ts = datetime.fromtimestamp(now, UTC).isoformat()
        c.publish(topics[n % len(topics)], _status(n, ts, a.batch, a.run, n), qos=1)
        n += 1
        while n - acked[0] > 4000:  # paho's own queue stays bounded
            time.sleep(0.0005)
    t1 = time.time()
    deadline = time.time() + 60
    while acked[0] < n and time.time() < deadline:
        time.sleep(0.01)
    c.disconnect()
    c.loop_stop()
    print(json.dumps({"published": n, "acked": acked[0], "t0": t0, "t1": t1}), flush=True)


def rawsub_main(a: argparse.Namespace) -> None:
    """A bare QoS 1 subscriber: parse each payload, count; print when idle for 2 s."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from core.broker import INGEST_USER, account_password
    from core.settings import load_settings

    settings = load_settings(mqtt_port=a.port)
    state = {"n": 0, "first": 0.0, "last": 0.0}

    def on_message(cl, userdata, msg) -> None:
        orjson.loads(msg.payload)
        now = time.time()
        if not state["n"]:
            state["first"] = now
        state["n"] += 1
        state["last"] = now

    ready = threading.Event()
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"bench-raw-{a.run}", protocol=mqtt.MQTTv5
    )
    c.username_pw_set(INGEST_USER, account_password(settings, INGEST_USER))
    c.on_message = on_message
    c.on_subscribe = lambda *args: ready.set()
    c.on_connect = lambda cl, *args: cl.subscribe(f"{a.prefix}/+/+/+/+", qos=1)
    c.connect("127.0.0.1", a.port, keepalive=60)
    c.loop_start()
    ready.wait(10)
    print("ready", flush=True)
    while not state["n"] or time.time() - state["last"] < 2:
        time.sleep(0.1)
    c.disconnect()
    c.loop_stop()
    print(json.dumps(state), flush=True)


# ---------------------------------------------------------------------------- the benchmark
def _publishers(port: int, prefix: str, seconds: float, rate: float, batch: int, k: int):
    per = rate / k if rate else 0
    return [
        subprocess.Popen(
            [
                *HELPER,
                "publish",
                "--port",
                str(port),
                "--prefix",
                prefix,
                "--seconds",
                str(seconds),
                "--rate",
                str(per),
                "--batch",
                str(batch),
                "--run",
                f"{prefix}p{i}",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(k)
    ]


def _collect(procs) -> dict[str, float]:
    outs = [json.loads(p.communicate(timeout=180)[0].strip().splitlines()[-1]) for p in procs]
    return {
        "published": sum(o["published"] for o in outs),
        "acked": sum(o["acked"] for o in outs),
        "t0": min(o["t0"] for o in outs),
        "t1": max(o["t1"] for o in outs),
    }


def raw_mqtt(port: int, seconds: float, batch: int, k: int) -> float:
    prefix = f"raw{uuid.uuid4().hex[:6]}"
    sub = subprocess.Popen(
        [*HELPER, "rawsub", "--port", str(port), "--prefix", prefix, "--run", prefix],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sub.stdout is not None
    sub.stdout.readline()  # "ready"
    pub = _collect(_publishers(port, prefix, seconds, 0, batch, k))
    state = json.loads(sub.communicate(timeout=120)[0].strip().splitlines()[-1])
    span = max(1e-6, state["last"] - state["first"])
    if state["n"] < pub["published"]:
        print(f"note: raw subscriber got {state['n']} of {pub['published']}", file=sys.stderr)
    return state["n"] / span


def raw_copy(url: str, seconds: float, batch_rows: int) -> float:
    cols = (
        "time",
        "source_id",
        "org_unit_id",
        "msg_id",
        "up",
        "clients",
        "rx_bytes",
        "tx_bytes",
        "logins",
    )
    types = ("timestamptz", "text", "text", "text", "bool", "int4", "int8", "int8", "int4")
    n, t0 = 0, time.monotonic()
    now = datetime.now(UTC)
    with psycopg.connect(url) as conn:
        while time.monotonic() - t0 < seconds:
            with (
                conn.cursor() as cur,
                cur.copy(
                    f"COPY wifi_ap_readings ({', '.join(cols)}) FROM STDIN (FORMAT BINARY)"  # type: ignore[arg-type]
                ) as copy,
            ):
                copy.set_types(types)
                for i in range(batch_rows):
                    copy.write_row(
                        (
                            now,
                            "wifi-ap-motcua",
                            "iahdrai-motcua",
                            f"copy-{n + i}",
                            True,
                            i % 500,
                            None,
                            None,
                            None,
                        )
                    )
            conn.commit()
            n += batch_rows
        rate = n / (time.monotonic() - t0)
        conn.execute("TRUNCATE wifi_ap_readings")
        conn.commit()
    return rate


def run_bench(settings: Settings, args: argparse.Namespace) -> dict[str, object]:
    from ingest.throwaway import Broker, create_database, drop_database

    site = load_site(settings.site_file)
    owner = settings.database_url.get_secret_value()
    broker = Broker(settings, site).start()
    url = create_database(owner, site, f"ioc_bench_{uuid.uuid4().hex[:8]}")
    rid = uuid.uuid4().hex[:8]
    prefix = f"bench{rid}"
    k = max(1, args.publishers)
    ingest = None
    try:
        raw_s = min(15.0, max(5.0, args.duration / 4))
        raw_mqtt_rate = raw_mqtt(broker.settings.mqtt_port, raw_s, args.batch, k)
        raw_copy_rate = raw_copy(url, raw_s, settings.ingest_batch_max)
        env = {k_: v for k_, v in os.environ.items() if not k_.upper().startswith("IOC_")}
        env.update(
            IOC_DATABASE_URL=url,
            IOC_MQTT_PORT=str(broker.settings.mqtt_port),
            IOC_VAR_DIR=str(broker.dir),
            IOC_REDIS_PREFIX=f"iocbench-{rid}",
            IOC_TOPIC_PREFIX=prefix,
            IOC_INGEST_CLIENT_ID=f"bench-ingest-{rid}",
            IOC_SITE_FILE=str(settings.site_file),
            IOC_LOG_LEVEL="WARNING",
        )
        log_path = Path(broker.dir) / "ingest.log"
        ingest = subprocess.Popen(
            [sys.executable, "-m", "core.cli", "ingest"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(log_path, "wb"),  # noqa: SIM115
        )
        time.sleep(2.0)  # connected and subscribed
        pub = _collect(
            _publishers(broker.settings.mqtt_port, prefix, args.duration, args.rate, args.batch, k)
        )
        expected_rows = pub["published"] * args.batch
        with psycopg.connect(url, autocommit=True) as conn:
            # Drain: wait until every row is there, or no progress for 15 s (then the rest
            # counts as lost).
            rows, last_rows, progress_at = 0, -1, time.time()
            while rows < expected_rows and time.time() - progress_at < 15:
                rows = conn.execute("SELECT count(*) FROM wifi_ap_readings").fetchone()[0]
                if rows != last_rows:
                    last_rows, progress_at = rows, time.time()
                time.sleep(0.5)
            time.sleep(1.0)
            lag = "extract(epoch FROM ingested_at - time)"
            q = conn.execute(
                "SELECT count(*), count(DISTINCT msg_id), max(ingested_at), "  # type: ignore[arg-type]
                f"percentile_cont(0.5) WITHIN GROUP (ORDER BY {lag}), "
                f"percentile_cont(0.99) WITHIN GROUP (ORDER BY {lag}) FROM wifi_ap_readings"
            ).fetchone()
        rows, distinct, last_commit, p50, p99 = q
        span = max(1e-6, (last_commit.timestamp() if last_commit else pub["t1"]) - pub["t0"])
        stored_msgs = distinct / args.batch
        result: dict[str, object] = {
            "msgs_per_s": round(stored_msgs / span),
            "rows_per_s": round(distinct / span),
            "raw_mqtt_msgs_per_s": round(raw_mqtt_rate),
            "raw_copy_rows_per_s": round(raw_copy_rate),
            "ratio_mqtt": round(stored_msgs / span / raw_mqtt_rate, 3),
            "ratio_copy": round(distinct / span / raw_copy_rate, 3),
            "p50_ms": round((p50 or 0) * 1000, 1),
            "p99_ms": round((p99 or 0) * 1000, 1),
            "published": int(pub["published"]),
            "publisher_acked": int(pub["acked"]),
            "readings_per_msg": args.batch,
            "stored": int(distinct),
            "rows": int(rows),
            "lost": int(expected_rows - distinct),
            "duplicated": int(rows - distinct),
            "duration_s": args.duration,
            "target_rate": args.rate or "max",
            "publishers": k,
            "cpus": os.cpu_count(),
            "receive_maximum": settings.mqtt_receive_maximum,
            "batch_max": settings.ingest_batch_max,
        }
    finally:
        if ingest is not None:
            ingest.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                ingest.wait(15)
        broker.cleanup()
        drop_database(owner, url)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>22}: {value}")
    return result


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m ingest.bench")
    sub = p.add_subparsers(dest="role", required=True)
    sp = sub.add_parser("publish")
    for name, typ in (
        ("--port", int),
        ("--prefix", str),
        ("--seconds", float),
        ("--rate", float),
        ("--batch", int),
        ("--run", str),
    ):
        sp.add_argument(name, type=typ, required=True)
    sp = sub.add_parser("rawsub")
    for name, typ in (("--port", int), ("--prefix", str), ("--run", str)):
        sp.add_argument(name, type=typ, required=True)
    a = p.parse_args()
    publish_main(a) if a.role == "publish" else rawsub_main(a)


if __name__ == "__main__":
    main()
