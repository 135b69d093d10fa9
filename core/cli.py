"""The `ioc` command. Expected errors print one line and exit non-zero; no traceback."""

from __future__ import annotations

import argparse
import getpass
import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from core.errors import IOCError
from core.settings import Settings, get_settings

log = logging.getLogger("ioc")


def _setup_logging(settings: Settings | None = None) -> None:
    from core.logs import setup_logging

    setup_logging(
        settings.log_level if settings else "INFO", settings.log_format if settings else "json"
    )


def _progress(msg: str) -> None:
    print(f"• {msg}", flush=True)


def setup(settings: Settings, *, quiet: bool = False, broker_files_only: bool = False) -> str:
    """Migrate the database, create rollups, load the site, configure and start the broker.

    Returns what was done to the broker ('started' or 'reloaded')."""
    from core import broker, bus, db
    from core.migrate import apply_migrations
    from core.site import load_site
    from core.sitesync import sync_site
    from core.timescale import ensure_storage

    say = (lambda _m: None) if quiet else _progress
    site = load_site(settings.site_file)
    say(
        f"site file {settings.site_file.name}: {len(site.org_units)} org units, "
        f"{len(site.sources)} sources, {len(site.cameras)} cameras"
    )
    bus.connect(settings).close()
    say("Redis reachable")
    with db.connect(settings) as conn:
        applied = apply_migrations(conn)
        say(f"migrations: {', '.join(applied) if applied else 'up to date'}")
        edition = ensure_storage(
            conn, raw_days=settings.retention_raw_days, rollup_days=settings.retention_rollup_days
        )
        say(
            f"TimescaleDB edition: {edition} "
            f"({'native policies' if edition == 'community' else 'project rollup/retention jobs'})"
        )
        units, sources = sync_site(conn, site)
        say(f"site loaded: {units} org units, {sources} sources")
    if broker_files_only:
        broker.write_files(settings, site)
        say(f"Mosquitto files written to {broker.broker_dir(settings)}")
        return "written"
    action = broker.start(settings, site)
    say(f"Mosquitto {action} on {settings.mqtt_host}:{settings.mqtt_port} (authenticated, ACL)")
    return action


def cmd_setup(args: argparse.Namespace, settings: Settings) -> None:
    setup(settings, broker_files_only=args.broker_files_only)


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> None:
    from core.site import load_site
    from ingest.service import IngestService

    svc = IngestService(settings, load_site(settings.site_file))
    _on_term(svc.stop)
    svc.run()


def cmd_analytics(args: argparse.Namespace, settings: Settings) -> None:
    from analytics.service import AnalyticsService
    from core.site import load_site

    svc = AnalyticsService(settings, load_site(settings.site_file))
    _on_term(svc.stop)
    svc.run()


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    import uvicorn

    from api.app import create_app

    tls: dict[str, str] = {}
    if settings.api_tls:  # HTTPS only: no plain listener is opened
        from core.tls import ensure_tls

        files = ensure_tls(settings.tls_dir, settings.tls_hostnames.split(","))
        tls = {"ssl_certfile": str(files.cert), "ssl_keyfile": str(files.key)}
    app = create_app(settings)
    uvicorn.run(
        app,
        host=args.host or settings.api_host,
        port=args.port or settings.api_port,
        log_level=settings.log_level.lower(),
        log_config=None,  # uvicorn's loggers go through the process's (JSON) handler
        ws_max_size=65536,
        **tls,
    )


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> None:
    import time

    from core.site import load_site
    from ingest.simulator import Simulator

    sim = Simulator(
        settings,
        load_site(settings.site_file),
        seed=args.seed,
        interval_s=args.interval,
        rate=args.rate,
    )
    _on_term(sim.stop)
    if args.backfill_days:
        t0 = time.monotonic()
        _progress(f"writing {args.backfill_days:g} days of history (step {args.backfill_step:g}s)")
        rows = sim.backfill(args.backfill_days, step_s=args.backfill_step)
        _progress(f"stored {rows} rows in {time.monotonic() - t0:.1f}s")
        return
    _progress(
        f"simulating {len(sim.aps)} WiFi access points every {args.interval}s (seed {args.seed})"
    )
    sim.run(args.duration)
    _progress(f"published {sim.published} messages")


