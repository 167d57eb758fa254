// The control page: status, a scrolling piano roll fed by /api/events (server-sent events),
// and the controls (the steering ones drawn by steering.js), all through the JSON API. No
// framework, no build step.
"use strict";
const $ = (id) => document.getElementById(id);
const notes = new Map();          // note id -> {on, off, pitch, vel, sounded}
const PPS = 90;                   // pixels per second on the roll
let offset = null;                // performance.now()/1000 minus the player's clock
let lastFrame = 0, source = null, started = false;

async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) { init.headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
  const r = await fetch(path, init);
  if (r.status === 401) showLogin();
  return r;
}

function say(text) { const m = $("message"); m.textContent = text || ""; m.hidden = !text; }

function showLogin() {
  $("main").hidden = true; $("login").hidden = false;
  if (source) { source.close(); source = null; }
  started = false;
}

function setState(text, cls) { const s = $("state"); s.textContent = text; s.className = "state " + cls; }

function render(s) {
  if (!s.connected) { setState("not playing", "off"); return; }
  setState(s.paused ? "paused" : (s.playing ? "playing" : "waiting for the synth"), s.paused ? "paused" : (s.playing ? "" : "off"));
  $("model").textContent = s.model; $("backend").textContent = s.backend;
  $("bpm").textContent = s.bpm.toFixed(0) + " BPM"; $("temperature").textContent = s.temperature.toFixed(2);
  $("notes").textContent = s.notes_played; $("uptime").textContent = duration(s.uptime);
  showLive(s.live);   // steering.js
  if (document.activeElement !== $("bundle") && s.bundle !== $("bundle").dataset.playing) {
    $("bundle").dataset.playing = s.bundle; $("bundle").value = s.bundle;
  }
  fill($("opening"), [""].concat(s.openings), null, (o) => o || "random opening");
}

function fill(select, values, chosen, label = (v) => v) {
  if (select.dataset.values === JSON.stringify(values)) return;
  select.dataset.values = JSON.stringify(values);
  select.replaceChildren(...values.map((v) => { const o = new Option(label(v), v); o.selected = v === chosen; return o; }));
}

function duration(s) {
  const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60;
  return h ? `${h} h ${m} min` : `${m} min ${Math.floor(s % 60)} s`;
}

// The models: every bundle of the Pi from /api/bundles (web/bundles.py); the playable ones in the
// bundle menu (New take switches), the broken ones listed with the reason.
function showBundles(list) {
  const rows = list.bundles, chosen = $("bundle").value || list.playing;
  const key = JSON.stringify(rows);
  if ($("bundle-list").dataset.rows === key) return;
  $("bundle-list").dataset.rows = key;
  $("bundle-list").replaceChildren(...rows.map((b) => {
    const li = document.createElement("li");
    li.textContent = `${b.name} (${b.where})` + (b.ok ? "" : `: does not play: ${b.error}`);
    if (!b.ok) li.className = "broken";
    return li;
  }));
  $("bundle").replaceChildren(...rows.filter((b) => b.ok).map((b) =>
    new Option(b.where === "yours" ? `${b.name} (yours)` : b.name, b.name, false, b.name === chosen)));
}

async function loadBundles() {
  try { const r = await api("GET", "/api/bundles"); if (r.ok) showBundles(await r.json()); } catch (e) { /* next time */ }
}

