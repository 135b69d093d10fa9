// Wall display: domain tiles with targets and sparklines, the district map drawn from the site
// file's coordinates (inline SVG, no tile server), incidents by severity with SLA countdown,
// camera tiles with the latest event, a hot-changes ticker and staleness badges.
"use strict";
(() => {
  const { t, esc, $, api, fmt, age, sparkline, unitName } = IOC;
  const S = { me: null, units: [], unitById: {}, sources: [], cameras: [], kpiDefs: {}, kpi: {}, kpiAt: {},
              wifiHist: [], events: [], camLast: {}, health: {}, healthAt: 0, incidents: {}, ticker: [],
              camAt: 0, incAt: 0, lastHist: 0 };
  const STALE_S = { wifi: 60, egov: 3600, security: 900, traffic: 900, env: 300, field: 900 };
  const SEV = ["critical", "high", "medium", "low", "info"];
  const SECURITY = new Set(["intrusion", "crowding", "loitering", "tampering"]);
  const TRAFFIC = new Set(["line_crossing", "stopped_vehicle"]);
  let dirty = true;
  const touch = () => { dirty = true; };

  async function all(path) {
    let items = [], cursor = null;
    do {
      const page = await api(path + (path.includes("?") ? "&" : "?") + "limit=200" + (cursor ? "&cursor=" + cursor : ""));
      items = items.concat(page.items); cursor = page.next_cursor;
    } while (cursor);
    return items;
  }

  async function start(me) {
    S.me = me;
    S.units = await api("/api/v1/org-units");
    S.units.forEach((u) => { S.unitById[u.id] = u; });
    [S.sources, S.cameras] = await Promise.all([all("/api/v1/sources"), api("/api/v1/cameras")]);
    const kpis = await api("/api/v1/kpis");
    kpis.forEach((k) => { S.kpiDefs[k.id] = k; if (k.value !== null) { (S.kpi[k.id] ??= {})[me.org_unit] = k.value; S.kpiAt[k.id] = k.ts * 1000; } });
    S.sources.forEach((s) => { S.health[s.id] = { health: s.health, last_seen: s.last_seen, org_unit: s.org_unit }; });
    if (S.sources.some((s) => s.last_seen)) S.healthAt = Date.now();
    try {
      const ts = await api("/api/v1/timeseries/wifi?bucket=1m");
      S.wifiHist = ts.points.map((p) => p.clients_avg);
    } catch (e) { S.wifiHist = []; }
    $("#site-name").textContent = unitName(S.unitById[me.org_unit]);
    drawMap();
    buildCameras();
    new IOC.Live(["kpi", "camera", "health", "incidents"], onLive);
    IOC.onLang(() => { $("#site-name").textContent = unitName(S.unitById[me.org_unit]); drawMap(); buildCameras(); touch(); });
    setInterval(touch, 1000);
    (function loop() { if (dirty) { dirty = false; render(); } requestAnimationFrame(loop); })();
  }

  function hot(text) { S.ticker.unshift({ text, at: Date.now() }); S.ticker.length = Math.min(S.ticker.length, 14); }

  function onLive(m) {
    if (m.channel === "kpi") {
      const root = S.me.org_unit;
      for (const [kpi, vals] of Object.entries(m.kpis || {})) {
        const cur = (S.kpi[kpi] ??= {});
        if (m.type === "delta" && vals[root] !== undefined && cur[root] !== undefined) {
          const d = vals[root] - cur[root], def = S.kpiDefs[kpi];
          if (Math.abs(d) >= Math.max(5, Math.abs(cur[root]) * 0.1) && def) {
            hot(`<b>${esc(IOC.lang === "en" && def.name_en ? def.name_en : def.name)}</b> ${fmt(cur[root])} → ${fmt(vals[root])}`);
          }
        }
        Object.assign(cur, vals);
        S.kpiAt[kpi] = Date.now();
        if (kpi === "wifi_clients" && vals[root] !== undefined && (Date.now() - S.lastHist > 5000 || S.wifiHist.length < 30)) {
          S.wifiHist.push(vals[root]); if (S.wifiHist.length > 120) S.wifiHist.shift(); S.lastHist = Date.now();
        }
      }
    } else if (m.channel === "camera") {
      const evs = m.type === "snapshot" ? m.events : m.type === "delta" ? [m.event] : [];
      for (const ev of evs) {
        ev._at = ev.started_at ? Date.parse(ev.started_at) : Date.now();
        S.events.push(ev); S.camLast[ev.camera] = ev; S.camAt = Date.now();
        if (m.type === "delta" && ev.phase !== "end") {
          const cam = S.cameras.find((c) => c.id === ev.camera);
          hot(`<b>${esc(cam ? cam.name : ev.camera)}</b>: ${esc(t("rule_" + ev.rule))}`);
        }
      }
      if (S.events.length > 500) S.events.splice(0, S.events.length - 500);
      if (m.type === "snapshot") Object.entries(m.cameras || {}).forEach(([id, st]) => { const c = S.cameras.find((x) => x.id === id); if (c) c.status = st; });
      buildCameras();
    } else if (m.channel === "health") {
      if (m.type === "snapshot") { S.health = m.sources; if (Object.values(m.sources).some((s) => s.last_seen)) S.healthAt = Date.now(); }
      if (m.type === "delta") {
        for (const [id, h] of Object.entries(m.sources)) {
          S.health[id] = { ...(S.health[id] || {}), ...h }; S.healthAt = Date.now();
          const src = S.sources.find((s) => s.id === id);
          hot(`<b>${esc(src ? src.name : id)}</b> ${t(h.health === "offline" ? "source_offline" : "source_back")}`);
        }
      }
      drawMap();
    } else if (m.channel === "incidents") {
      if (m.type === "snapshot") { S.incidents = {}; m.incidents.forEach((i) => { S.incidents[i.id] = i; }); S.incAt = Date.now(); }
      if (m.type === "delta") {
        const i = m.incident; S.incidents[i.id] = i; S.incAt = Date.now();
        if (i.status === "open") hot(`<b>${esc(t("sev_" + i.severity))}</b>: ${esc(i.title)}`);
      }
      drawMap();
    }
    touch();
  }

  function staleBadge(key, at) {
    if (!at) return `<span class="badge stale" data-stale="${key}">${t("nodata")}</span>`;
    const s = (Date.now() - at) / 1000;
    return s > STALE_S[key] ? `<span class="badge stale" data-stale="${key}">${t("stale")} · ${age(s)}</span>` : "";
  }
  function tile(id, key, label, big, unit, sub, status, extra = "") {
    const el = $("#" + id);
    const at = { wifi: S.kpiAt.wifi_clients, egov: S.kpiAt.online_rate, security: S.camAt, traffic: S.camAt,
                 env: sensorSeen(), field: S.incAt }[key];
    const badge = staleBadge(key, at);
    el.className = `panel dtile st-${status}${badge ? " is-stale" : ""}`;
    el.innerHTML = `<div class="label"><span>${esc(label)}</span>${badge}</div>` +
      `<div class="big">${big}<small>${esc(unit)}</small></div><div class="sub">${sub}</div>${extra}`;
  }

  function sensorSeen() {  // the newest reading of any sensor: when environment data last arrived
    const seen = S.sources.filter((s) => s.kind === "sensor").map((s) => S.health[s.id]?.last_seen || 0);
    const max = Math.max(0, ...seen);
    return max ? max * 1000 : 0;
  }

  function kpiTile(id, key, kpiId, labelKey) {
    const def = S.kpiDefs[kpiId]; const v = S.kpi[kpiId]?.[S.me.org_unit];
    if (!def) { tile(id, key, t(labelKey), "–", "", "", "none"); return; }
    const st = def.target === null ? "none" : v === undefined ? "none" :
      (def.direction === "higher" ? (v >= def.target ? "ok" : v >= def.target * 0.9 ? "warn" : "bad")
                                  : (v <= def.target ? "ok" : v <= def.target * 1.1 ? "warn" : "bad"));
    const sub = def.target !== null ? `<span>${t("target")} ${fmt(def.target, 1)}${esc(def.unit)}</span><span class="badge ${st}">${t("st_" + st)}</span>`
      : `<span>${esc(IOC.lang === "en" && def.name_en ? def.name_en : def.name)}</span>`;
    const spark = kpiId === "wifi_clients" ? sparkline(S.wifiHist, 300, 48) : "";
    tile(id, key, t(labelKey), fmt(v, 1), kpiId === "wifi_clients" ? t("users") : def.unit, sub, st, spark);
  }

  function render() {
    const hourAgo = Date.now() - 3600e3;
    const recent = S.events.filter((e) => e._at >= hourAgo && e.phase !== "end");
    const sec = recent.filter((e) => SECURITY.has(e.rule)), trf = recent.filter((e) => TRAFFIC.has(e.rule));
    const lastOf = (list) => list.length ? `${esc(t("rule_" + list[list.length - 1].rule))} · ${age((Date.now() - list[list.length - 1]._at) / 1000)} ${t("ago")}` : t("cam_none");
    tile("d-security", "security", t("d_security"), fmt(sec.length), t("events_hour"), `<span>${lastOf(sec)}</span>`, sec.length ? "warn" : "ok",
         sparkline(bucketCounts(sec), 300, 48));
    tile("d-traffic", "traffic", t("d_traffic"), fmt(trf.length), t("events_hour"), `<span>${lastOf(trf)}</span>`, "none",
         sparkline(bucketCounts(trf), 300, 48));
    kpiTile("d-egov", "egov", "online_rate", "d_egov");
    kpiTile("d-wifi", "wifi", "wifi_clients", "d_wifi");
    const sensors = S.sources.filter((s) => s.kind === "sensor");
    const up = sensors.filter((s) => S.health[s.id]?.health === "online").length;
    tile("d-env", "env", t("d_env"), `${up}/${sensors.length}`, t("sensors_up"),
         `<span>${sensors.map((s) => esc(s.name)).slice(0, 2).join(" · ")}</span>`, up === sensors.length ? "ok" : up ? "warn" : "bad");
    const open = Object.values(S.incidents).filter((i) => !["resolved", "closed"].includes(i.status));
    const crit = open.filter((i) => i.severity === "critical").length;
    tile("d-field", "field", t("d_field"), fmt(open.length), t("open_incidents"),
         `<span>${t("sev_critical")}: ${crit}</span>`, crit ? "bad" : open.length ? "warn" : "ok");
    renderIncidents(open);
    renderWifi();
    renderCameraMeta();
    renderTicker();
  }

  function bucketCounts(evs) {
    const out = new Array(12).fill(0), now = Date.now();
    evs.forEach((e) => { const i = 11 - Math.floor((now - e._at) / 300e3); if (i >= 0 && i < 12) out[i] += 1; });
    return out;
  }

  function renderIncidents(open) {
    open.sort((a, b) => SEV.indexOf(a.severity) - SEV.indexOf(b.severity) || Date.parse(a.opened_at || 0) - Date.parse(b.opened_at || 0));
    $("#inc-count").textContent = open.length;
    $("#inc-count").className = "badge " + (open.some((i) => i.severity === "critical") ? "bad" : open.length ? "warn" : "ok");
    if (!open.length) { $("#incidents").innerHTML = `<div class="empty">${t("no_incidents")}</div>`; return; }
    $("#incidents").innerHTML = open.slice(0, 9).map((i) => {
      const due = i.resolve_due_at || i.ack_due_at; const left = due ? (Date.parse(due) - Date.now()) / 1000 : null;
      const opened = i.opened_at ? age((Date.now() - Date.parse(i.opened_at)) / 1000) + " " + t("ago") : "";
      const unit = S.unitById[i.org_unit];
      return `<div class="inc" data-id="${esc(i.id)}"><span class="sev ${esc(i.severity)}">${t("sev_" + i.severity)}</span>` +
        `<div><div>${esc(i.title)}</div><div class="where">${esc(unitName(unit))} · ${opened}</div></div>` +
        `<div class="sla ${left !== null && left < 0 ? "over" : ""}">${left === null ? "" : left < 0 ? t("sla_over") + " " + age(-left) : t("sla_left") + " " + age(left)}</div></div>`;
    }).join("");
  }

  function renderWifi() {
    const vals = S.kpi.wifi_clients || {};
    const rows = S.units.filter((u) => u.parent === S.me.org_unit || (u.id === S.me.org_unit && !S.units.some((x) => x.parent === u.id)));
    const max = Math.max(1, ...rows.map((u) => vals[u.id] || 0));
    $("#wifi-trend").innerHTML = sparkline(S.wifiHist, 300, 70, "spark tall");
    $("#wifi-bars").innerHTML = rows.sort((a, b) => (vals[b.id] || 0) - (vals[a.id] || 0)).slice(0, 8).map((u) =>
      `<div class="bar" id="bar-${esc(u.id)}"><span>${esc(unitName(u).replace(/^(Xã|Phường|Thị trấn) /, ""))}</span>` +
      `<div class="track"><div class="fill" style="width:${((vals[u.id] || 0) / max * 100).toFixed(1)}%"></div></div>` +
      `<span class="n">${fmt(vals[u.id])}</span></div>`).join("");
  }

  function renderTicker() {
    const items = S.ticker.length ? S.ticker : [{ text: t("nodata"), at: Date.now() }];
    const html = items.map((i) => `<span class="item">${i.text} <span style="color:var(--muted)">${age((Date.now() - i.at) / 1000)}</span></span>`).join("");
    const el = $("#ticker-items"); const want = html + html;
    if (el.dataset.n !== String(items.length) || el.dataset.lang !== IOC.lang) { el.innerHTML = want; el.dataset.n = items.length; el.dataset.lang = IOC.lang; }
  }

  // ------------------------------------------------------------------ map (inline SVG)
  function drawMap() {
    const W = 1000, H = 520, pad = 95;
    const located = [...S.units.filter((u) => u.lat !== null && u.kind !== "province"), ...S.sources.filter((s) => s.lat !== null)];
    if (!located.length) { $("#map").innerHTML = `<div class="empty">${t("nodata")}</div>`; return; }
    const lats = located.map((p) => p.lat), lons = located.map((p) => p.lon);
    const k = Math.cos((Math.min(...lats) + Math.max(...lats)) / 2 * Math.PI / 180);
    const x0 = Math.min(...lons) * k, x1 = Math.max(...lons) * k, y0 = Math.min(...lats), y1 = Math.max(...lats);
    const sc = Math.min((W - 2 * pad) / Math.max(x1 - x0, 1e-3), (H - 2 * pad) / Math.max(y1 - y0, 1e-3));
    const ox = (W - (x1 - x0) * sc) / 2, oy = (H - (y1 - y0) * sc) / 2;
    const P = (lat, lon) => [ox + (lon * k - x0) * sc, H - (oy + (lat - y0) * sc)];
    let svg = `<svg viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(t("map"))}">`;
    svg += `<defs><pattern id="grid" width="40" height="40" patternUnits="userSpaceOnUse"><path d="M40 0H0V40" fill="none" stroke="#12233a" stroke-width="1"/></pattern>` +
      `<radialGradient id="glow"><stop offset="0" stop-color="rgba(63,182,255,.22)"/><stop offset="1" stop-color="rgba(63,182,255,0)"/></radialGradient></defs>`;
    svg += `<rect width="${W}" height="${H}" fill="url(#grid)"/>`;
    const seat = S.units.find((u) => u.kind === "district" && u.lat !== null);
    const communes = S.units.filter((u) => u.lat !== null && ["commune", "ward", "town"].includes(u.kind));
    if (seat) {  // the district seat and the roads to each commune
      const [sx, sy] = P(seat.lat, seat.lon);
      for (const u of communes) { const [x, y] = P(u.lat, u.lon); svg += `<line class="map-road" x1="${sx}" y1="${sy}" x2="${x}" y2="${y}"/>`; }
    }
    for (const u of communes) {
      const [x, y] = P(u.lat, u.lon);
      svg += `<circle cx="${x}" cy="${y}" r="90" fill="url(#glow)"/><circle class="map-unit" cx="${x}" cy="${y}" r="58"/><text class="map-label" x="${x}" y="${y - 64}" text-anchor="middle">${esc(unitName(u))}</text>`;
    }
    for (const s of S.sources.filter((s) => s.lat !== null)) {
      const [x, y] = P(s.lat, s.lon); const hh = S.health[s.id]?.health || "unknown";
      svg += s.kind === "camera" ? `<rect class="map-cam" x="${x - 5}" y="${y - 5}" width="10" height="10" rx="2"><title>${esc(s.name)}</title></rect>`
        : `<circle class="map-src ${hh}" cx="${x}" cy="${y}" r="5" data-source="${esc(s.id)}"><title>${esc(s.name)}</title></circle>`;
    }
    if (seat) { const [sx, sy] = P(seat.lat, seat.lon); svg += `<path class="map-seat" d="M${sx} ${sy - 11}l3.2 7.3 7.8.6-5.9 5.1 1.8 7.7-6.9-4.1-6.9 4.1 1.8-7.7-5.9-5.1 7.8-.6z"/>`; }
    for (const i of Object.values(S.incidents).filter((i) => !["resolved", "closed"].includes(i.status))) {
      const u = S.unitById[i.org_unit]; const lat = i.lat ?? u?.lat, lon = i.lon ?? u?.lon;
      if (lat === null || lat === undefined) continue;
      const [x, y] = P(lat, lon);
      svg += `<circle class="map-inc" cx="${x}" cy="${y}" r="8"/><circle cx="${x}" cy="${y}" r="5" fill="var(--crit)"/>`;
    }
    $("#map").innerHTML = svg + "</svg>";
  }

  // ------------------------------------------------------------------ cameras
  function buildCameras() {
    const row = $("#camera-row");
    row.innerHTML = S.cameras.slice(0, 5).map((c) => {
      const ev = S.camLast[c.id];
      const zones = c.zones.map((z) => z.kind === "line"
        ? `<polyline class="zone line" points="${z.points.map(([x, y]) => `${x * 160},${y * 90}`).join(" ")}"/>`
        : `<polygon class="zone" points="${z.points.map(([x, y]) => `${x * 160},${y * 90}`).join(" ")}"/>`).join("");
      const b = ev?.detail?.box || ev?.box;
      const box = Array.isArray(b) && b.length === 4 ? `<rect class="box" x="${b[0] * 160}" y="${b[1] * 90}" width="${b[2] * 160}" height="${b[3] * 90}"/>` : "";
      const snap = ev?.snapshot && /^\/|^data:image\//.test(ev.snapshot) ? `<img class="snap" alt="" src="${esc(ev.snapshot)}">` : "";
      const off = c.status?.state === "offline";
      return `<div class="panel cam" id="cam-${esc(c.id)}"><div class="frame">${snap}<svg viewBox="0 0 160 90" preserveAspectRatio="none">${zones}${box}</svg>` +
        (ev ? `<span class="ev">${esc(t("rule_" + ev.rule))}${ev.label ? " · " + esc(ev.label) : ""}</span>` : "") +
        `<span class="rec">${off ? "■ " + t("cam_off") : "● REC"}</span></div>` +
        `<div class="meta"><span class="name">${esc(c.name)}</span><span class="when" data-cam="${esc(c.id)}"></span></div></div>`;
    }).join("");
    renderCameraMeta();
  }
  function renderCameraMeta() {
    document.querySelectorAll(".cam .when").forEach((el) => {
      const ev = S.camLast[el.dataset.cam];
      el.textContent = ev ? age((Date.now() - ev._at) / 1000) + " " + t("ago") : t("cam_none");
    });
  }

  IOC.boot(start);
})();
