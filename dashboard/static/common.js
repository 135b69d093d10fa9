// Shared by the three screens: language, sign-in with rotating refresh tokens, REST calls, the
// live websocket with per-channel resume, formatting and hand-drawn SVG sparklines.
"use strict";
const IOC = (() => {
  const I18N = {
    vi: {
      title: "Trung tâm giám sát, điều hành thông minh", login: "Đăng nhập", username: "Tên đăng nhập",
      password: "Mật khẩu", signin: "Đăng nhập", logout: "Đăng xuất", online: "Trực tuyến",
      offline: "Mất kết nối", bad_login: "Sai tên đăng nhập hoặc mật khẩu",
      throttled: "Đăng nhập sai quá nhiều lần, thử lại sau", stale: "Dữ liệu cũ", nodata: "Chưa có dữ liệu",
      d_security: "An ninh trật tự", d_traffic: "Giao thông", d_egov: "Chính quyền số",
      d_wifi: "WiFi công cộng", d_env: "Môi trường", d_field: "Phản ánh hiện trường",
      events_hour: "sự kiện / giờ", users: "người dùng", target: "Chỉ tiêu", forecast: "Dự báo",
      sensors_up: "cảm biến hoạt động", open_incidents: "sự cố đang mở", incidents: "Sự cố theo mức độ",
      no_incidents: "Không có sự cố đang mở", map: "Bản đồ huyện", cameras: "Camera giám sát",
      hot: "Biến động nổi bật", sla_left: "còn", sla_over: "quá hạn", ago: "trước",
      cam_ok: "Đang hoạt động", cam_off: "Mất tín hiệu", cam_none: "Chưa có sự kiện",
      sev_critical: "Khẩn cấp", sev_high: "Cao", sev_medium: "Trung bình", sev_low: "Thấp", sev_info: "Thông tin",
      st_ok: "Đạt", st_warn: "Gần đạt", st_bad: "Chưa đạt", st_none: "Chưa đánh giá",
      kpis: "Chỉ số chính", drill: "Chi tiết theo xã và cơ quan", trend: "Xu hướng", critical: "Sự cố khẩn cấp đang mở",
      ack: "Xác nhận", acked: "Đã xác nhận", my_tasks: "Việc được giao cho tôi", no_tasks: "Không có việc được giao",
      progress: "Cập nhật tiến độ", resolve: "Hoàn thành", note: "Ghi chú", photo: "Ảnh hiện trường",
      send: "Gửi", queued: "chờ gửi", queue_title: "Thao tác chờ gửi khi có mạng", sent: "Đã gửi",
      failed: "Không gửi được", location: "Vị trí", evidence: "Bằng chứng", unit_all: "Toàn huyện",
      wifi_hour: "Người dùng WiFi 1 giờ qua", rule_intrusion: "Xâm nhập", rule_crowding: "Tụ tập đông người",
      rule_loitering: "Lảng vảng", rule_line_crossing: "Vượt vạch", rule_stopped_vehicle: "Dừng đỗ sai quy định",
      rule_tampering: "Che/phá camera", rule_camera_offline: "Camera mất tín hiệu", source_offline: "mất tín hiệu",
      source_back: "hoạt động trở lại", kpi_change: "thay đổi", value: "Giá trị", unit_name: "Đơn vị",
      kinds: { province: "Tỉnh", department: "Sở", district: "Huyện", commune: "Xã", ward: "Phường",
               town: "Thị trấn", agency: "Cơ quan" },
    },
    en: {
      title: "Intelligent Operations Center", login: "Sign in", username: "Username", password: "Password",
      signin: "Sign in", logout: "Sign out", online: "Live", offline: "Offline",
      bad_login: "Wrong username or password", throttled: "Too many failed sign-ins, try again later",
      stale: "Stale data", nodata: "No data yet", d_security: "Security & public order", d_traffic: "Traffic",
      d_egov: "E-government", d_wifi: "Public WiFi", d_env: "Environment", d_field: "Field reports",
      events_hour: "events / hour", users: "users", target: "Target", forecast: "Forecast",
      sensors_up: "sensors up", open_incidents: "open incidents", incidents: "Incidents by severity",
      no_incidents: "No open incidents", map: "District map", cameras: "Cameras", hot: "Hot changes",
      sla_left: "left", sla_over: "overdue", ago: "ago", cam_ok: "Online", cam_off: "No signal",
      cam_none: "No events yet", sev_critical: "Critical", sev_high: "High", sev_medium: "Medium",
      sev_low: "Low", sev_info: "Info", st_ok: "On target", st_warn: "Close", st_bad: "Off target",
      st_none: "Not rated", kpis: "Key indicators", drill: "By commune and agency", trend: "Trend",
      critical: "Open critical incidents", ack: "Acknowledge", acked: "Acknowledged", my_tasks: "My assignments",
      no_tasks: "Nothing assigned to you", progress: "Progress note", resolve: "Resolve", note: "Note",
      photo: "Photo", send: "Send", queued: "queued", queue_title: "Actions waiting for the network",
      sent: "Sent", failed: "Could not send", location: "Location", evidence: "Evidence",
      unit_all: "Whole district", wifi_hour: "WiFi users, last hour", rule_intrusion: "Intrusion",
      rule_crowding: "Crowding", rule_loitering: "Loitering", rule_line_crossing: "Line crossing",
      rule_stopped_vehicle: "Stopped vehicle", rule_tampering: "Tampering", rule_camera_offline: "Camera offline",
      source_offline: "went offline", source_back: "is back", kpi_change: "changed", value: "Value",
      unit_name: "Unit",
      kinds: { province: "Province", department: "Department", district: "District", commune: "Commune",
               ward: "Ward", town: "Town", agency: "Agency" },
    },
  };
  let lang = localStorage.getItem("ioc.lang") || "vi";
  const listeners = [];
  const $ = (s, root = document) => root.querySelector(s);
  const t = (k) => (I18N[lang][k] ?? k);
  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

  function applyLang() {
    document.documentElement.lang = lang;
    document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
    const b = $("#lang"); if (b) b.textContent = lang === "vi" ? "EN" : "VI";
    listeners.forEach((f) => f());
  }
  function onLang(f) { listeners.push(f); }
  function toggleLang() { lang = lang === "vi" ? "en" : "vi"; localStorage.setItem("ioc.lang", lang); applyLang(); }

  // ------------------------------------------------------------------ auth
  const store = sessionStorage;
  async function login(username, password) {
    const r = await fetch("/api/v1/auth/token", { method: "POST", body: new URLSearchParams({ username, password }) });
    if (!r.ok) throw new Error(r.status === 429 ? t("throttled") : t("bad_login"));
    saveTokens(await r.json());
  }
  function saveTokens(j) { store.setItem("ioc.token", j.access_token); store.setItem("ioc.refresh", j.refresh_token); }
  function token() { return store.getItem("ioc.token"); }
  let refreshing = null;
  async function refresh() {
    if (!refreshing) {
      refreshing = (async () => {
        const rt = store.getItem("ioc.refresh");
        if (!rt) return false;
        const r = await fetch("/api/v1/auth/refresh", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ refresh_token: rt }) });
        if (!r.ok) return false;
        saveTokens(await r.json());
        return true;
      })().finally(() => { setTimeout(() => { refreshing = null; }, 0); });
    }
    return refreshing;
  }
  function logout() {
    const rt = store.getItem("ioc.refresh");
    if (rt) fetch("/api/v1/auth/logout", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ refresh_token: rt }) }).catch(() => {});
    store.removeItem("ioc.token"); store.removeItem("ioc.refresh");
    location.reload();
  }
  async function api(path, opts = {}) {
    const go = () => fetch(path, { ...opts, headers: { ...(opts.headers || {}), Authorization: "Bearer " + token(),
      ...(opts.body ? { "Content-Type": "application/json" } : {}) } });
    let r = await go();
    if (r.status === 401 && (await refresh())) r = await go();
    if (r.status === 401) { logout(); throw new Error("unauthenticated"); }
    const body = r.status === 204 ? null : await r.json();
    if (!r.ok) { const e = new Error(body?.error?.message || r.statusText); e.status = r.status; e.code = body?.error?.code; throw e; }
    return body;
  }

  // Wire the sign-in form of a page; `start` runs once signed in.
  function boot(start) {
    const form = $("#login");
    $("#lang")?.addEventListener("click", toggleLang);
    $("#logout")?.addEventListener("click", logout);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const fd = new FormData(form);
      try { await login(fd.get("username"), fd.get("password")); } catch (e) { $("#login-error").textContent = e.message; return; }
      $("#login-error").textContent = "";
      begin();
    });
    async function begin() {
      try {
        const me = await api("/api/v1/me");
        form.hidden = true; $("#app").hidden = false; const lo = $("#logout"); if (lo) lo.hidden = false;
        await start(me);
      } catch (e) { if (e.message !== "unauthenticated") console.error(e); }
    }
    applyLang();
    setInterval(() => { const c = $("#clock"); if (c) c.textContent = new Date().toLocaleTimeString(lang === "vi" ? "vi-VN" : "en-GB"); }, 1000);
    if (token()) begin();
  }

  // ------------------------------------------------------------------ live
  class Live {
    constructor(channels, onMessage) {
      this.channels = channels; this.onMessage = onMessage; this.seq = {}; this.ws = null; this.delay = 500;
      this.connect();
    }
    connect() {
      const proto = location.protocol === "https:" ? "wss" : "ws";
      const ws = this.ws = new WebSocket(`${proto}://${location.host}/ws`);
      ws.onopen = () => {
        ws.send(JSON.stringify({ op: "auth", token: token() }));
        ws.send(JSON.stringify({ op: "subscribe", channels: this.channels, resume: this.seq }));
      };
      ws.onmessage = (ev) => {
        const m = JSON.parse(ev.data);
        if (m.type === "hello") { setConn(true); this.delay = 500; }
        if (m.seq && m.channel) this.seq[m.channel] = m.seq;
        this.onMessage(m);
      };
      ws.onclose = async (ev) => {
        setConn(false);
        if (ev.code === 1008 && !(await refresh())) { logout(); return; }
        setTimeout(() => this.connect(), this.delay + Math.random() * 500);
        this.delay = Math.min(this.delay * 2, 10000);
      };
    }
  }
  function setConn(on) {
    const el = $("#conn"); if (!el) return;
    el.className = "badge " + (on ? "on" : "off"); el.textContent = on ? t("online") : t("offline");
  }

  // ------------------------------------------------------------------ formatting
  const fmt = (v, digits = 0) => (v === null || v === undefined || Number.isNaN(v)) ? "–"
    : Number(v).toLocaleString(lang === "vi" ? "vi-VN" : "en-GB", { maximumFractionDigits: digits });
  function age(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} ${lang === "vi" ? "phút" : "min"}`;
    return `${Math.floor(s / 3600)} ${lang === "vi" ? "giờ" : "h"} ${Math.floor((s % 3600) / 60)}′`;
  }
  function sparkline(values, w = 200, h = 48, cls = "spark") {
    const v = values.filter((x) => x !== null && x !== undefined);
    if (v.length < 2) return `<svg class="${cls}" viewBox="0 0 ${w} ${h}" preserveAspectRatio="none"></svg>`;
    const min = Math.min(...v), max = Math.max(...v), span = max - min || 1;
    const pts = v.map((x, i) => `${(i / (v.length - 1) * w).toFixed(1)},${(h - 3 - (x - min) / span * (h - 6)).toFixed(1)}`);
    return `<svg class="${cls}" viewBox="0 0 ${w} ${h}" preserveAspectRatio="none">` +
      `<polygon class="area" points="0,${h} ${pts.join(" ")} ${w},${h}"/>` +
      `<polyline points="${pts.join(" ")}"/></svg>`;
  }
  const unitName = (u) => (lang === "en" && u?.name_en ? u.name_en : u?.name ?? "");
  return { t, esc, $, api, boot, Live, fmt, age, sparkline, unitName, onLang, get lang() { return lang; }, setConn };
})();
