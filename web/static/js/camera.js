// A camera: its live view larger, toggles for boxes / zones / motion boxes, its recent alerts.

import { api, cameraPath, clock, durationNode, el, header, num, since, stream } from "./common.js";
import { LiveView } from "./view.js";

const id = cameraPath("/cameras/");
const box = document.getElementById("view");
const view = new LiveView(box, id, { boxes: true, zones: true, motion: false });
const list = document.getElementById("alerts");
const alerts = new Map();
let camera = null;

function renderCamera(c) {
  camera = c;
  view.setZones(c.zones);
  const state = document.getElementById("state");
  state.className = `state ${c.state}`;
  state.textContent = `${c.state} · ${since(c.state_since_ns)}`;
  document.getElementById("fps").textContent =
    `${num(c.fps)} fps (configured ${num(c.configured_fps)}) · ${c.width ? `${c.width}×${c.height}` : "no frame yet"}`;
  document.getElementById("detail").textContent = c.detail || "";
}

function alertItem(a) {
  const text = `${a.label} ${Math.round(a.score * 100)}% · ${a.rule}${a.zone ? ` (${a.zone})` : ""}`;
  const when = [`${clock(a.started_ns)} · `, durationNode(a), a.reviewed ? " · reviewed" : ""];
  return el("li", { "data-alert-id": a.id },
    el("a", { href: `/review?camera=${encodeURIComponent(a.camera)}#${encodeURIComponent(a.id)}` },
      el("img", { src: a.snapshot_url, alt: `Snapshot: ${text}`, loading: "lazy", width: 96, height: 72 }),
      el("span", {}, el("b", { text }), el("br"), el("span", { class: "muted" }, ...when))));
}

function renderAlerts() {
  const items = [...alerts.values()].sort((a, b) => b.started_ns - a.started_ns).slice(0, 12);
  list.replaceChildren(...items.map(alertItem));
  document.getElementById("none").hidden = items.length > 0;
}

async function main() {
  document.title = `vigil · ${id}`;
  document.getElementById("name").textContent = id;
  document.getElementById("zones-link").href = `/zones/${encodeURIComponent(id)}`;
  document.getElementById("review-link").href = `/review?camera=${encodeURIComponent(id)}`;
  await header("Live");
  for (const option of ["boxes", "zones", "motion"]) {
    const input = document.getElementById(`show-${option}`);
    const saved = localStorage.getItem(`vigil.camera.${option}`);
    if (saved !== null) input.checked = saved === "1";
    view.set(option, input.checked);
    input.addEventListener("change", () => {
      view.set(option, input.checked);
      localStorage.setItem(`vigil.camera.${option}`, input.checked ? "1" : "0");
    });
  }
  const { items } = await api("/api/cameras");
  const found = items.find((c) => c.id === id);
  if (!found) {
    box.replaceChildren(el("div", { class: "empty", text: `No camera ${id}: see the live page for the cameras there are.` }));
    return;
  }
  renderCamera(found);
  if (found.latest) view.show(await api(`/api/cameras/${encodeURIComponent(id)}/latest.json`));
  stream(`cameras=${encodeURIComponent(id)}`, {
    frame: (f) => f.camera === id && view.show(f),
    camera: (c) => c.id === id && renderCamera(c),
    alert: (a) => { if (a.camera === id) { alerts.set(a.id, a); renderAlerts(); } },
  });
  const page = await api(`/api/alerts?camera=${encodeURIComponent(id)}&limit=12`);
  for (const a of page.items) if (!alerts.has(a.id)) alerts.set(a.id, a);
  renderAlerts();
  setInterval(() => camera && renderCamera(camera), 1000);
}

main();
