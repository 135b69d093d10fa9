"""The monthly KPI report per org unit (values, targets, status, trend, incidents by domain), in
Vietnamese, as XLSX (openpyxl) and PDF (reportlab with an embedded Noto Sans / DejaVu Sans font,
so Vietnamese diacritics render), generated on a schedule and on demand, and sent to the
configured reporting endpoint (HTTP POST) or mailbox (SMTP)."""

from __future__ import annotations

import smtplib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import psycopg

from analytics.kpi.calendar import LOCAL, Window, month_window
from analytics.kpi.engine import fmt_number
from analytics.kpi.store import compute_rollup_kpi
from core.errors import IOCError
from core.settings import Settings
from core.site import Site

STATUS_VI = {"on_track": "Đạt", "at_risk": "Có nguy cơ", "missed": "Không đạt", None: "—"}
FONTS = (
    Path("/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf"),  # Debian fonts-noto-core
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),  # Debian fonts-dejavu-core
)
TREND_MONTHS = 6


@dataclass
class KpiLine:
    kpi_id: str
    name: str
    unit: str
    value: float | None
    target: float | None
    status: str | None
    trend: list[tuple[str, float | None]]  # (YYYY-MM, value), oldest first, this month last


@dataclass
class Report:
    org_unit_id: str
    org_unit_name: str
    period: str  # YYYY-MM
    generated_at: datetime
    kpis: list[KpiLine] = field(default_factory=list)
    incidents: dict[str, dict[str, int]] = field(default_factory=dict)  # domain → counts


def _months_back(year: int, month: int, n: int) -> list[tuple[int, int]]:
    out = []
    for _ in range(n):
        out.append((year, month))
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    return out[::-1]


def build_report(
    conn: psycopg.Connection, site: Site, unit: str, year: int, month: int, now: datetime
) -> Report:
    if unit not in site.units:
        raise IOCError(f"unknown org unit '{unit}': see the site file")
    months = _months_back(year, month, TREND_MONTHS)
    windows = []
    for y, m in months:
        w = month_window(y, m)
        windows.append(Window(f"{y:04d}-{m:02d}", w.start, w.end, w.period_end))
    period = f"{year:04d}-{month:02d}"
    end = windows[-1].end
    rep = Report(unit, site.units[unit].name, period, now)
    for kpi in site.all_kpis:
        f = kpi.formula
        if f is None:
            continue
        if f.gauge:  # the last value recorded in the month
            trend = []
            for w in windows:
                row = conn.execute(
                    "SELECT value FROM kpi_values WHERE kpi_id = %s AND org_unit_id = %s AND "
                    "\"window\" = 'now' AND time >= %s AND time < %s ORDER BY time DESC LIMIT 1",
                    (kpi.id, unit, w.start, w.end),
                ).fetchone()
                trend.append((w.name, row[0] if row else None))
            value = trend[-1][1]
            target = kpi.target_for(year)
            from analytics.kpi.engine import status_of

            status = status_of(kpi, target, value, None, period_over=False, grows_only=False)
        else:
            vals = compute_rollup_kpi(conn, site, kpi, end - timedelta(seconds=1), windows)
            mine = {v.window: v for v in vals if v.org_unit_id == unit}
            trend = [(w.name, mine[w.name].value) for w in windows]
            last = mine[period]
            value = last.value
            target = last.target if last.target is not None else kpi.target_for(year)
            status = last.status
            if status is None and target is not None and value is not None:
                from analytics.kpi.engine import met

                status = "on_track" if met(kpi.direction, value, target) else "missed"
        rep.kpis.append(KpiLine(kpi.id, kpi.name, kpi.unit, value, target, status, trend))
    subtree = list(site.subtree(unit))
    for domain, opened, resolved, still_open in conn.execute(
        "SELECT domain, count(*), count(*) FILTER (WHERE resolved_at < %s), "
        "count(*) FILTER (WHERE resolved_at IS NULL OR resolved_at >= %s) FROM incidents "
        "WHERE org_unit_id = ANY(%s) AND opened_at >= %s AND opened_at < %s GROUP BY 1 ORDER BY 1",
        (end, end, subtree, windows[-1].start, end),
    ):
        rep.incidents[domain] = {"opened": opened, "resolved": resolved, "open": still_open}
    conn.commit()
    return rep