def cmd_intake_key(args: argparse.Namespace, settings: Settings) -> None:
    from api.intake import api_key_for
    from core.site import load_site

    if args.source not in load_site(settings.site_file).source_by_id:
        raise IOCError(f"unknown source '{args.source}': see the site file")
    print(api_key_for(settings, args.source))


def cmd_bench(args: argparse.Namespace, settings: Settings) -> None:
    defaults = {"ingest": (60.0, 0.0), "live": (10.0, 500.0)}.get(args.target, (60.0, 0.0))
    args.duration = defaults[0] if args.duration is None else args.duration
    args.rate = defaults[1] if args.rate is None else args.rate
    if args.target == "ingest":
        from ingest.bench import run_bench

        run_bench(settings, args)
    elif args.target == "detect":
        _bench_detect(args, settings)
    elif args.target == "live":
        _bench_live(args, settings)
    elif args.target == "kpi":
        _bench_kpi(args, settings)
    else:  # pragma: no cover - the parser only offers the targets above
        raise IOCError(f"no benchmark for '{args.target}' in this build")


def cmd_broker(args: argparse.Namespace, settings: Settings) -> None:
    from core import broker
    from core.site import load_site

    if args.action == "write":
        broker.write_files(settings, load_site(settings.site_file))
        _progress(f"Mosquitto files written to {broker.broker_dir(settings)}")
        return
    if args.action == "stop":
        _progress("Mosquitto stopped" if broker.stop(settings) else "Mosquitto was not running")
        return
    action = broker.start(settings, load_site(settings.site_file))
    _progress(f"Mosquitto {action} on {settings.mqtt_host}:{settings.mqtt_port}")


def cmd_user(args: argparse.Namespace, settings: Settings) -> None:
    from api.auth import hash_password
    from core import db

    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass()
    if len(password) < 10:
        raise IOCError("password too short: use at least 10 characters")
    with db.connect(settings) as conn:
        if conn.execute("SELECT 1 FROM org_units WHERE id = %s", (args.unit,)).fetchone() is None:
            raise IOCError(f"unknown org unit '{args.unit}': see the site file")
        conn.execute(
            """INSERT INTO users (username, display_name, password_hash, role, org_unit_id)
               VALUES (%s, %s, %s, %s, %s)
               ON CONFLICT (username) DO UPDATE SET password_hash = EXCLUDED.password_hash,
                 role = EXCLUDED.role, org_unit_id = EXCLUDED.org_unit_id,
                 display_name = EXCLUDED.display_name, active = true""",
            (
                args.username,
                args.name or args.username,
                hash_password(password),
                args.role,
                args.unit,
            ),
        )
    _progress(f"user {args.username} ({args.role}, {args.unit}) saved")


def cmd_backup(args: argparse.Namespace, settings: Settings) -> None:
    from core.backup import backup

    while True:
        r = backup(settings, keep_days=args.keep_days)
        _progress(
            f"backup {r.path}: {r.rows} rows, {r.bytes / 1e6:.1f} MB in {r.seconds:.1f}s"
            + (f", pruned {len(r.pruned)} old" if r.pruned else "")
        )
        if not args.every:
            return
        time.sleep(args.every * 3600)


def cmd_restore(args: argparse.Namespace, settings: Settings) -> None:
    from pathlib import Path

    from core.backup import restore

    db_name, rows, seconds = restore(
        settings, Path(args.backup), target_db=args.target_db, replace=args.replace
    )
    _progress(f"restored {rows} rows into database {db_name} in {seconds:.1f}s")


def cmd_demo(args: argparse.Namespace, settings: Settings) -> None:
    """Everything in one process group: broker, migrations, ingest, analytics, API, simulator."""
    from core.demo import run_demo

    run_demo(settings, setup, port=args.port or settings.api_port)


