// Leader tablet: KPI cards (target, status, forecast) for a chosen org unit, drill-down by
// commune and agency, a trend chart (uPlot, vendored) and open critical incidents with one-tap
// acknowledgement.
"use strict";
(() => {
  const { t, esc, $, api, fmt, unitName } = IOC;
  const S = { me: null, units: [], byId: {}, unit: null, kpi: "wifi_clients", cards: [], live: {}, incidents: {}, chart: null };

  async function start(me) {
    S.me = me; S.unit = me.org_unit;
    S.units = await api("/api/v1/org-units");
    S.units.forEach((u) => { S.byId[u.id] = u; });
    $("#site-name").textContent = unitName(S.byId[me.org_unit]);
    await select(S.unit, S.kpi);
    new IOC.Live(["kpi", "incidents"], onLive);
    IOC.onLang(() => { $("#site-name").textContent = unitName(S.byId[me.org_unit]); renderAll(); });
  }

  async function select(unit, kpi) {
    S.unit = unit; S.kpi = kpi;
    const [cards, live] = await Promise.all([api(`/api/v1/kpis?unit=${encodeURIComponent(unit)}`), api(`/api/v1/kpis/${kpi}/live`)]);
    S.cards = cards; S.live[kpi] = {}; live.forEach((v) => { S.live[kpi][v.org_unit] = v.value; });
    renderAll();
    trend();
  }

  const name = (k) => (IOC.lang === "en" && k.name_en ? k.name_en : k.name);
  function renderAll() { renderCrumbs(); renderCards(); renderDrill(); renderCritical(); }

  function renderCrumbs() {
    const path = []; let cur = S.unit;
    while (cur && S.byId[cur]) { path.unshift(S.byId[cur]); if (cur === S.me.org_unit) break; cur = S.byId[cur].parent; }
    $("#crumbs").innerHTML = path.map((u) => `<button type="button" data-unit="${esc(u.id)}" class="${u.id === S.unit ? "cur" : ""}">${esc(unitName(u))}</button>`).join("<span>›</span>");
    $("#crumbs").querySelectorAll("button").forEach((b) => b.addEventListener("click", () => select(b.dataset.unit, S.kpi)));
  }

  function renderCards() {
    $("#cards").innerHTML = S.cards.map((k) => {
      const v = S.live[k.id]?.[S.unit] ?? k.value;
      return `<div class="panel card ${k.id === S.kpi ? "sel" : ""}" data-kpi="${esc(k.id)}">` +
        `<div class="khead"><span class="kname">${esc(name(k))}</span><span class="badge ${k.status}">${t("st_" + k.status)}</span></div>` +
        `<div class="v">${fmt(v, 1)}<small>${esc(k.id === "wifi_clients" ? t("users") : k.unit)}</small></div>` +
        `<div class="row"><span>${t("target")}: ${k.target === null ? "–" : fmt(k.target, 1) + esc(k.unit)}</span>` +
        `<span>${t("forecast")}: ${k.forecast === null ? "–" : fmt(k.forecast, 1) + esc(k.unit)}</span></div></div>`;
    }).join("");
    $("#cards").querySelectorAll(".card").forEach((c) => c.addEventListener("click", () => select(S.unit, c.dataset.kpi)));
  }

  function renderDrill() {
    const k = S.cards.find((c) => c.id === S.kpi);
    $("#drill-kpi").textContent = k ? name(k) : "";
    const kids = S.units.filter((u) => u.parent === S.unit);
    const vals = S.live[S.kpi] || {};
    $("#drill").innerHTML = kids.length ? kids.sort((a, b) => (vals[b.id] ?? -1) - (vals[a.id] ?? -1)).map((u) =>
      `<tr class="drill" data-unit="${esc(u.id)}"><td>${esc(unitName(u))}</td><td><span class="badge none">${esc(t("kinds")[u.kind] || u.kind)}</span></td>` +
      `<td class="num">${fmt(vals[u.id], 1)}</td></tr>`).join("") : `<tr><td colspan="3" class="empty">${esc(unitName(S.byId[S.unit]))}</td></tr>`;
    $("#drill").querySelectorAll("tr.drill").forEach((r) => r.addEventListener("click", () => select(r.dataset.unit, S.kpi)));
  }

  async function trend() {
    let xs = [], ys = [];
    try {
      if (S.kpi === "wifi_clients") {
        const from = new Date(Date.now() - 6 * 3600e3).toISOString();
        const r = await api(`/api/v1/timeseries/wifi?bucket=5m&from=${from}&unit=${encodeURIComponent(S.unit)}`);
        xs = r.points.map((p) => Date.parse(p.t) / 1000); ys = r.points.map((p) => p.clients_avg);
      } else {
        const r = await api(`/api/v1/kpis/${S.kpi}/history?bucket=1h&unit=${encodeURIComponent(S.unit)}`);
        xs = r.points.map((p) => Date.parse(p.t) / 1000); ys = r.points.map((p) => p.value);
      }
    } catch (e) { /* shown as an empty chart */ }
    const el = $("#trend");
    if (S.chart) { S.chart.destroy(); S.chart = null; }
    if (!xs.length) { el.innerHTML = `<div class="empty">${t("nodata")}</div>`; return; }
    el.innerHTML = "";
    const k = S.cards.find((c) => c.id === S.kpi);
    S.chart = new uPlot({
      width: el.clientWidth || 600, height: 260,
      series: [{}, { label: k ? name(k) : S.kpi, stroke: "#3fb6ff", width: 2, fill: "rgba(63,182,255,.12)" }],
      axes: [{ stroke: "#8aa3bd", grid: { stroke: "#1e3450" } }, { stroke: "#8aa3bd", grid: { stroke: "#1e3450" } }],
      legend: { show: false },
    }, [xs, ys], el);
  }

  function renderCritical() {
    const open = Object.values(S.incidents).filter((i) => ["critical", "high"].includes(i.severity) && !["resolved", "closed"].includes(i.status));
    if (!open.length) { $("#critical").innerHTML = `<div class="empty">${t("no_incidents")}</div>`; return; }
    $("#critical").innerHTML = open.map((i) => `<div class="inc" data-id="${esc(i.id)}"><span class="sev ${esc(i.severity)}">${t("sev_" + i.severity)}</span>` +
      `<div><div>${esc(i.title)}</div><div class="where">${esc(unitName(S.byId[i.org_unit]))}</div></div>` +
      (i.status === "open" ? `<button type="button" class="primary ack" data-id="${esc(i.id)}">${t("ack")}</button>` : `<span class="badge ok">${t("acked")}</span>`) + "</div>").join("");
    $("#critical").querySelectorAll("button.ack").forEach((b) => b.addEventListener("click", async () => {
      b.disabled = true;
      try {
        await api(`/api/v1/incidents/${encodeURIComponent(b.dataset.id)}/actions`, { method: "POST", body: JSON.stringify({ action: "acknowledge", action_id: crypto.randomUUID() }) });
      } catch (e) { b.disabled = false; b.textContent = t("failed"); }
    }));
  }

  function onLive(m) {
    if (m.channel === "kpi") {
      for (const [kpi, vals] of Object.entries(m.kpis || {})) Object.assign((S.live[kpi] ??= {}), vals);
      renderCards(); renderDrill();
    } else if (m.channel === "incidents") {
      if (m.type === "snapshot") { S.incidents = {}; m.incidents.forEach((i) => { S.incidents[i.id] = i; }); }
      if (m.type === "delta") S.incidents[m.incident.id] = m.incident;
      renderCritical();
    }
  }

  IOC.boot(start);
})();