async function upload() {
  const file = $("upload").files[0], msg = $("upload-msg");
  if (!file) { msg.textContent = "choose a .tar.gz first"; return; }
  msg.textContent = `sending ${file.name} (${(file.size / 1e6).toFixed(1)} MB)...`;
  $("upload-go").disabled = true;
  try {
    const r = await fetch("/api/bundles" + ($("replace").checked ? "?replace=1" : ""),
      { method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/gzip" }, body: file });
    const answer = await r.json().catch(() => ({}));
    if (r.status === 401) showLogin();
    if (r.ok) { msg.textContent = `installed ${answer.installed}: choose it in the menu and press New take`; showBundles({ bundles: answer.bundles }); }
    else msg.textContent = `not installed: ${answer.error || r.status}`;
  } catch (e) { msg.textContent = "the Pi does not answer"; }
  $("upload-go").disabled = false;
}

async function refresh() {
  try { const r = await api("GET", "/api/status"); if (r.ok) render(await r.json()); }
  catch (e) { setState("not playing", "off"); }
}

function onFrame(f) {
  const here = performance.now() / 1000;
  const o = here - f.now;   // the lowest seen is the least delayed frame: follow it, drift up slowly
  offset = offset === null ? o : Math.min(offset + 0.002, o);
  lastFrame = here;
  const seen = new Set();
  for (const [id, on, off, pitch, vel] of f.notes) {
    seen.add(id);
    notes.set(id, { on, off: off === null ? on + 0.25 : off, pitch, vel, sounded: on <= f.now });
  }
  for (const [id, n] of notes) {
    if (seen.has(id)) continue;
    if (n.on > f.now && !n.sounded) notes.delete(id);          // dropped before it sounded
    else if (n.off > f.now) n.off = f.now;                     // ended early (panic, pause)
    if (n.off < f.now - 30) notes.delete(id);
  }
  $("notes").textContent = f.notes_played;
}

function draw() {
  const c = $("roll"), ctx = c.getContext("2d"), dpr = window.devicePixelRatio || 1;
  const w = c.clientWidth, h = c.clientHeight;
  if (c.width !== Math.round(w * dpr)) { c.width = Math.round(w * dpr); c.height = Math.round(h * dpr); }
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const head = w * 0.7, now = offset === null ? 0 : performance.now() / 1000 - offset;
  let lo = 127, hi = 0;
  for (const n of notes.values()) { lo = Math.min(lo, n.pitch); hi = Math.max(hi, n.pitch); }
  if (lo > hi) { lo = 48; hi = 84; }
  lo -= 2; hi += 2;
  const row = h / (hi - lo + 1);
  let drawn = 0;
  for (const n of notes.values()) {
    const x0 = head + (n.on - now) * PPS, x1 = head + (n.off - now) * PPS;
    if (x1 < 0 || x0 > w) continue;
    const y = h - (n.pitch - lo + 1) * row, ahead = n.on > now;
    ctx.fillStyle = ahead ? "rgba(120,170,255,0.35)" : `hsl(${30 + n.vel / 3}, 80%, 60%)`;
    ctx.fillRect(x0, y, Math.max(2, x1 - x0 - 1), Math.max(2, row - 1));
    if (!ahead) drawn++;
  }
  ctx.fillStyle = "#fff8"; ctx.fillRect(head, 0, 1, h);
  c.dataset.drawn = drawn;
  requestAnimationFrame(draw);
}

function listen() {
  if (source) source.close();
  source = new EventSource("/api/events");
  source.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.type === "frame") onFrame(m);
    else if (m.type === "link") { if (!m.connected) { setState("not playing", "off"); notes.clear(); } refresh(); }
  };
  source.onerror = () => { if (performance.now() / 1000 - lastFrame > 3) setState("not playing", "off"); };
}

function start() {
  $("login").hidden = true; $("main").hidden = false;
  if (started) return;
  started = true;
  refresh(); listen(); loadBundles();   // the first status draws the steering controls
}

async function post(path, body) {
  try {
    const r = await api("POST", path, body);
    if (!r.ok && r.status !== 401) say((await r.json().catch(() => ({}))).error || `${r.status}`);
    else say("");
    refresh();
  } catch (e) { say("the Pi does not answer"); }
}

window.addEventListener("DOMContentLoaded", () => {
  for (const op of ["play", "pause", "panic"]) $(op).addEventListener("click", () => post("/api/" + op));
  $("reset").addEventListener("click", () => post("/api/reset").then(refreshLive));   // steering.js
  $("restart").addEventListener("click", () => {
    const want = { bundle: $("bundle").value };
    if ($("opening").value) want.opening = $("opening").value;
    say("starting a new take..."); post("/api/restart", want);
  });
  $("login").addEventListener("submit", async (e) => {
    e.preventDefault();
    const r = await fetch("/api/login", { method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify({ token: $("token").value }) });
    $("login-error").hidden = r.ok;
    if (r.ok) { $("token").value = ""; start(); }
  });
  $("upload-go").addEventListener("click", upload);
  $("signout-others").addEventListener("click", async () => {
    const r = await api("POST", "/api/sessions/revoke").catch(() => null);
    $("access-msg").textContent = r && r.ok ? "Every other device is signed out." : "Not done: the page did not answer.";
  });
  setInterval(() => { if (started) refresh(); }, 1000);
  setInterval(() => { if (started) loadBundles(); }, 10000);   // a bundle copied in by scp shows up
  requestAnimationFrame(draw);
  api("GET", "/api/status").then((r) => { if (r.ok) { start(); r.json().then(render); } });
});
