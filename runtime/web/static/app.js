// The live page of `edge-mtl run --serve`: one tile per stream, the MJPEG video beside the
// figures. Figures come from /api/status (every second) and each frame's record from /events
// (the records of --jsonl). Everything is built with textContent: no HTML from the server is
// ever interpreted. Nothing is fetched from anywhere but this server.
"use strict";

const tiles = new Map(); // stream name -> {figs, rows}
const KNOWN = new Set(["type", "frame", "source_frame", "source_time", "wall_time", "age_ms",
  "file", "detections", "tasks", "latency_ms"]);

function el(tag, attrs = {}, text = "") {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text) e.textContent = text;
  return e;
}

function fmt(v, digits = 1) {
  return typeof v === "number" && isFinite(v) ? v.toFixed(digits) : "–";
}

function table(rows) { // rows: [[label, value, barFraction?], ...]
  const t = el("table");
  for (const [k, v, bar] of rows) {
    const tr = el("tr");
    tr.append(el("td", {}, k));
    const td = el("td", {}, String(v));
    if (typeof bar === "number") {
      const b = el("div", { class: "bar" });
      b.style.width = `${Math.max(0, Math.min(1, bar)) * 100}%`;
      td.append(b);
    }
    tr.append(td);
    t.append(tr);
  }
  return t;
}

function tile(name) {
  if (tiles.has(name)) return tiles.get(name);
  const section = el("section", { class: "tile", "data-stream": name });
  const video = el("div", { class: "video" });
  video.append(el("img", { src: `/stream/${encodeURIComponent(name)}.mjpg`, alt: name }));
  const figs = el("div", { class: "figs" });
  const title = el("h2");
  title.append(el("span", {}, name), el("span", { class: "state" }));
  const stats = el("div", { class: "stats" });
  const record = el("div", { class: "record" });
  figs.append(title, stats, record);
  section.append(video, figs);
  document.getElementById("tiles").append(section);
  const t = { title, stats, record };
  tiles.set(name, t);
  return t;
}

function taskRows(tasks) {
  const rows = [];
  for (const [name, a] of Object.entries(tasks || {})) {
    if (a.kind === "classify") rows.push([name, `${a.label} ${fmt(a.prob, 2)}`, a.prob]);
    else if (a.kind === "regress") rows.push([name, `${fmt(a.value, 3)} ${a.unit || ""}`]);
    else if (a.kind === "segment") rows.push([name, segmentText(a)]);
    else rows.push([name, summary(a)]); // a kind this page does not know: its fields
  }
  return rows;
}

function segmentText(a) { // share of the frame outside the background, then its pixels
  const bg = Object.keys(a.pixels)[0];
  const px = Object.entries(a.pixels).reduce((n, [k, v]) => (k === bg ? n : n + v), 0);
  return `${fmt(100 * (1 - a.fractions[bg]), 1)}% (${px} px)`;
}

function summary(v) {
  if (Array.isArray(v)) return `${v.length} items`;
  if (v && typeof v === "object") {
    return Object.entries(v).filter(([k]) => k !== "kind").map(([k, x]) =>
      `${k} ${Array.isArray(x) ? `[${x.length}]` : typeof x === "object" && x ? "{…}" :
        typeof x === "number" ? fmt(x, 3) : x}`).join(", ");
  }
  return String(v);
}

function showRecord(name, rec) {
  const t = tile(name);
  const counts = {};
  for (const d of rec.detections || []) counts[d.label] = (counts[d.label] || 0) + 1;
  const dets = Object.entries(counts).map(([k, n]) => `${n} ${k}`).join(", ") || "none";
  const rows = [["frame", rec.frame], ["age", `${fmt(rec.age_ms)} ms`], ["detections", dets]];
  for (const [k, v] of Object.entries(rec.latency_ms || {})) rows.push([`${k} ms`, fmt(v)]);
  rows.push(...taskRows(rec.tasks));
  for (const [k, v] of Object.entries(rec)) if (!KNOWN.has(k)) rows.push([k, summary(v)]);
  t.record.replaceChildren(table(rows));
}

function showStatus(s) {
  document.getElementById("run").textContent =
    `${s.model} · ${s.provider} ${s.precision} · ${s.viewers} viewer(s) · up ${fmt(s.uptime_s, 0)} s`;
  for (const st of s.streams) {
    const t = tile(st.name);
    const state = t.title.querySelector(".state");
    state.textContent = st.state;
    state.className = `state state-${st.state}`;
    t.stats.replaceChildren(table([
      ["FPS", fmt(st.fps)], ["frames", st.frames], ["drops", st.drops],
      ["reconnects", st.reconnects], ["source", `${st.source} (${st.source_kind})`],
    ]));
    if (st.last && !t.seen) showRecord(st.name, st.last);
  }
}

async function poll() {
  try {
    const r = await fetch("/api/status", { credentials: "same-origin", cache: "no-store" });
    if (r.status === 401) {
      document.getElementById("note").textContent = "token needed: open /?token=YOUR_TOKEN once";
      return;
    }
    const s = await r.json();
    showStatus(s);
    listen(s.streams.map((x) => x.name));
  } catch (e) {
    document.getElementById("note").textContent = `server unreachable (${e})`;
  }
}

let events = null;
const listening = new Set();
function listen(names) { // one event stream for every stream; a stream added later joins it
  if (!events) events = new EventSource("/events");
  for (const name of names) {
    if (listening.has(name)) continue;
    listening.add(name);
    events.addEventListener(name, (e) => {
      const rec = JSON.parse(e.data);
      if (rec.type !== "frame") return;
      tile(name).seen = true;
      showRecord(name, rec);
    });
  }
}

poll();
setInterval(poll, 1000);
