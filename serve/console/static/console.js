// Operator console: polls the operator API (same origin) and acts through it. Plain JavaScript, no build step.
"use strict";

const PREFIX = document.querySelector('meta[name="console-prefix"]').content;
const KEY_STORE = "smoke-console-api-key";
const NAME_STORE = "smoke-console-operator";
const TROUBLE = new Set(["sensor_stuck", "sensor_silent"]);
const SEVERITY = { critical: 0, warning: 1, info: 2 };
const KPI_REFRESH_MS = 2000;  // silences and KPIs: slower than the board, which is what must be live

const state = {
  config: null,
  key: sessionStorage.getItem(KEY_STORE) || "",
  cards: new Map(),      // alert_id -> <li>
  evidence: new Map(),   // alert_id -> evidence of its raised event
  order: "",             // alert ids in board order, to move cards only when it changes
  alarmed: new Set(),    // fire alarms already announced
  muted: new Set(),      // fire alarms the operator silenced locally
  polling: null,
  lastSlow: 0,
  detailId: null,
  audio: null,
};

const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, message, body) { super(message); this.status = status; this.body = body; }
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.body ? { "Content-Type": "application/json" } : {}) };
  if (state.key) headers["X-API-Key"] = state.key;
  let response;
  try {
    response = await fetch(state.config.api_prefix + path, { ...options, headers });
  } catch (err) {
    throw new ApiError(0, `the operator API cannot be reached (${err.message})`);
  }
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (response.status === 401 || response.status === 403) {
    loggedOut(response.status === 401 ? "This console needs an API key." : "API key not accepted.");
    throw new ApiError(response.status, (body && body.error) || "not authorised", body);
  }
  if (!response.ok) {
    throw new ApiError(response.status, (body && body.error) || `HTTP ${response.status}`, body);
  }
  return body;
}

// -- login ---------------------------------------------------------------------------------------

function loggedOut(message) {
  stopPolling();
  state.key = "";
  sessionStorage.removeItem(KEY_STORE);
  clearData();
  $("main").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  setStatus("logged out", false);
}

function clearData() {
  // A refused key must never leave data on the page.
  state.cards.clear();
  state.evidence.clear();
  state.order = "";
  $("board").replaceChildren();
  $("untrusted").replaceChildren();
  $("silences").replaceChildren();
  $("kpis").replaceChildren();
  $("fleet").replaceChildren();
  $("detail").hidden = true;
  $("detail-body").replaceChildren();
  alarmOff();
}

async function login(event) {
  event.preventDefault();
  state.key = $("api-key").value.trim();
  $("login-error").textContent = "";
  try {
    await api("/incidents?limit=1");
  } catch (err) {
    if (err.status !== 401 && err.status !== 403) $("login-error").textContent = err.message;
    return;
  }
  sessionStorage.setItem(KEY_STORE, state.key);
  $("api-key").value = "";
  start();
}

function start() {
  $("login").hidden = true;
  $("main").hidden = false;
  $("logout").hidden = !state.config.auth_required;
  stopPolling();
  poll();
}

function stopPolling() {
  if (state.polling) clearTimeout(state.polling);
  state.polling = null;
}

// -- polling ------------------------------------------------------------------------------------

async function poll() {
  const started = performance.now();
  try {
    const page = await api(`/incidents?state=open&limit=${state.config.board_limit}`);
    renderBoard(page.incidents);
    if (performance.now() - state.lastSlow > KPI_REFRESH_MS) {
      state.lastSlow = performance.now();
      await refreshSlow();
    }
    setStatus(`updated ${new Date().toLocaleTimeString()} · ${page.incidents.length} open`, true);
  } catch (err) {
    if (err.status === 401 || err.status === 403) return; // loggedOut() has stopped polling
    setStatus(`not up to date: ${err.message}`, false);
  }
  const wait = Math.max(0, state.config.poll_s * 1000 - (performance.now() - started));
  state.polling = setTimeout(poll, wait);
}

