// The steering controls, drawn from the player's own list of its live settings (GET /api/settings,
// from playbach/settings.py's definitions): one control per row, a menu where the row has choices,
// a slider and a number box where it has a range, each with its value in force and its help. A
// setting the player makes live shows up here without an edit to the page. Changes go out with
// POST /api/settings; one the player refuses is shown under its control with the player's reason.
// Uses $ and api() of app.js.
"use strict";
const controls = new Map();       // setting name -> {row, show(value), error(text)}

const words = (name) => name.replace(/_/g, " ");
// "" is the one value a menu offers besides its choices when it is the default (key: no key asked)
const choiceLabel = (v) => (v === "" ? "the model's own" : v === true ? "on" : v === false ? "off" : String(v));
const bounded = (row) => row.low !== null && row.high !== null;
const menuValues = (row) => {
  const choices = row.choices || [false, true];   // a bool: off / on
  return choices.includes(row.default) ? choices : [row.default].concat(choices);
};

function sliderStep(row) {
  if (row.type === "int") return 1;
  return Math.pow(10, Math.floor(Math.log10((row.high - row.low) / 100)));   // about 100 steps
}

function shown(row, value) {
  if (row.choices || row.type === "bool") return choiceLabel(value);
  if (row.type !== "float") return String(value);
  const digits = bounded(row) ? Math.max(0, -Math.floor(Math.log10(sliderStep(row)))) : 3;
  return String(Number(Number(value).toFixed(digits)));
}

function element(tag, props) { return Object.assign(document.createElement(tag), props); }

// A menu sends the chosen value itself (a number or a bool stays one), not the option's text.
function menu(row, id) {
  const values = menuValues(row);
  const select = element("select", { id });
  select.replaceChildren(...values.map((v) => new Option(choiceLabel(v), String(v))));
  select.addEventListener("change", () => send(row, values[select.selectedIndex]));
  const set = (v) => {   // a value in force the list lacks ('d minor' from a config file) is shown as it is
    if (!values.includes(v)) { values.push(v); select.add(new Option(choiceLabel(v), String(v))); }
    select.selectedIndex = values.indexOf(v);
  };
  return { inputs: [select], set };
}

function text(row, id) {
  const box = element("input", { type: "text", id, title: row.accepts });
  box.addEventListener("change", () => send(row, box.value));
  return { inputs: [box], set: (v) => { box.value = v; } };
}

// A slider over the whole range (where there is one) and a number box for an exact value.
function numeric(row, id) {
  const box = element("input", { type: "number", id, step: row.type === "int" ? 1 : "any", title: row.accepts,
    inputMode: row.type === "int" && row.low >= 0 ? "numeric" : "decimal" });
  if (row.low !== null) box.min = row.low;
  if (row.high !== null) box.max = row.high;
  box.addEventListener("change", () => {
    const v = box.value.trim() === "" ? NaN : Number(box.value);
    if (Number.isFinite(v)) send(row, v);
    else controls.get(row.name).error(`${words(row.name)}: not a number; it takes ${row.accepts}`);
  });
  if (!bounded(row)) return { inputs: [box], set: (v) => { box.value = v; } };
  const slider = element("input",
    { type: "range", id: id + "-slider", min: row.low, max: row.high, step: sliderStep(row) });
  slider.setAttribute("aria-labelledby", id + "-name");
  slider.addEventListener("input", () => {
    box.value = slider.value; $(id + "-out").textContent = shown(row, slider.value);
  });
  slider.addEventListener("change", () => send(row, Number(slider.value)));
  return { inputs: [slider, box], set: (v) => { slider.value = v; box.value = v; } };
}

function drawSetting(row) {
  const id = "set-" + row.name;
  const draw = row.choices || row.type === "bool" ? menu : row.type === "str" ? text : numeric;
  const made = draw(row, id);
  const out = element("output", { id: id + "-out" });
  out.htmlFor = id;
  const head = element("div", { className: "setting-head" });
  head.append(element("label", { id: id + "-name", htmlFor: id, textContent: words(row.name) }), out);
  const help = element("p", { id: id + "-help", className: "help", textContent: row.help });
  const error = element("p", { id: id + "-error", className: "error", hidden: true });
  error.setAttribute("role", "alert");
  for (const input of made.inputs) input.setAttribute("aria-describedby", `${id}-help ${id}-error`);
  const wrap = element("div", { className: "setting-inputs" });
  wrap.append(...made.inputs);
  const box = element("div", { className: "setting" });
  box.dataset.name = row.name;
  box.append(head, wrap, help, error);
  const control = {
    row: box,
    show(value, force) {
      if (!force && box.contains(document.activeElement)) return;   // not under the user's finger
      made.set(value); out.textContent = shown(row, value); box.dataset.value = String(value);
    },
    error(text) { error.textContent = text || ""; error.hidden = !text; },
  };
  controls.set(row.name, control);
  control.show(row.value, true);
  return box;
}

function drawSettings(rows) {
  controls.clear();
  $("settings").replaceChildren(...rows.map(drawSetting));
  $("settings").dataset.names = rows.map((r) => r.name).join(",");
}

async function loadSettings() {
  try {
    const r = await api("GET", "/api/settings");
    if (r.ok) drawSettings((await r.json()).settings);
  } catch (e) { /* the next status asks again */ }
}

// The values in force (status.live each second, a change's answer): every control shows them;
// a live setting the page has no control for means the player changed: draw the list again.
function showLive(live) {
  if (!live) return;
  if (Object.keys(live).join(",") !== $("settings").dataset.names) { loadSettings(); return; }
  for (const [name, value] of Object.entries(live)) controls.get(name).show(value);
}

async function send(row, value) {
  const control = controls.get(row.name);
  try {
    const r = await api("POST", "/api/settings", { [row.name]: value });
    const answer = await r.json().catch(() => ({}));
    if (r.ok) {
      control.error("");
      for (const [n, v] of Object.entries(answer.live || {})) controls.get(n)?.show(v, true);
    } else {
      if (r.status !== 401) control.error(answer.error || `refused (${r.status})`);
      refreshLive();
    }
  } catch (e) { control.error("the Pi does not answer"); }
}

// After a refusal: the value in force back in the control the user just moved.
async function refreshLive() {
  try {
    const r = await api("GET", "/api/settings");
    if (r.ok) for (const row of (await r.json()).settings) controls.get(row.name)?.show(row.value, true);
  } catch (e) { /* the next status shows it */ }
}