def _num(v: float | None, unit: str = "") -> str:
    return "—" if v is None else fmt_number(round(v, 1), unit)


def write_xlsx(rep: Report, path: Path) -> Path:
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    ws = wb.active
    ws.title = "Chỉ tiêu"
    ws.append([f"BÁO CÁO CHỈ TIÊU THÁNG {rep.period[5:]}/{rep.period[:4]}"])
    ws.append([f"Đơn vị: {rep.org_unit_name}"])
    ws.append([f"Lập lúc: {rep.generated_at.astimezone(LOCAL):%H:%M %d/%m/%Y}"])
    ws.append([])
    months = [m for m, _ in rep.kpis[0].trend] if rep.kpis else []
    head = ["Mã", "Chỉ tiêu", "Đơn vị tính", "Giá trị", "Mục tiêu", "Đánh giá",
            *[f"Tháng {m[5:]}/{m[:4]}" for m in months]]  # fmt: skip
    ws.append(head)
    for c in ws[ws.max_row]:
        c.font = Font(bold=True)
    for k in rep.kpis:
        ws.append([k.kpi_id, k.name, k.unit, k.value, k.target, STATUS_VI[k.status],
                   *[v for _, v in k.trend]])  # fmt: skip
    ws.column_dimensions["B"].width = 60
    inc = wb.create_sheet("Sự cố")
    inc.append(["Lĩnh vực", "Phát sinh", "Đã xử lý", "Còn mở"])
    for c in inc[1]:
        c.font = Font(bold=True)
    for domain, n in rep.incidents.items():
        inc.append([domain, n["opened"], n["resolved"], n["open"]])
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)
    return path


def _font() -> str:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    for p in FONTS:
        if p.exists():
            name = p.stem
            if name not in pdfmetrics.getRegisteredFontNames():
                pdfmetrics.registerFont(TTFont(name, str(p)))
            return name
    raise IOCError("no font with Vietnamese glyphs: install fonts-noto-core or fonts-dejavu-core")


def write_pdf(rep: Report, path: Path) -> Path:
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    font = _font()
    title = ParagraphStyle("t", fontName=font, fontSize=15, leading=19, spaceAfter=6)
    body = ParagraphStyle("b", fontName=font, fontSize=9, leading=12)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = SimpleDocTemplate(str(path), pagesize=landscape(A4), title=f"Báo cáo {rep.period}")
    story: list[Any] = [
        Paragraph(f"BÁO CÁO CHỈ TIÊU THÁNG {rep.period[5:]}/{rep.period[:4]}", title),
        Paragraph(f"Đơn vị: {rep.org_unit_name}", body),
        Paragraph(f"Lập lúc: {rep.generated_at.astimezone(LOCAL):%H:%M %d/%m/%Y}", body),
        Spacer(1, 8),
    ]
    months = [m for m, _ in rep.kpis[0].trend] if rep.kpis else []
    rows: list[list[Any]] = [["Chỉ tiêu", "Giá trị", "Mục tiêu", "Đánh giá",
                              *[f"{m[5:]}/{m[2:4]}" for m in months]]]  # fmt: skip
    for k in rep.kpis:
        rows.append([Paragraph(k.name, body), _num(k.value, k.unit), _num(k.target, k.unit),
                     STATUS_VI[k.status], *[_num(v) for _, v in k.trend]])  # fmt: skip
    style = TableStyle(
        [
            ("FONTNAME", (0, 0), (-1, -1), font),
            ("FONTSIZE", (0, 0), (-1, -1), 8),
            ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
            ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#dde6f0")),
            ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
        ]
    )
    story.append(Table(rows, colWidths=[220, 70, 60, 60] + [45] * len(months), style=style))
    story += [Spacer(1, 12), Paragraph("Sự cố theo lĩnh vực", title)]
    inc_rows: list[list[Any]] = [["Lĩnh vực", "Phát sinh", "Đã xử lý", "Còn mở"]]
    for domain, n in rep.incidents.items():
        inc_rows.append([domain, n["opened"], n["resolved"], n["open"]])
    if len(inc_rows) == 1:
        inc_rows.append(["Không có sự cố", "", "", ""])
    story.append(Table(inc_rows, style=style))
    doc.build(story)
    return path