async function refreshSlow() {
  const [silences, kpis, fleet] = await Promise.all([api("/silences?active=true"), api("/kpis"), api("/fleet")]);
  renderSilences(silences.silences);
  renderKpis(kpis);
  renderFleet(fleet);
}

function setStatus(text, ok) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("down", !ok);
}

// -- board --------------------------------------------------------------------------------------

function rank(i) {
  const kind = i.kind === "fire" ? 0 : TROUBLE.has(i.kind) ? 1 : 2;
  return [kind, SEVERITY[i.severity] ?? 9, i.raised_at ?? i.opened_at];
}

function compare(a, b) {
  const ra = rank(a), rb = rank(b);
  for (let k = 0; k < ra.length; k++) if (ra[k] !== rb[k]) return ra[k] < rb[k] ? -1 : 1;
  return 0;
}

function age(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

function clock(epoch) {
  return epoch == null ? "" : new Date(epoch * 1000).toLocaleString();
}

function evidenceText(i) {
  const parts = [];
  const ev = i.evidence || {};
  if (Array.isArray(ev.channels) && ev.channels.length) parts.push(`channels: ${ev.channels.join(", ")}`);
  for (const [detector, signals] of Object.entries(ev.detectors || {})) {
    for (const [name, v] of Object.entries(signals)) {
      if (v && typeof v.observed === "number") {
        parts.push(`${detector} ${name} ${round(v.observed)} (threshold ${round(v.threshold)})`);
      }
    }
  }
  for (const [name, v] of Object.entries(ev.signals || {})) {
    parts.push(`${name} stuck at ${round(v.value)} for ${v.identical_readings} readings`);
  }
  if (ev.silent_s != null) parts.push(`silent for ${age(ev.silent_s)}`);
  if (i.score != null) parts.push(`score ${round(i.score)}`);
  if (i.model_version) parts.push(`model ${i.model_version}`);
  return parts.join(" · ");
}

function round(x) {
  if (typeof x !== "number") return String(x);
  return Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 1 ? x.toFixed(2) : x.toPrecision(2);
}

function kindClass(i) {
  return i.kind === "fire" ? "fire" : TROUBLE.has(i.kind) ? "trouble" : "info";
}

function newCard(i) {
  const li = $("incident-template").content.firstElementChild.cloneNode(true);
  li.dataset.alertId = i.alert_id;
  const form = li.querySelector(".ack-form");
  form.addEventListener("submit", (e) => { e.preventDefault(); acknowledge(i.alert_id, li); });
  li.querySelector(".resolve").addEventListener("click", () => resolve(i.alert_id, li));
  li.querySelector(".details").addEventListener("click", () => showDetail(i.alert_id));
  const id = `o-${i.alert_id}`;
  form.querySelector("select").id = id;
  form.querySelector("select").setAttribute("aria-label", `Outcome of ${i.kind} at ${i.location.label || i.sensor_id}`);
  return li;
}

function updateCard(li, i, now) {
  const cls = kindClass(i);
  li.className = `incident ${cls} ${i.state}`;
  const kind = li.querySelector(".kind");
  kind.textContent = i.kind.replace("_", " ");
  kind.className = `badge kind ${cls}`;
  li.querySelector(".severity").textContent = i.severity;
  li.querySelector(".state").textContent = i.state;
  li.querySelector(".test").hidden = !i.test;
  li.querySelector(".silenced").hidden = !i.silenced;
  li.querySelector(".where").textContent = i.location.label
    ? `${i.location.label} (${i.sensor_id})` : `${i.sensor_id} (no location in the sensors table)`;
  const since = i.raised_at ?? i.opened_at;
  li.querySelector(".since").textContent = `since ${clock(since)} (${age(now - since)})`
    + (i.cleared_at ? ` · cleared ${age(now - i.cleared_at)} ago` : "");
  li.querySelector(".who").textContent = i.acknowledged_by
    ? `acknowledged by ${i.acknowledged_by} (${i.outcome})` : "not acknowledged";
  const evidence = state.evidence.get(i.alert_id);
  li.querySelector(".evidence").textContent = evidence === undefined ? "" : evidenceText({ ...i, evidence });
  // Acknowledged once (with its outcome); after that only resolving is left.
  for (const el of li.querySelectorAll(".ack-form label, .ack")) el.hidden = Boolean(i.acknowledged_at);
  li.querySelector(".resolve").hidden = !i.acknowledged_at;
}

async function loadEvidence(i, li) {
  // The raised event's evidence does not change: read it once per incident, from its detail.
  state.evidence.set(i.alert_id, {});
  try {
    const d = await api(`/incidents/${encodeURIComponent(i.alert_id)}`);
    const raised = d.events.find((e) => e.state === "raised");
    state.evidence.set(i.alert_id, raised ? raised.evidence : {});
    updateCard(li, d.incident, Date.now() / 1000);
  } catch (_) {
    state.evidence.delete(i.alert_id); // try again on the next poll
  }
}

function renderBoard(incidents) {
  const now = Date.now() / 1000;
  incidents.sort(compare);
  const open = new Set(incidents.map((i) => i.alert_id));
  for (const [id, li] of state.cards) {
    if (!open.has(id)) { li.remove(); state.cards.delete(id); }
  }
  for (const i of incidents) {
    let li = state.cards.get(i.alert_id);
    if (!li) { li = newCard(i); state.cards.set(i.alert_id, li); }
    updateCard(li, i, now);
    if (!state.evidence.has(i.alert_id)) loadEvidence(i, li);
  }
  const order = incidents.map((i) => i.alert_id).join(",");
  if (order !== state.order) {
    // Moving a node blurs it: only when the order really changed.
    const board = $("board");
    for (const i of incidents) board.appendChild(state.cards.get(i.alert_id));
    state.order = order;
  }
  $("board-empty").hidden = incidents.length > 0;
  $("board-count").textContent = incidents.length ? `(${incidents.length})` : "";
  renderUntrusted(incidents.filter((i) => TROUBLE.has(i.kind)), now);
  // A silenced incident (maintenance window) is shown but, like every other delivery, does not sound.
  announceFires(incidents.filter((i) => i.kind === "fire" && !i.acknowledged_at && !i.silenced));
}

function renderUntrusted(troubles, now) {
  const items = troubles.map((i) => {
    const li = document.createElement("li");
    li.textContent = `${i.kind === "sensor_silent" ? "silent" : "stuck"}: ${i.location.label || i.sensor_id}`
      + ` (${i.sensor_id}) for ${age(now - (i.raised_at ?? i.opened_at))}`;
    return li;
  });
  if (!items.length) {
    const li = document.createElement("li");
    li.textContent = "every sensor reports and moves";
    items.push(li);
  }
  $("untrusted").replaceChildren(...items);
}

function renderFleet(fleet) {
  // Sensors by zone: last reading age, trouble, silences. A sensor that did not report in the window
  // says so; it is never shown as fresh.
  const parts = [];
  if (fleet.note) {
    const p = document.createElement("p");
    p.className = "hint";
    p.textContent = `reading ages unknown: ${fleet.note}`;
    parts.push(p);
  }
  for (const z of fleet.zones) {
    const details = document.createElement("details");
    const bad = z.sensors.filter((x) => !x.trusted).length;
    details.open = bad > 0;
    const summary = document.createElement("summary");
    summary.textContent = `${[z.site, z.zone].filter(Boolean).join(", ") || "no zone"}: ${z.sensors.length} sensors`
      + (bad ? `, ${bad} not trusted` : ", all reporting");
    details.append(summary);
    const ul = document.createElement("ul");
    ul.className = "plain";
    for (const x of z.sensors) {
      const li = document.createElement("li");
      li.dataset.sensorId = x.sensor_id;
      li.className = x.trusted ? "trusted" : "untrusted";
      const reported = x.age_s == null ? `no reading in ${age(fleet.window_s)}` : `last reading ${age(x.age_s)} ago`;
      li.textContent = `${x.label || x.sensor_id} (${x.sensor_id}): ${reported}`
        + (x.trouble.length ? ` · ${x.trouble.map((k) => k.replace("sensor_", "")).join(", ")}` : "")
        + (x.silenced ? " · silenced" : "");
      ul.append(li);
    }
    details.append(ul);
    parts.push(details);
  }
  $("fleet").replaceChildren(...parts);
}

// -- audible / visual cue -----------------------------------------------------------------------

function announceFires(fires) {
  const sounding = fires.filter((i) => !state.muted.has(i.alert_id));
  for (const i of fires) state.alarmed.add(i.alert_id);
  if (!sounding.length) { alarmOff(); return; }
  const where = sounding.map((i) => i.location.label || i.sensor_id).join("; ");
  $("alarm-text").textContent = `${sounding.length} unacknowledged: ${where}`;
  $("alarm").hidden = false;
  $("alarm").classList.remove("muted");
  $("mute").hidden = false;
  $("mute").dataset.ids = sounding.map((i) => i.alert_id).join(",");
  beep(true);
}

function alarmOff() {
  $("alarm").hidden = true;
  $("mute").hidden = true;
  beep(false);
}

function beep(on) {
  // A tone pulsing twice a second while an unacknowledged fire is on the board (after a click: browsers
  // start audio only after the user interacted with the page, which the login or any action is).
  try {
    if (!on) {
      if (state.audio) { state.audio.stop(); state.audio = null; }
      return;
    }
    if (state.audio) return;
    const ctx = new (window.AudioContext || window.webkitAudioContext)();
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    osc.frequency.value = 880;
    gain.gain.value = 0;
    for (let t = 0; t < 600; t += 0.5) {
      gain.gain.setValueAtTime(0.15, ctx.currentTime + t);
      gain.gain.setValueAtTime(0, ctx.currentTime + t + 0.25);
    }
    osc.connect(gain).connect(ctx.destination);
    osc.start();
    state.audio = { stop: () => { osc.stop(); ctx.close(); } };
  } catch (_) {
    state.audio = null; // no audio device: the visual cue stays
  }
}

function muteAlarm() {
  for (const id of ($("mute").dataset.ids || "").split(",")) if (id) state.muted.add(id);
  alarmOff();
}

// -- actions ------------------------------------------------------------------------------------

function operatorName() {
  const name = $("operator-name").value.trim();
  if (!name) {
    $("operator-name").focus();
    throw new ApiError(0, "by: enter your name in “On duty” first");
  }
  localStorage.setItem(NAME_STORE, name);
  return name;
}

async function acknowledge(alertId, li) {
  const error = li.querySelector(".error");
  error.textContent = "";
  const form = li.querySelector(".ack-form");
  try {
    const outcome = form.elements.outcome.value;
    if (!outcome) throw new ApiError(0, "outcome: choose what it turned out to be");
    const body = { by: operatorName(), outcome, note: form.elements.note.value };
    const incident = await api(`/incidents/${encodeURIComponent(alertId)}/ack`,
      { method: "POST", body: JSON.stringify(body) });
    form.elements.note.value = "";
    state.muted.add(alertId);
    updateCard(li, incident, Date.now() / 1000);
    poll_soon();
  } catch (err) {
    error.textContent = err.message;
  }
}

async function resolve(alertId, li) {
  const error = li.querySelector(".error");
  error.textContent = "";
  try {
    await api(`/incidents/${encodeURIComponent(alertId)}/resolve`,
      { method: "POST", body: JSON.stringify({ by: operatorName() }) });
    poll_soon();
  } catch (err) {
    error.textContent = err.message;
  }
}

function poll_soon() {
  stopPolling();
  poll();
}

async function createSilence(event) {
  event.preventDefault();
  const form = $("silence-form");
  $("silence-error").textContent = "";
  try {
    const body = {
      [form.elements.what.value]: form.elements.value.value.trim(),
      duration_s: Number(form.elements.duration_s.value),
      comment: form.elements.comment.value.trim(),
      created_by: operatorName(),
    };
    await api("/silences", { method: "POST", body: JSON.stringify(body) });
    form.elements.value.value = "";
    form.elements.comment.value = "";
    state.lastSlow = 0;
    poll_soon();
  } catch (err) {
    $("silence-error").textContent = err.message;
  }
}

function renderSilences(silences) {
  const items = silences.map((s) => {
    const li = document.createElement("li");
    const what = ["sensor_id", "zone", "site", "kind"].filter((m) => s[m] != null).map((m) => `${m} ${s[m]}`);
    li.append(`${what.join(", ")} until ${clock(s.ends_at)} — ${s.created_by}: ${s.comment}`);
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "quiet";
    remove.textContent = "End";
    remove.setAttribute("aria-label", `End the silence of ${what.join(", ")}`);
    remove.addEventListener("click", async () => {
      try {
        await api(`/silences/${s.id}`, { method: "DELETE" });
        state.lastSlow = 0;
        poll_soon();
      } catch (err) {
        $("silence-error").textContent = err.message;
      }
    });
    li.append(remove);
    return li;
  });
  if (!items.length) {
    const li = document.createElement("li");
    li.textContent = "none";
    items.push(li);
  }
  $("silences").replaceChildren(...items);
}

const KPI_LABELS = [
  ["detectors", "detectors", (v) => v],
  ["unwanted_alarms_12m", "unwanted alarms, last 12 months", (v) => v],
  ["unwanted_per_100_detectors_per_year", "unwanted alarms / 100 detectors / year", (v) => round(v)],
  ["flagged_devices", "devices with ≥ 3 unwanted alarms (BS 5839-1)", (v) => (v.length ? v.join(", ") : "none")],
  ["unacknowledged", "unacknowledged incidents", (v) => v],
  ["ack_time_p50_s", "time to acknowledge, median", (v) => age(v)],
  ["ack_time_p95_s", "time to acknowledge, p95", (v) => age(v)],
];

function renderKpis(kpis) {
  const rows = [];
  for (const [key, label, format] of KPI_LABELS) {
    if (!(key in kpis)) continue;
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    dd.textContent = kpis[key] == null ? "no data yet" : String(format(kpis[key]));
    dd.dataset.kpi = key;
    rows.push(dt, dd);
  }
  $("kpis").replaceChildren(...rows);
}

// -- detail -------------------------------------------------------------------------------------

async function showDetail(alertId) {
  state.detailId = alertId;
  const body = $("detail-body");
  body.textContent = "loading…";
  $("detail").hidden = false;
  try {
    const d = await api(`/incidents/${encodeURIComponent(alertId)}`);
    if (state.detailId !== alertId) return;
    const i = d.incident;
    const raised = d.events.find((e) => e.state === "raised");
    const head = document.createElement("p");
    head.textContent = `${i.kind} (${i.severity}), ${i.state}: ${i.location.label || "no location"} — sensor `
      + `${i.sensor_id}, alert ${i.alert_id}${i.test ? " (test alarm)" : ""}`;
    const evidence = document.createElement("p");
    evidence.textContent = evidenceText({ ...i, evidence: raised ? raised.evidence : {} }) || "no evidence recorded";
    const timeline = document.createElement("ol");
    timeline.className = "timeline";
    const entries = [
      ...d.events.map((e) => [e.detected_at, `${e.state} (reading at ${clock(e.event_time)})`]),
      ...d.acknowledgements.map((a) => [a.at, `acknowledged by ${a.by}: ${a.outcome}${a.note ? ` — ${a.note}` : ""}`]),
      ...(i.escalated_at ? [[i.escalated_at, "escalated (not acknowledged in time)"]] : []),
      ...d.deliveries.map((x) => [x.sent_at || x.created_at,
        `${x.state} → ${x.channel}: ${x.status}${x.attempts > 1 ? ` after ${x.attempts} attempts` : ""}`
        + (x.last_error ? ` (${x.last_error})` : "")]),
    ];
    if (i.resolved_at) {
      entries.push([i.resolved_at, `resolved${i.resolved_by ? ` by ${i.resolved_by}` : ""}`
        + (i.resolve_note ? ` — ${i.resolve_note}` : "")]);
    }
    entries.sort((a, b) => (a[0] || 0) - (b[0] || 0));
    for (const [at, what] of entries) {
      const li = document.createElement("li");
      const t = document.createElement("time");
      t.textContent = clock(at);
      li.append(t, what);
      timeline.append(li);
    }
    const plot = document.createElement("div");
    plot.className = "readings";
    plot.textContent = "loading the readings…";
    body.replaceChildren(head, evidence, plot, timeline);
    loadReadings(alertId, plot);
    $("detail-title").textContent = `Incident at ${i.location.label || i.sensor_id}`;
  } catch (err) {
    body.textContent = err.message;
  }
}

// -- readings plot ------------------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";
const CHANNEL_LABELS = {
  pm2_5_ugm3: "PM2.5 (µg/m³)", temperature_c: "temperature (°C)", tvoc_ppb: "TVOC (ppb)",
  eco2_ppm: "eCO2 (ppm)", humidity_pct: "humidity (%)",
};

async function loadReadings(alertId, into) {
  try {
    const r = await api(`/incidents/${encodeURIComponent(alertId)}/readings`);
    if (state.detailId !== alertId) return;
    if (!r.timestamps.length) { into.textContent = r.note || "no readings"; return; }
    into.replaceChildren(...r.channels.map((c) => channelPlot(r, c)));
  } catch (err) {
    into.textContent = err.message;
  }
}

function svgEl(name, attrs) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

function channelPlot(r, channel) {
  // One small plot a channel, with the raise (red) and clear (green) marks; gaps stay gaps.
  const W = 600, H = 90, PAD = 4;
  const values = r.values[channel];
  const present = values.filter((v) => v != null);
  const lo = Math.min(...present), hi = Math.max(...present);
  const x = (t) => PAD + ((t - r.start) / (r.end - r.start)) * (W - 2 * PAD);
  const y = (v) => H - PAD - (hi === lo ? 0.5 : (v - lo) / (hi - lo)) * (H - 2 * PAD);
  const figure = document.createElement("figure");
  const caption = document.createElement("figcaption");
  caption.textContent = `${CHANNEL_LABELS[channel] || channel}: ${round(lo)} – ${round(hi)}`;
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": caption.textContent,
    preserveAspectRatio: "none", class: "plot", "data-channel": channel });
  let d = "", pen = false;
  r.timestamps.forEach((t, k) => {
    const v = values[k];
    if (v == null) { pen = false; return; }
    d += `${pen ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
    pen = true;
  });
  svg.append(svgEl("path", { d, class: "series" }));
  for (const [at, cls] of [[r.raised_at, "raise"], [r.cleared_at, "clear"]]) {
    if (at != null) svg.append(svgEl("line", { x1: x(at), x2: x(at), y1: 0, y2: H, class: `mark ${cls}` }));
  }
  figure.append(caption, svg);
  return figure;
}

// -- start --------------------------------------------------------------------------------------

async function boot() {
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", () => loggedOut(""));
  $("mute").addEventListener("click", muteAlarm);
  $("silence-form").addEventListener("submit", createSilence);
  $("detail-close").addEventListener("click", () => { $("detail").hidden = true; state.detailId = null; });
  $("operator-name").value = localStorage.getItem(NAME_STORE) || "";
  try {
    const response = await fetch(`${PREFIX}/config.json`, { cache: "no-store" });
    state.config = await response.json();
  } catch (err) {
    setStatus(`cannot load the console settings: ${err.message}`, false);
    return;
  }
  if (state.config.auth_required && !state.key) {
    loggedOut("");
    return;
  }
  start();
}

boot();
