"""The monthly report: XLSX and PDF in Vietnamese with hand-computed values, sent to a local
reporting endpoint, generated once per period on schedule."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from openpyxl import load_workbook

from analytics.kpi.store import refresh_cycle
from analytics.ops.incidents import Place, open_incident
from analytics.ops.reports import generate, scheduled
from core.site import Operations, Rule
from tests.kpi.test_kpi_values import dossier


class Endpoint:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        ep = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                ep.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_port}/reports"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_monthly_report_xlsx_pdf_sent_and_scheduled_once(kdb, kdb_settings, site, tmp_path):
    june = datetime(2025, 6, 12, 3, tzinfo=UTC)
    dossier(kdb, 101, june, "iahdrai-iatoi", "completed_on_time")
    dossier(kdb, 102, june, "iahdrai-iatoi", "completed_on_time")
    dossier(kdb, 103, june, "iahdrai-iatoi", "completed_late", "counter", False)
    dossier(kdb, 104, datetime(2025, 5, 12, 3, tzinfo=UTC), "iahdrai-iatoi", "completed_on_time")
    kdb.commit()
    refresh_cycle(kdb, site, datetime(2025, 6, 30, 10, tzinfo=UTC))
    r = Rule(
        id="r-rep",
        kind="threshold",
        name="Mực nước cao",
        domain="environment",
        signal={"input": "telemetry", "value": "value"},
        value=1,
    )
    open_incident(kdb, site, r, "x", Place("iahdrai-iadal"), june)
    ep = Endpoint()
    s = site.model_copy(
        update={"operations": Operations(report_endpoint=ep.url, report_units=["iahdrai"])}
    )
    now = datetime(2025, 7, 1, 2, tzinfo=UTC)  # 09:00 on 1 July in Hà Nội
    _rep, files, sent = generate(
        kdb, kdb_settings, s, "iahdrai", 2025, 6, now=now, out_dir=tmp_path
    )
    assert sent == ep.url and len(ep.bodies) == 1
    assert b"bao-cao-iahdrai-2025-06.xlsx" in ep.bodies[0]
    assert b"bao-cao-iahdrai-2025-06.pdf" in ep.bodies[0]
    wb = load_workbook(files[0])
    ws = wb["Chỉ tiêu"]
    assert ws["A1"].value == "BÁO CÁO CHỈ TIÊU THÁNG 06/2025"
    assert ws["A2"].value == "Đơn vị: Huyện Ia H'Drai"
    head = [c.value for c in ws[5]]
    assert head[:6] == ["Mã", "Chỉ tiêu", "Đơn vị tính", "Giá trị", "Mục tiêu", "Đánh giá"]
    rows = {row[0].value: [c.value for c in row] for row in ws.iter_rows(min_row=6)}
    online = rows["online_rate"]
    assert abs(online[3] - 200 / 3) < 1e-9 and online[4] == 85 and online[5] == "Không đạt"
    assert online[-2] == 100 and abs(online[-1] - 200 / 3) < 1e-9  # May, June
    assert rows["dossiers_received"][3] == 0
    inc = [[c.value for c in row] for row in wb["Sự cố"].iter_rows()]
    assert inc == [["Lĩnh vực", "Phát sinh", "Đã xử lý", "Còn mở"], ["environment", 1, 0, 1]]
    pdf = files[1].read_bytes()
    assert pdf.startswith(b"%PDF") and (b"NotoSans" in pdf or b"DejaVuSans" in pdf)
    # on schedule: June's report once, not again on the next cycle
    assert scheduled(kdb, kdb_settings, s, now, tmp_path) == ["iahdrai:2025-06"]
    assert scheduled(kdb, kdb_settings, s, now, tmp_path) == []
    ep.server.shutdown()
