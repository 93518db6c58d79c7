// Live: a tile per camera with its newest frame, boxes, labels and zones drawn over it, fps, state
// and how long, a pulse while motion or an alert is active. Frames come from the event stream,
// limited to the tiles on screen (the stream is reopened when that set changes).

import { api, el, header, num, since, stream } from "./common.js";
import { LiveView } from "./view.js";

const tiles = new Map(); // camera id -> {node, view, camera}
const grid = document.getElementById("grid");
const visible = new Set();
let events = null;
let wantedKey = "";
let reopen = 0;

function firstFrame(camera) {
  if (!camera.latest || !camera.width) return null;
  return { camera: camera.id, seq: camera.latest.seq, capture_ns: camera.latest.capture_ns, width: camera.width,
    height: camera.height, image_url: camera.latest.image_url, detected: false, detections: [], motion: [] };
}

function tile(camera) {
  let entry = tiles.get(camera.id);
  if (!entry) {
    const frame = el("span", { class: "frame" });
    const pulse = el("span", { class: "pulse", hidden: true, role: "img" });
    const state = el("span", { class: "state" });
    const fps = el("span", { class: "fps" });
    const node = el("article", { class: "tile", "data-camera-id": camera.id },
      el("a", { href: `/cameras/${encodeURIComponent(camera.id)}`, "aria-label": `${camera.id}: open the camera` }, frame),
      el("div", { class: "meta" }, el("strong", { text: camera.id }), state, fps));
    const view = new LiveView(frame, camera.id, { boxes: true, zones: true, motion: false });
    frame.append(pulse); // LiveView filled the box: the pulse goes back on top
    entry = { node, view, camera, state, fps, pulse };
    tiles.set(camera.id, entry);
    grid.append(node);
    observer.observe(node);
    const first = firstFrame(camera);
    if (first) view.show(first);
  }
  entry.camera = camera;
  entry.view.setZones(camera.zones);
  render(entry);
  return entry;
}

function render(entry) {
  const c = entry.camera;
  entry.state.className = `state ${c.state}`;
  entry.state.textContent = `${c.state} · ${since(c.state_since_ns)}`;
  entry.state.title = c.detail || "";
  entry.fps.textContent = `${num(c.fps)} fps`;
  const pulse = c.alert_active ? "alert" : c.motion_active ? "motion" : "";
  entry.pulse.hidden = !pulse;
  entry.pulse.className = `pulse ${pulse}`;
  entry.pulse.setAttribute("aria-label", pulse === "alert" ? "alert active" : pulse === "motion" ? "motion" : "");
  entry.node.dataset.state = c.state;
}

// Frames only for tiles on screen; the stream is reopened (debounced) when that set changes.
const observer = new IntersectionObserver((entries) => {
  for (const e of entries) {
    const id = e.target.dataset.cameraId;
    if (e.isIntersecting) visible.add(id);
    else visible.delete(id);
  }
  clearTimeout(reopen);
  reopen = setTimeout(connect, events ? 300 : 0);
}, { rootMargin: "200px" });

function connect() {
  const key = [...visible].sort().join(",");
  if (events && key === wantedKey) return;
  wantedKey = key;
  if (events) events.close();
  events = stream(key ? `cameras=${encodeURIComponent(key)}` : "frames=0", {
    frame: (f) => tiles.get(f.camera)?.view.show(f),
    camera: (c) => tile(c),
  });
}

async function main() {
  await header("Live");
  const { items } = await api("/api/cameras");
  document.getElementById("count").textContent = items.length ? `${items.length} cameras` : "";
  if (!items.length) {
    grid.replaceWith(el("p", { class: "muted", text: "No camera yet: add one under cameras in the config, or start ingest." }));
  }
  items.forEach(tile);
  if (!items.length) connect();
  setInterval(() => tiles.forEach(render), 1000); // "for 3 min" moves on without asking the server
}

main();
