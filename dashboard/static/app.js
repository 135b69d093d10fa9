// Minimal live page: log in (OAuth2 password flow), open the websocket, show WiFi users per
// org unit as they change. Vietnamese first, English on the toggle.
"use strict";
const I18N = {
  vi: { title: "Trung tâm giám sát, điều hành thông minh", offline: "Mất kết nối", online: "Trực tuyến",
        login: "Đăng nhập", username: "Tên đăng nhập", password: "Mật khẩu", signin: "Đăng nhập",
        logout: "Đăng xuất", wifi_title: "WiFi công cộng — người dùng đang kết nối",
        stale: "Dữ liệu cũ", users: "người dùng", bad_login: "Sai tên đăng nhập hoặc mật khẩu",
        throttled: "Đăng nhập sai quá nhiều lần, thử lại sau",
        kinds: { province: "Tỉnh", department: "Sở", district: "Huyện", commune: "Xã", ward: "Phường",
                 town: "Thị trấn", agency: "Cơ quan" } },
  en: { title: "Intelligent Operations Center", offline: "Offline", online: "Live",
        login: "Sign in", username: "Username", password: "Password", signin: "Sign in",
        logout: "Sign out", wifi_title: "Public WiFi — connected users", stale: "Stale data",
        users: "users", bad_login: "Wrong username or password",
        throttled: "Too many failed sign-ins, try again later",
        kinds: { province: "Province", department: "Department", district: "District",
                 commune: "Commune", ward: "Ward", town: "Town", agency: "Agency" } },
};
let lang = localStorage.getItem("ioc.lang") || "vi";
let units = [];           // org units in scope
let values = {};          // unit id -> connected users
let me = null;
let lastUpdate = 0;
let ws = null;
const $ = (id) => document.getElementById(id);
const t = (k) => I18N[lang][k];

function applyLang() {
  document.documentElement.lang = lang;
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  $("lang").textContent = lang === "vi" ? "EN" : "VI";
  setConn(ws && ws.readyState === 1);
  render();
}

function setConn(on) {
  const el = $("conn");
  el.className = "badge " + (on ? "on" : "off");
  el.textContent = on ? t("online") : t("offline");
}

function unitName(u) { return lang === "en" && u.name_en ? u.name_en : u.name; }

function render() {
  const root = units.find((u) => u.id === (me && me.org_unit));
  if (root) {
    $("total-value").textContent = (values[root.id] ?? "–").toLocaleString("vi-VN");
    $("total-label").textContent = t("users") + " · " + unitName(root);
    $("site-name").textContent = unitName(root);
  }
  const tiles = $("tiles");
  for (const u of units) {
    let el = document.getElementById("tile-" + u.id);
    if (!el) {
      el = document.createElement("div");
      el.className = "tile";
      el.id = "tile-" + u.id;
      el.dataset.unit = u.id;
      el.innerHTML = '<div class="kind"></div><div class="name"></div>' +
                     '<div><span class="value">–</span><span class="unit"></span></div>';
      tiles.appendChild(el);
    }
    el.querySelector(".kind").textContent = t("kinds")[u.kind] || u.kind;
    el.querySelector(".name").textContent = unitName(u);
    el.querySelector(".unit").textContent = t("users");
    const v = values[u.id];
    const text = v === undefined ? "–" : v.toLocaleString("vi-VN");
    const span = el.querySelector(".value");
    if (span.textContent !== text) {
      span.textContent = text;
      el.classList.add("flash");
      setTimeout(() => el.classList.remove("flash"), 400);
    }
  }
}

async function api(path) {
  const r = await fetch(path, { headers: { Authorization: "Bearer " + sessionStorage.getItem("ioc.token") } });
  if (r.status === 401) { logout(); throw new Error("unauthenticated"); }
  return r.json();
}

function connect() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  ws = new WebSocket(`${proto}://${location.host}/ws`);
  ws.onopen = () => {
    ws.send(JSON.stringify({ op: "auth", token: sessionStorage.getItem("ioc.token") }));
    ws.send(JSON.stringify({ op: "subscribe", channels: ["kpi"] }));
  };
  ws.onmessage = (ev) => {
    const m = JSON.parse(ev.data);
    if (m.type === "hello") setConn(true);
    if (m.type === "snapshot" && m.kpis.wifi_clients) Object.assign(values, m.kpis.wifi_clients);
    if (m.type === "delta" && m.kpis.wifi_clients) Object.assign(values, m.kpis.wifi_clients);
    if (m.type === "snapshot" || m.type === "delta") { lastUpdate = Date.now(); render(); }
  };
  ws.onclose = (ev) => {
    setConn(false);
    if (ev.code === 1008) { logout(); return; }
    if (sessionStorage.getItem("ioc.token")) setTimeout(connect, 1000 + Math.random() * 1000);
  };
}

async function start() {
  me = await api("/api/v1/me");
  units = await api("/api/v1/org-units");
  $("login").hidden = true;
  $("wall").hidden = false;
  $("logout").hidden = false;
  render();
  connect();
}

function logout() {
  sessionStorage.removeItem("ioc.token");
  if (ws) { ws.onclose = null; ws.close(); }
  $("login").hidden = false;
  $("wall").hidden = true;
  $("logout").hidden = true;
  setConn(false);
}

$("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const body = new URLSearchParams(new FormData(ev.target));
  const r = await fetch("/api/v1/auth/token", { method: "POST", body });
  if (!r.ok) { $("login-error").textContent = r.status === 429 ? t("throttled") : t("bad_login"); return; }
  $("login-error").textContent = "";
  sessionStorage.setItem("ioc.token", (await r.json()).access_token);
  start();
});
$("lang").addEventListener("click", () => { lang = lang === "vi" ? "en" : "vi"; localStorage.setItem("ioc.lang", lang); applyLang(); });
$("logout").addEventListener("click", logout);
setInterval(() => {
  $("clock").textContent = new Date().toLocaleTimeString(lang === "vi" ? "vi-VN" : "en-GB");
  $("stale").hidden = !lastUpdate || Date.now() - lastUpdate < 30000;
}, 1000);
applyLang();
if (sessionStorage.getItem("ioc.token")) start().catch(() => logout());