def cmd_detect(args: argparse.Namespace, settings: Settings) -> None:
    """Run the camera pipeline on a file or URL; no service needed."""
    import orjson

    from analytics.vision.runner import pick_camera, run
    from core.site import load_site

    site = load_site(args.site) if args.site else None
    camera = pick_camera(site, args.camera, args.source)
    media = None if args.no_snapshots else (args.media or settings.var_dir / "media")
    for item in run(
        args.source,
        camera,
        model=args.model,
        media_dir=media,
        fps=args.fps,
        max_seconds=args.max_seconds,
        threads=args.threads,
    ):
        if args.json:
            sys.stdout.write(orjson.dumps(item).decode() + "\n")
        elif "summary" in item:
            s = item["summary"]
            _progress(
                f"{s['frames_read']} frames read, {s['frames_detected']} detected, "
                f"{s['fps']} fps ({s['model']})"
            )
        else:
            _progress(
                f"{item['start_s']:7.1f}–{item['end_s']:7.1f} s  {item['rule']} "
                f"{item['zone'] or '-'}  {item['label']} ×{item['max_count']} "
                f"score {item['score']:.2f} tracks {item['track_ids']}"
            )
        sys.stdout.flush()


def cmd_cameras(args: argparse.Namespace, settings: Settings) -> None:
    from analytics.vision.service import CameraService
    from core.site import load_site

    svc = CameraService(
        settings,
        load_site(settings.site_file),
        cameras=args.camera or None,
        threads=args.threads,
        worker_id=args.worker_id,
        lease_ttl_s=args.lease_ttl,
        stall_s=args.stall,
    )
    _on_term(svc.stop)
    svc.run()


def _print_json(data: object) -> None:
    import orjson

    print(orjson.dumps(data, option=orjson.OPT_INDENT_2, default=str).decode())


def cmd_kpi(args: argparse.Namespace, settings: Settings) -> None:
    """Each KPI's current value, target, status and pace forecast for one org unit."""
    from datetime import UTC, datetime

    from analytics.kpi.engine import fmt_number
    from analytics.ops.reports import STATUS_VI
    from core import db
    from core.migrate import check_schema
    from core.site import load_site

    site = load_site(settings.site_file)
    unit = args.unit or site.org_units[0].id
    if unit not in site.units:
        raise IOCError(f"unknown org unit '{unit}': see the site file")
    with db.connect(settings) as conn:
        check_schema(conn)
        have = conn.execute("SELECT count(*) FROM kpi_current").fetchone()[0]
        if args.refresh or not have:
            from analytics.kpi.store import ensure_kpi_storage, refresh_cycle

            ensure_kpi_storage(conn)
            refresh_cycle(conn, site, datetime.now(UTC))
        rows = conn.execute(
            'SELECT kpi_id, "window", value, target, status, forecast, detail, computed_at '
            'FROM kpi_current WHERE org_unit_id = %s ORDER BY kpi_id, "window"',
            (unit,),
        ).fetchall()
    order = {k.id: i for i, k in enumerate(site.all_kpis)}
    rows.sort(key=lambda r: (order.get(r[0], 999), r[1]))
    if args.window:
        rows = [r for r in rows if r[1] == args.window]
    if args.json:
        _print_json(
            [
                {"kpi": r[0], "name": site.kpi_by_id[r[0]].name if r[0] in site.kpi_by_id else r[0],
                 "unit": unit, "window": r[1], "value": r[2], "target": r[3], "status": r[4],
                 "forecast": r[5], "pace": r[6].get("pace"), "computed_at": r[7]}
                for r in rows
            ]
        )  # fmt: skip
        return
    print(f"{site.units[unit].name} ({unit})")
    for kpi_id, window, value, target, status, _fc, detail, _at in rows:
        k = site.kpi_by_id.get(kpi_id)
        u = k.unit if k else ""
        v = "—" if value is None else fmt_number(round(value, 1), u)
        t = "" if target is None else f"  mục tiêu {fmt_number(target, u)}"
        st = f"  [{STATUS_VI[status]}]" if status else ""
        pace = f"  {detail['pace']}" if detail.get("pace") else ""
        print(f"  {(k.name if k else kpi_id)[:58]:58} {window:8} {v:>14}{t}{st}{pace}")


