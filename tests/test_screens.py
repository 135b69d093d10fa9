"""The three screens in headless Chromium against the real API and Redis: sign in per role, live
values change, camera events and incidents appear, staleness is shown, a commune account sees
nothing of another commune, the phone queues actions offline without duplicates. Screenshots go
to test-artifacts/."""

from __future__ import annotations

import re
import time

import httpx
import orjson
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from core import bus
from core.site import load_site
from tests.api_util import ApiServer, login, make_user
from tests.conftest import CHROMIUM_ARGS, SAMPLE_SITE

PASSWORD = "mat-khau-man-hinh-1"
USERS = {
    "op-wall": ("operator", "iahdrai"),
    "ld-tablet": ("leader", "iahdrai"),
    "ld-xa-iadal": ("leader", "iahdrai-iadal"),
    "cb-phone": ("field", "iahdrai-iadal"),
}


@pytest.fixture(scope="module")
def screens_settings(migrated):
    """The run's database, but a Redis prefix of its own: the screens assert what is live
    (staleness, counts), so other tests' live state must not show on them."""
    s = migrated.model_copy(update={"redis_prefix": migrated.redis_prefix + "-screens"})
    yield s
    import redis

    r = redis.Redis.from_url(s.redis_url)
    keys = list(r.scan_iter(f"{s.redis_prefix}:*", count=1000))
    if keys:
        r.delete(*keys)


@pytest.fixture(scope="module")
def api(screens_settings):
    migrated = screens_settings
    for name, (role, unit) in USERS.items():
        make_user(migrated, name, role, unit, PASSWORD)
    with ApiServer(migrated) as server:
        yield server


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield b
        b.close()


class Bus:
    """Publishes what analytics, the camera pipeline and the incident engine publish."""

    def __init__(self, rds, settings) -> None:
        self.r, self.k = rds, bus.Keys(settings.redis_prefix)

    def kpi(self, kpi: str, values: dict[str, float]) -> None:
        now = time.time()
        self.r.hset(
            self.k.kpi_latest,
            mapping={
                f"{kpi}:{u}": orjson.dumps({"value": v, "ts": now}) for u, v in values.items()
            },
        )
        bus.xadd_json(self.r, self.k.kpi_stream, {"kpi": kpi, "ts": now, "values": values})

    def camera(self, camera: str, rule: str, eid: str) -> None:
        bus.xadd_json(
            self.r,
            self.k("stream", "camera_events"),
            {
                "phase": "start",
                "id": eid,
                "camera": camera,
                "rule": rule,
                "label": "person",
                "score": 0.91,
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
                "detail": {"box": [0.42, 0.38, 0.12, 0.3]},
            },
        )

    def incident(
        self,
        iid: str,
        unit: str,
        severity: str,
        title: str,
        assignee: str | None = None,
        status: str = "open",
    ) -> None:
        now = time.time()
        iso = lambda s: time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(s))  # noqa: E731
        bus.xadd_json(
            self.r,
            self.k("stream", "incidents"),
            {
                "incident": {
                    "id": iid,
                    "org_unit": unit,
                    "severity": severity,
                    "status": status,
                    "title": title,
                    "assignee": assignee,
                    "opened_at": iso(now - 600),
                    "resolve_due_at": iso(now + 3000),
                    "lat": None,
                    "lon": None,
                    "evidence": [{"kind": "camera", "note": "Ảnh từ camera cầu Sê San"}],
                }
            },
        )


@pytest.fixture
def pub(rds, screens_settings) -> Bus:
    return Bus(rds, screens_settings)


def sign_in(page: Page, url: str, user: str) -> None:
    page.goto(url)
    expect(page.locator("#login h1")).to_have_text("Đăng nhập")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("#login button[type=submit]")
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator("#conn")).to_have_class("badge on", timeout=10000)


