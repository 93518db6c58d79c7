// System: readiness per process, fps and last-frame age per camera, detect figures, consumer lag
// per group, dead letters per reason, webhook delivery per endpoint (GET /api/system every 5 s).

import { api, el, header, num } from "./common.js";

const EVERY_MS = 5000;
const out = document.getElementById("out");

function table(caption, heads, rows, empty) {
  if (!rows.length) return el("section", {}, el("h2", { text: caption }), el("p", { class: "muted", text: empty }));
  return el("section", {}, el("h2", { text: caption }), el("div", { class: "tablewrap" }, el("table", {},
    el("thead", {}, el("tr", {}, heads.map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((c) => (c instanceof Node ? el("td", {}, c) : el("td", { class: typeof c === "number" ? "num" : "", text: c ?? "–" })))))))));
}

const mark = (ok, yes = "ready", no = "not ready") => el("span", { class: ok ? "okc" : "error", text: ok ? `✓ ${yes}` : `✗ ${no}` });

// The headline figures of each stage's heartbeat (`stats`: running totals and their `_per_s` rates).
const FIGURES = {
  ingest: (s) => [`${num(s.published_per_s)} frames/s published`, s.dropped ? `${s.dropped} dropped` : null,
    s.reconnects ? `${s.reconnects} reconnects` : null],
  detect: (s) => [`${num(s.frames_detected_per_s)} fps`,
    s.batches_per_s ? `${num(s.inference_ms_per_s / s.batches_per_s, 0)} ms per batch` : null,
    s.stale_dropped ? `${s.stale_dropped} stale dropped` : null, s.dead_letters ? `${s.dead_letters} dead letters` : null],
  alerts: (s) => [`${s.alerts_fired ?? 0} alert events`, `${s.delivered ?? 0} delivered`],
  web: (s) => [`${s.alerts_stored ?? 0} alert changes stored since start`, `${s.sse_clients ?? 0} live clients`],
};

function figures(p) {
  const stats = p.stats || {};
  if (!Object.keys(stats).length) return "–";
  const pick = FIGURES[p.stage] || ((s) => Object.entries(s).filter(([k]) => !k.endsWith("_per_s")).map(([k, v]) => `${k} ${v}`));
  return pick(stats).filter(Boolean).join(" · ");
}

function render(s) {
  const procs = s.processes.map((p) => [
    p.stage, p.process, p.gone ? el("span", { class: "error", text: "✗ gone" }) : mark(p.ready), `${num(p.age_s)} s`,
    p.gone ? "–" : figures(p),
    el("span", {}, p.components.map((c) => el("span", { class: c.ok ? "" : "error", title: c.detail,
      text: `${c.ok ? "✓" : "✗"} ${c.name}${c.detail ? `: ${c.detail}` : ""}  ` }))),
  ]);
  const cams = s.cameras.map((c) => [el("a", { href: `/cameras/${encodeURIComponent(c.id)}`, text: c.id }),
    el("span", { class: `state ${c.state}`, text: c.state }), num(c.fps), c.last_frame_age_s === null ? "no frame" : `${num(c.last_frame_age_s)} s`]);
  const lags = Object.entries(s.lag).map(([group, lag]) => [group, lag === null ? "no commit yet" : lag]);
  const dead = Object.entries(s.dead_letters).map(([reason, n]) => [reason, n]);
  const hooks = s.webhooks.map((w) => [w.name, el("span", { class: w.state === "ok" ? "okc" : w.state === "unknown" ? "muted" : "error", text: w.state }),
    w.delivered === undefined ? "–" : `${w.delivered} (${num(w.delivered_per_s)}/s)`, w.lag ?? "–", w.detail || ""]);
  const ready = s.processes.filter((p) => p.ready).length;
  out.replaceChildren(
    el("div", { class: "figures" },
      el("div", { class: "figure" }, el("b", { text: `${ready} / ${s.processes.length}` }), "processes ready"),
      el("div", { class: "figure" }, el("b", { text: num(s.detect.fps) }), "detect fps"),
      el("div", { class: "figure" }, el("b", { text: `${num(s.detect.infer_ms)} ms` }), "inference"),
      el("div", { class: "figure" }, el("b", { text: String(s.store.alerts) }), "alerts stored")),
    table("Processes", ["stage", "process", "ready", "last heartbeat", "figures", "parts"], procs, "No heartbeat on the status topic yet."),
    el("div", { class: "cols" },
      table("Cameras", ["camera", "state", "fps", "last frame"], cams, "No camera."),
      table("Consumer lag", ["group", "records behind"], lags, "No consumer group."),
      table("Webhooks", ["endpoint", "delivery", "delivered", "lag", "detail"], hooks, "No webhook configured."),
      table("Dead letters", ["stage: reason", "records"], dead, "No dead letter in the last hour.")),
    el("p", { class: "muted", text: `Store: ${s.store.path} · updated ${new Date().toLocaleTimeString()}` }));
}

async function refresh() {
  try {
    render(await api("/api/system"));
    document.getElementById("problem").textContent = "";
  } catch (err) {
    document.getElementById("problem").textContent = `Could not read the system state: ${err.message}`;
  }
  setTimeout(refresh, document.hidden ? EVERY_MS * 4 : EVERY_MS);
}

header("System").then(refresh);