def cmd_incidents(args: argparse.Namespace, settings: Settings) -> None:
    """Open incidents, most severe first."""
    from analytics.kpi.calendar import LOCAL
    from analytics.ops.incidents import STATUS_VI, list_open
    from core import db
    from core.migrate import check_schema
    from core.site import load_site

    site = load_site(settings.site_file)
    units = site.subtree(args.unit) if args.unit else None
    if args.unit and args.unit not in site.units:
        raise IOCError(f"unknown org unit '{args.unit}': see the site file")
    with db.connect(settings) as conn:
        check_schema(conn)
        rows = list_open(conn, units)
    if args.json:
        _print_json(rows)
        return
    if not rows:
        print("Không có sự cố đang mở.")
    for r in rows:
        opened = r["opened_at"].astimezone(LOCAL).strftime("%H:%M %d/%m")
        who = f" → {r['assigned_to']}" if r["assigned_to"] else ""
        print(
            f"#{r['id']:<5} {r['severity']:8} {STATUS_VI[r['status']]:13} {opened}  "
            f"×{r['occurrences']:<3} {r['title']}{who}"
        )


def cmd_incident(args: argparse.Namespace, settings: Settings) -> None:
    """One lifecycle action on an incident (atomic, recorded with who, when and the note)."""
    from datetime import UTC, datetime

    from analytics.ops.incidents import STATUS_VI, transition
    from core import db
    from core.migrate import check_schema

    action = {"ack": "acknowledge"}.get(args.action, args.action)
    with db.connect(settings) as conn:
        check_schema(conn)
        now = datetime.now(UTC)
        if action == "assign":
            if not args.to:
                raise IOCError("assign needs --to STAFF_ID")
            from analytics.ops.dispatch import Notifier, assign_and_notify
            from core.site import load_site

            notifier = Notifier(settings, load_site(settings.site_file))
            inc, results = assign_and_notify(
                conn, notifier, args.id, args.to, args.actor, now, note=args.note,
                reassign=args.reassign,
            )  # fmt: skip
            sent = ", ".join(f"{r['channel']}:{'ok' if r['ok'] else 'lỗi'}" for r in results)
            _progress(f"incident {args.id} assigned to {args.to} ({sent or 'no channel'})")
            return
        inc = transition(conn, args.id, action, args.actor, now, note=args.note)
    _progress(f"incident {args.id}: {STATUS_VI[inc['status']]}")


def cmd_report(args: argparse.Namespace, settings: Settings) -> None:
    """The monthly KPI report of an org unit, XLSX and PDF, on demand."""
    import re
    from datetime import UTC, datetime

    from analytics.ops.reports import generate
    from core import db
    from core.migrate import check_schema
    from core.site import load_site

    m = re.fullmatch(r"(\d{4})-(\d{2})", args.month or "")
    if not m or not 1 <= int(m.group(2)) <= 12:
        raise IOCError("--month must look like 2025-06")
    site = load_site(settings.site_file)
    unit = args.unit or site.org_units[0].id
    with db.connect(settings) as conn:
        check_schema(conn)
        _rep, files, sent = generate(
            conn, settings, site, unit, int(m.group(1)), int(m.group(2)),
            now=datetime.now(UTC), out_dir=args.out, deliver=not args.no_send,
        )  # fmt: skip
    for f in files:
        _progress(f"written {f}")
    if sent:
        _progress(f"sent to {sent}")


def cmd_ops(args: argparse.Namespace, settings: Settings) -> None:
    from analytics.ops.service import OpsService
    from core.site import load_site

    svc = OpsService(settings, load_site(settings.site_file))
    _on_term(svc.stop)
    svc.run()


def _print_result(result: dict[str, object], *, as_json: bool) -> None:
    import orjson

    if as_json:
        print(orjson.dumps(result).decode())
    else:
        for k, v in result.items():
            print(f"{k}: {v}")