def test_wall_display_live_at_1080p_and_4k(api, browser, pub, artifacts):
    pub.kpi(
        "wifi_clients",
        {"iahdrai": 120, "iahdrai-iatoi": 80, "iahdrai-iadal": 25, "iahdrai-iadom": 15},
    )
    pub.kpi("online_rate", {"iahdrai": 78.5})
    pub.r.hset(
        pub.k.latest_ts("sensor"),
        mapping={"sensor-sesan-level": time.time() - 3610, "sensor-air-tthc": time.time() - 3700},
    )
    page = browser.new_page(viewport={"width": 1920, "height": 1080})
    sign_in(page, api.url + "/wall", "op-wall")
    expect(page.locator("#d-wifi .big")).to_contain_text("120")
    for v in (131, 142):  # live values change on the wall
        pub.kpi("wifi_clients", {"iahdrai": v, "iahdrai-iatoi": v - 40})
        expect(page.locator("#d-wifi .big")).to_contain_text(str(v))
    expect(page.locator("#d-egov .big")).to_contain_text("78,5")  # Vietnamese decimal comma
    expect(page.locator("#d-egov .badge.warn")).to_have_text("Gần đạt")  # 78.5 against 85
    # other tests of the run may have left camera events in the stream window: count from here
    page.wait_for_timeout(500)
    before = int(
        re.match(r"[\d.]*", page.locator("#d-security .big").inner_text())[0].replace(".", "") or 0
    )
    pub.camera("cam-cau-sesan", "intrusion", "ev-wall-1")
    pub.camera("cam-nga-tu-trung-tam", "stopped_vehicle", "ev-wall-2")
    expect(page.locator("#cam-cam-cau-sesan .ev")).to_contain_text("Xâm nhập")
    expect(page.locator("#d-security .big")).to_contain_text(str(before + 1))
    inc_before = page.locator("#incidents .inc").count()
    map_before = page.locator(".map-inc").count()
    pub.incident("9001", "iahdrai-iadal", "critical", "Nước dâng cao tại cầu Sê San")
    pub.incident("9002", "iahdrai-iatoi", "medium", "Đèn tín hiệu ngã tư hỏng")
    expect(page.locator("#incidents .inc")).to_have_count(inc_before + 2)
    expect(page.locator("#incidents .inc[data-id='9001']")).to_have_count(1)
    expect(page.locator("#incidents .inc").first).to_contain_text("Khẩn cấp")
    expect(page.locator("#incidents .inc").first).to_contain_text("còn")  # SLA countdown
    expect(page.locator(".map-inc")).to_have_count(map_before + 2)
    # the environment sensors stopped an hour ago: the tile says so instead of a stale number
    expect(page.locator("#d-env [data-stale=env]")).to_have_text("Dữ liệu cũ · 1 giờ 0′")
    expect(page.locator("#ticker .item").first).to_be_visible()
    assert page.locator("#map svg circle.map-src").count() >= 7
    assert page.locator("#camera-row .cam").count() == 5
    for text in (
        "An ninh trật tự",
        "Giao thông",
        "Chính quyền số",
        "WiFi công cộng",
        "Môi trường",
        "Phản ánh hiện trường",
        "Bản đồ huyện",
    ):
        expect(page.locator("body")).to_contain_text(text)
    page.wait_for_timeout(600)
    page.screenshot(path=str(artifacts / "wall-1920x1080.png"))
    page.set_viewport_size({"width": 3840, "height": 2160})
    page.wait_for_timeout(500)
    box = page.locator("#d-wifi").bounding_box()
    assert box and box["width"] > 500  # the layout scales with the wall, not a small island
    page.screenshot(path=str(artifacts / "wall-3840x2160.png"))
    page.click("#lang")
    expect(page.locator("#d-security .label")).to_contain_text("Security & public order")
    page.close()


def test_wall_and_api_of_a_commune_account_hold_only_its_commune(api, browser, pub, artifacts):
    page = browser.new_page(viewport={"width": 1920, "height": 1080})
    sign_in(page, api.url + "/wall", "ld-xa-iadal")
    pub.kpi("wifi_clients", {"iahdrai-iadal": 33, "iahdrai-iadom": 4477, "iahdrai": 9911})
    pub.incident("9101", "iahdrai-iadom", "critical", "Sự cố ở xã Ia Dom")
    pub.incident("9102", "iahdrai-iadal", "high", "Sự cố ở xã Ia Đal")
    pub.camera("cam-cho-iadom", "crowding", "ev-scope-1")
    expect(page.locator("#d-wifi .big")).to_contain_text("33")
    expect(page.locator("#incidents .inc[data-id='9102']")).to_have_count(1)
    page.wait_for_timeout(800)
    ids = {el.get_attribute("data-id") for el in page.locator("#incidents .inc").all()}
    assert "9102" in ids and "9101" not in ids  # this commune's incidents only, never Ia Dom's
    html = page.content()
    for foreign in (
        "Ia Dom",
        "iahdrai-iadom",
        "cam-cho-iadom",
        "Chợ xã",
        "4.477",
        "4477",
        "9.911",
        "Ia Tơi",
    ):
        assert foreign not in html, foreign
    assert page.locator("#camera-row .cam").count() == 1
    page.screenshot(path=str(artifacts / "wall-commune-scope.png"))
    page.close()
    h = {"Authorization": "Bearer " + login(api.url, "ld-xa-iadal", PASSWORD)}
    live = httpx.get(api.url + "/api/v1/kpis/wifi_clients/live", headers=h).json()
    assert {v["org_unit"] for v in live} == {"iahdrai-iadal"}
    r = httpx.get(api.url + "/api/v1/kpis?unit=iahdrai-iadom", headers=h)
    assert r.status_code == 403


def _wifi_history(db) -> None:
    """Six hours of readings every five minutes, rolled up as the analytics job does."""
    import math
    from datetime import UTC, datetime, timedelta

    from core.timescale import detect_edition, refresh_rollups

    now = datetime.now(UTC).replace(second=0, microsecond=0)
    rows = []
    for i in range(72):
        t = now - timedelta(minutes=5 * (72 - i))
        for ap, unit, base in (
            ("wifi-ap-iadal", "iahdrai-iadal", 20),
            ("wifi-ap-hoitruong", "iahdrai-iatoi", 60),
        ):
            n = int(base + base * 0.6 * math.sin(i / 9))
            rows.append((t, ap, unit, f"hist-{ap}-{i}", True, n))
    with db.cursor() as cur:
        cur.executemany(
            "INSERT INTO wifi_ap_readings (time, source_id, org_unit_id, msg_id, up, clients) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            rows,
        )
        cur.executemany(
            "INSERT INTO rollup_dirty (rollup, bucket, source_id) VALUES ('wifi_ap_1m', %s, %s) "
            "ON CONFLICT DO NOTHING",
            [(r[0], r[1]) for r in rows],
        )
    db.commit()
    refresh_rollups(db, detect_edition(db))
    db.commit()