def send(settings: Settings, site: Site, rep: Report, files: list[Path]) -> str | None:
    """Send to the reporting endpoint (multipart POST) or mailbox; return where it went."""
    ops = site.operations
    if ops.report_endpoint:
        r = httpx.post(
            ops.report_endpoint,
            data={"org_unit": rep.org_unit_id, "period": rep.period},
            files=[("files", (p.name, p.read_bytes())) for p in files],
            timeout=30,
        )
        if r.status_code >= 300:
            raise IOCError(f"reporting endpoint answered HTTP {r.status_code}")
        return ops.report_endpoint
    if ops.report_mailbox:
        if not settings.smtp_host:
            raise IOCError("report_mailbox is set but IOC_SMTP_HOST is not")
        em = EmailMessage()
        em["From"], em["To"] = settings.smtp_from, ops.report_mailbox
        em["Subject"] = (
            f"Báo cáo chỉ tiêu tháng {rep.period[5:]}/{rep.period[:4]} — {rep.org_unit_name}"
        )
        em.set_content("Kính gửi,\n\nĐính kèm báo cáo chỉ tiêu tháng của IOC.\n")
        for p in files:
            sub = (
                "pdf"
                if p.suffix == ".pdf"
                else "vnd.openxmlformats-officedocument.spreadsheetml.sheet"
            )
            em.add_attachment(p.read_bytes(), maintype="application", subtype=sub, filename=p.name)
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=30) as s:
            s.send_message(em)
        return ops.report_mailbox
    return None


def generate(
    conn: psycopg.Connection,
    settings: Settings,
    site: Site,
    unit: str,
    year: int,
    month: int,
    *,
    now: datetime,
    trigger: str = "demand",
    out_dir: Path | None = None,
    deliver: bool = True,
) -> tuple[Report, list[Path], str | None]:
    """Build, write XLSX + PDF, send, record in kpi_reports."""
    rep = build_report(conn, site, unit, year, month, now)
    base = (out_dir or settings.var_dir / "reports") / unit
    stem = f"bao-cao-{unit}-{rep.period}"
    files = [write_xlsx(rep, base / f"{stem}.xlsx"), write_pdf(rep, base / f"{stem}.pdf")]
    sent, err = None, None
    if deliver:
        try:
            sent = send(settings, site, rep, files)
        except (IOCError, httpx.HTTPError, OSError) as exc:
            err = str(exc)[:300]
    conn.execute(
        "INSERT INTO kpi_reports (org_unit_id, period, formats, files, generated_at, trigger, "
        "sent_to, send_error) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (unit, rep.period, ["xlsx", "pdf"], [str(p) for p in files], now, trigger, sent, err),
    )
    conn.commit()
    return rep, files, sent


def scheduled(
    conn: psycopg.Connection, settings: Settings, site: Site, now: datetime, out_dir: Path | None
) -> list[str]:
    """On schedule: last month's report for every report unit not done yet (once each)."""
    local = now.astimezone(LOCAL)
    y, m = (local.year - 1, 12) if local.month == 1 else (local.year, local.month - 1)
    period = f"{y:04d}-{m:02d}"
    done = []
    for unit in site.operations.report_units:
        exists = conn.execute(
            "SELECT 1 FROM kpi_reports WHERE org_unit_id = %s AND period = %s "
            "AND trigger = 'schedule'",
            (unit, period),
        ).fetchone()
        conn.commit()
        if exists:
            continue
        generate(conn, settings, site, unit, y, m, now=now, trigger="schedule", out_dir=out_dir)
        done.append(f"{unit}:{period}")
    return done


def utcnow() -> datetime:
    return datetime.now(UTC)