def _bench_kpi(args: argparse.Namespace, settings: Settings) -> None:
    from analytics.kpi.bench import bench_kpi
    from core.site import load_site

    result = bench_kpi(
        settings,
        load_site(settings.site_file),
        sources=args.sources,
        days=args.days,
        cycles=args.cycles,
    )
    _print_result(result, as_json=args.json)


def _bench_detect(args: argparse.Namespace, settings: Settings) -> None:
    from analytics.vision.bench import bench_detect

    result = bench_detect(
        source=args.source,
        frames=args.frames,
        threads=args.threads,
        extras=args.extras,
        seconds=args.seconds,
    )
    _print_result(result, as_json=args.json)


def _bench_live(args: argparse.Namespace, settings: Settings) -> None:
    from api.live.bench import bench_live

    result = bench_live(settings, clients=args.clients, rate=args.rate, duration=args.duration)
    _print_result(result, as_json=args.json)


def _on_term(stop: Callable[[], None]) -> None:
    def handler(signum: int, frame: object) -> None:
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ioc",
        description="Intelligent Operations Center — Trung tâm giám sát, điều hành thông minh",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, fn: Callable[[argparse.Namespace, Settings], None], help_: str
    ) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(fn=fn)
        return sp

    sp = add("setup", cmd_setup, "migrate the database, load the site file, configure the broker")
    sp.add_argument(
        "--broker-files-only",
        action="store_true",
        help="write the broker's config, passwords and ACL but do not start it",
    )
    sp = add(
        "demo",
        cmd_demo,
        "run the whole IOC with the simulator; the page is on http://127.0.0.1:8000",
    )
    sp.add_argument("--port", type=int)
    add("ingest", cmd_ingest, "consume MQTT, validate, store in TimescaleDB, publish live values")
    add("analytics", cmd_analytics, "compute KPIs from live values; run rollup and retention jobs")
    sp = add("serve", cmd_serve, "serve the REST + websocket API and the dashboard")
    sp.add_argument("--host")
    sp.add_argument("--port", type=int)
    sp = add("simulate", cmd_simulate, "publish a simulated district over MQTT")
    sp.add_argument("--seed", type=int, default=7)
    sp.add_argument("--interval", type=float, default=1.0, help="seconds between rounds")
    sp.add_argument("--duration", type=float, help="stop after this many seconds")
    sp.add_argument("--rate", type=float, default=1.0, help="rate multiplier (load tests)")
    sp.add_argument(
        "--backfill-days", type=float, help="write this many days of history to the database"
    )
    sp.add_argument("--backfill-step", type=float, default=60.0, help="seconds between readings")
    sp = add("intake-key", cmd_intake_key, "print the HTTP intake API key of a source")
    sp.add_argument("source")
    sp = bench = add("bench", cmd_bench, "measure a part of the IOC against its physical ceiling")
    sp.add_argument("target", choices=["ingest", "detect", "live", "kpi"])
    sp.add_argument("--json", action="store_true", help="print the result as JSON")
    sp.add_argument("--duration", type=float, help="ingest/live: seconds of load (60 / 10)")
    sp.add_argument("--rate", type=float, help="ingest/live: msgs/s (ingest 0: max; live 500)")
    sp.add_argument("--batch", type=int, default=1, help="ingest: readings per message")
    sp.add_argument("--publishers", type=int, default=2, help="ingest: publisher processes")
    sp = add("broker", cmd_broker, "start, reload or stop the project's Mosquitto")
    sp.add_argument("action", choices=["start", "reload", "stop", "write"])
    sp = add("backup", cmd_backup, "back up the database (consistent snapshot, checksummed)")
    sp.add_argument("--keep-days", type=float, default=14, help="retention of old backups")
    sp.add_argument("--every", type=float, help="repeat every this many hours")
    sp = add(
        "restore", cmd_restore, "restore a backup into a new database (or --replace the live one)"
    )
    sp.add_argument("backup", help="a backup folder, e.g. var/backups/ioc-20260101T000000Z")
    sp.add_argument("--target-db", help="name of the database to restore into")
    sp.add_argument("--replace", action="store_true", help="swap the restored database in")
    sp = add("user", cmd_user, "create or update an account (password read from the terminal)")
    sp.add_argument("username")
    sp.add_argument("--role", required=True, choices=["admin", "operator", "leader", "field"])
    sp.add_argument("--unit", required=True, help="org unit id from the site file")
    sp.add_argument("--name", help="display name")
    sp.add_argument("--password-stdin", action="store_true")
    sp = add("detect", cmd_detect, "run camera event detection on a video file or stream URL")
    sp.add_argument("source", help="video file or rtsp:// / http:// URL")
    sp.add_argument("--site", type=Path, help="site file with the camera's zones and rules")
    sp.add_argument("--camera", help="camera id in the site file")
    sp.add_argument("--json", action="store_true", help="one JSON line per event, then a summary")
    sp.add_argument("--model", type=Path, help="model card (default: NanoDet-m 416 COCO)")
    sp.add_argument("--fps", type=float, help="frames processed per second of video (default 5)")
    sp.add_argument("--max-seconds", type=float, help="stop after this many seconds of video")
    sp.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads")
    sp.add_argument("--media", type=Path, help="snapshot directory (default var/media)")
    sp.add_argument("--no-snapshots", action="store_true")
    sp = add("cameras", cmd_cameras, "watch the site's cameras: events to TimescaleDB and the bus")
    sp.add_argument("--camera", action="append", help="only this camera id (repeatable)")
    sp.add_argument("--worker-id", help="name in the camera leases (default: host-pid)")
    sp.add_argument(
        "--lease-ttl", type=float, default=6.0, help="seconds a dead worker keeps its cameras"
    )
    sp.add_argument("--stall", type=float, default=5.0, help="seconds without a frame: offline")
    sp.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads")
    sp = bench
    sp.add_argument("--source", help="detect: video file (default: vtest.avi from opencv-doc)")
    sp.add_argument("--frames", type=int, default=100, help="detect: frames per measurement")
    sp.add_argument("--threads", type=int, default=2, help="detect: ONNX Runtime threads")
    sp.add_argument("--extras", action="store_true", help="detect: also INT8 and 320/256 px")
    sp.add_argument(
        "--seconds", type=float, default=12.0, help="detect: video seconds per concurrent step"
    )
    sp.add_argument("--clients", type=int, default=100, help="live: websocket clients")
    sp.add_argument("--sources", type=int, default=1000, help="kpi: WiFi sources")
    sp.add_argument("--days", type=int, default=30, help="kpi: days of 1-minute data")
    sp.add_argument("--cycles", type=int, default=5, help="kpi: refresh cycles timed")
    sp = add("kpi", cmd_kpi, "print each KPI's value, target, status and pace forecast")
    sp.add_argument("--unit", help="org unit id (default: the top of the tree)")
    sp.add_argument("--window", help="only this window (today, week, month, quarter, ytd, …)")
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--refresh", action="store_true", help="run a KPI refresh cycle first")
    sp = add("incidents", cmd_incidents, "list open incidents")
    sp.add_argument("--unit", help="only this org unit and the units below it")
    sp.add_argument("--json", action="store_true")
    sp = add("incident", cmd_incident, "acknowledge, assign, start, resolve, close or reopen")
    sp.add_argument("action", choices=["ack", "assign", "start", "resolve", "close", "reopen"])
    sp.add_argument("id", type=int)
    sp.add_argument("--actor", required=True, help="who does it (recorded in the audit trail)")
    sp.add_argument("--to", help="staff id (assign)")
    sp.add_argument("--note", default="")
    sp.add_argument("--reassign", action="store_true")
    sp = add("report", cmd_report, "write (and send) the monthly KPI report of an org unit")
    sp.add_argument("--unit")
    sp.add_argument("--month", required=True, help="YYYY-MM")
    sp.add_argument("--out", type=Path, help="directory (default var/reports)")
    sp.add_argument("--no-send", action="store_true")
    add("ops", cmd_ops, "run KPI refresh, rules → incidents, escalations and scheduled reports")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
        _setup_logging(settings)
        args.fn(args, settings)
    except IOCError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
