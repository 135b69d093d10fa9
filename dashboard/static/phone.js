// Field phone: my assigned incidents with location and evidence; acknowledge, progress note,
// resolve with a note, a photo and the phone's GPS position. Every action goes through a queue
// kept in localStorage: taken offline it waits, and it is sent once the network returns. Each
// action carries an id the server deduplicates on, and a second tap on the same action is not
// queued twice, so nothing is applied twice.
"use strict";
(() => {
  const { t, esc, $, api, unitName } = IOC;
  const S = { me: null, byId: {}, tasks: {} };
  const QKEY = "ioc.queue";
  const queue = () => JSON.parse(localStorage.getItem(QKEY) || "[]");
  const saveQueue = (q) => { localStorage.setItem(QKEY, JSON.stringify(q)); renderQueue(); };
  let flushing = false;

  async function start(me) {
    S.me = me;
    (await api("/api/v1/org-units")).forEach((u) => { S.byId[u.id] = u; });
    $("#site-name").textContent = `${me.display_name || me.username} · ${unitName(S.byId[me.org_unit])}`;
    new IOC.Live(["assignments"], onLive);
    window.addEventListener("online", flush);
    setInterval(flush, 10000);
    IOC.onLang(render);
    render(); flush();
  }

  function onLive(m) {
    if (m.channel !== "assignments") return;
    if (m.type === "snapshot") { S.tasks = {}; m.incidents.forEach((i) => { S.tasks[i.id] = i; }); }
    if (m.type === "delta") {
      const i = m.incident;
      if (i.assignee === S.me.username && !["resolved", "closed"].includes(i.status)) S.tasks[i.id] = i; else delete S.tasks[i.id];
    }
    render();
  }

  function enqueue(item) {
    const q = queue();
    const same = q.find((x) => x.incident === item.incident && x.action === item.action && x.note === item.note);
    if (same) { toast(t("queued")); return; }  // a second tap on the same action
    q.push({ ...item, action_id: crypto.randomUUID(), at: new Date().toISOString() });
    saveQueue(q);
    flush();
  }

  async function flush() {
    if (flushing || !navigator.onLine) return;
    flushing = true;
    try {
      for (const item of queue()) {
        try {
          await api(`/api/v1/incidents/${encodeURIComponent(item.incident)}/actions`,
                    { method: "POST", body: JSON.stringify({ action: item.action, action_id: item.action_id, note: item.note,
                      photo: item.photo, lat: item.lat, lon: item.lon, at: item.at }) });
          toast(t("sent"));
        } catch (e) {
          if (!e.status || e.status >= 500) break;  // network down or server trouble: keep it, retry later
          toast(`${t("failed")}: ${e.message}`);     // refused for good (conflict, gone): do not resend
        }
        saveQueue(queue().filter((x) => x.action_id !== item.action_id));
      }
    } finally { flushing = false; }
  }

  function renderQueue() {
    const n = queue().length;
    $("#queue").hidden = n === 0; $("#queue-n").textContent = n;
  }

  function position() {
    return new Promise((resolve) => {
      if (!navigator.geolocation) { resolve({}); return; }
      navigator.geolocation.getCurrentPosition((p) => resolve({ lat: p.coords.latitude, lon: p.coords.longitude }),
                                               () => resolve({}), { timeout: 5000, maximumAge: 60000 });
    });
  }

  function shrink(file) {  // a phone photo scaled to 800 px JPEG, so the queue stays small
    return new Promise((resolve) => {
      if (!file) { resolve(null); return; }
      const img = new Image();
      img.onload = () => {
        const s = Math.min(1, 800 / Math.max(img.width, img.height));
        const c = document.createElement("canvas"); c.width = img.width * s; c.height = img.height * s;
        c.getContext("2d").drawImage(img, 0, 0, c.width, c.height);
        resolve(c.toDataURL("image/jpeg", 0.7)); URL.revokeObjectURL(img.src);
      };
      img.onerror = () => resolve(null);
      img.src = URL.createObjectURL(file);
    });
  }

  function render() {
    renderQueue();
    const tasks = Object.values(S.tasks);
    if (!tasks.length) { $("#tasks").innerHTML = `<div class="panel empty">${t("no_tasks")}</div>`; return; }
    $("#tasks").innerHTML = tasks.map((i) => {
      const u = S.byId[i.org_unit]; const lat = i.lat ?? u?.lat, lon = i.lon ?? u?.lon;
      const ev = (i.evidence || []).map((e) => `<li>${esc(e.note || e.kind || JSON.stringify(e))}</li>`).join("");
      return `<div class="panel task" data-id="${esc(i.id)}"><h3><span class="sev ${esc(i.severity)}">${t("sev_" + i.severity)}</span> ${esc(i.title)}</h3>` +
        `<div>${t("location")}: ${esc(unitName(u))}${lat != null ? ` (${lat.toFixed(4)}, ${lon.toFixed(4)})` : ""}</div>` +
        (ev ? `<div>${t("evidence")}:<ul>${ev}</ul></div>` : "") +
        `<textarea placeholder="${esc(t("note"))}" maxlength="1000"></textarea>` +
        `<label class="filebtn">📷 <span>${t("photo")}</span><input type="file" accept="image/*" capture="environment"></label>` +
        `<div class="acts"><button type="button" data-act="acknowledge">${t("ack")}</button>` +
        `<button type="button" data-act="progress">${t("progress")}</button>` +
        `<button type="button" class="primary" data-act="resolve">${t("resolve")}</button></div></div>`;
    }).join("");
    $("#tasks").querySelectorAll(".filebtn input").forEach((inp) => inp.addEventListener("change", () => {
      inp.previousElementSibling.textContent = inp.files[0] ? inp.files[0].name : t("photo");
    }));
    $("#tasks").querySelectorAll(".task").forEach((card) => card.querySelectorAll("button").forEach((b) => b.addEventListener("click", async () => {
      const note = card.querySelector("textarea").value.trim();
      const act = b.dataset.act;
      const extra = act === "resolve" ? { ...(await position()), photo: await shrink(card.querySelector("input[type=file]").files[0]) } : {};
      enqueue({ incident: card.dataset.id, action: act, note, ...extra });
    })));
  }

  let toastTimer = null;
  function toast(text) { const el = $("#toast"); el.textContent = text; el.hidden = false; clearTimeout(toastTimer); toastTimer = setTimeout(() => { el.hidden = true; }, 2500); }

  IOC.boot(start);
})();