def test_leader_tablet_cards_drilldown_and_ack(api, browser, pub, artifacts, db):
    _wifi_history(db)
    pub.kpi(
        "wifi_clients",
        {"iahdrai": 150, "iahdrai-iatoi": 90, "iahdrai-iadal": 35, "iahdrai-iadom": 25},
    )
    pub.incident("9201", "iahdrai-iadom", "critical", "Cháy rừng gần xã Ia Dom")
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    sign_in(page, api.url + "/tablet", "ld-tablet")
    expect(page.locator(".card")).to_have_count(len(load_site(SAMPLE_SITE).kpis))  # one per KPI
    expect(page.locator(".card[data-kpi=online_rate]")).to_contain_text("Chỉ tiêu: 85")
    expect(page.locator(".card[data-kpi=wifi_clients] .v")).to_contain_text("150")
    expect(page.locator("#drill tr.drill")).to_have_count(7)  # 3 communes and 4 agencies
    pub.kpi("wifi_clients", {"iahdrai": 161, "iahdrai-iadal": 46})
    expect(page.locator(".card[data-kpi=wifi_clients] .v")).to_contain_text("161")
    expect(page.locator("#drill tr[data-unit=iahdrai-iadal] td.num")).to_have_text("46")
    expect(page.locator("#critical .inc[data-id='9201']")).to_contain_text("Cháy rừng")
    expect(page.locator("#trend canvas")).to_have_count(1)  # the uPlot trend of the last 6 hours
    page.wait_for_timeout(400)
    page.screenshot(path=str(artifacts / "tablet-district.png"))
    with page.expect_response(lambda r: "/actions" in r.url) as resp:
        page.click("#critical .inc[data-id='9201'] button.ack")  # one tap
    body = orjson.loads(resp.value.request.post_data or b"{}")
    assert body["action"] == "acknowledge" and len(body["action_id"]) == 36
    # the incident engine (issue 5) is not installed in this database: a clean 404
    assert resp.value.status == 404
    page.click("#drill tr[data-unit=iahdrai-iadal]")
    expect(page.locator("#crumbs button.cur")).to_have_text("Xã Ia Đal")
    expect(page.locator(".card[data-kpi=wifi_clients] .v")).to_contain_text("46")
    page.close()


def test_field_phone_assignments_and_offline_queue(api, browser, pub, artifacts):
    ctx = browser.new_context(
        viewport={"width": 390, "height": 844},
        is_mobile=True,
        geolocation={"latitude": 14.0161, "longitude": 107.4531},
        permissions=["geolocation"],
    )
    page = ctx.new_page()
    sign_in(page, api.url + "/phone", "cb-phone")
    expect(page.locator("#tasks")).to_contain_text("Không có việc được giao")
    pub.incident("9301", "iahdrai-iadal", "high", "Cây đổ chắn đường liên xã", assignee="cb-phone")
    pub.incident("9302", "iahdrai-iadal", "high", "Việc của người khác", assignee="someone")
    expect(page.locator(".task")).to_have_count(1)
    expect(page.locator(".task")).to_contain_text("Cây đổ chắn đường")
    expect(page.locator(".task")).to_contain_text("Ảnh từ camera cầu Sê San")
    page.wait_for_timeout(300)
    page.screenshot(path=str(artifacts / "phone-assignments.png"))
    posts: list[dict] = []
    page.on(
        "request",
        lambda r: (
            posts.append(orjson.loads(r.post_data or b"{}"))
            if r.method == "POST" and "/actions" in r.url
            else None
        ),
    )
    ctx.set_offline(True)
    page.click(".task button[data-act=acknowledge]")
    page.click(".task button[data-act=acknowledge]")  # a second tap while offline
    page.fill(".task textarea", "Đã đến hiện trường, đang dọn cây")
    page.click(".task button[data-act=resolve]")
    expect(page.locator("#queue-n")).to_have_text("2")
    page.wait_for_timeout(500)
    assert posts == []  # nothing leaves the phone while offline
    page.screenshot(path=str(artifacts / "phone-offline-queue.png"))
    ctx.set_offline(False)
    expect(page.locator("#queue")).to_be_hidden(timeout=15000)
    assert [p["action"] for p in posts] == ["acknowledge", "resolve"]
    assert len({p["action_id"] for p in posts}) == 2
    assert posts[1]["note"] == "Đã đến hiện trường, đang dọn cây"
    assert abs(posts[1]["lat"] - 14.0161) < 1e-6 and abs(posts[1]["lon"] - 107.4531) < 1e-6
    ctx.close()
