// Zones: draw a polygon on a camera's current frame (click to add points, drag to move them,
// right-click to remove one; or by keyboard, or by typing the points), name it, and get the YAML
// to paste into the config: a zone, an object mask or a motion mask, in fraction units. Shows
// which of the current detections' anchors fall inside; refuses invalid polygons with a reason.

import { api, cameraPath, el, header, stream } from "./common.js";
import { LiveView, anchorOf, drawPolygon, inside } from "./view.js";

const id = cameraPath("/zones/");
const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const box = document.getElementById("view");
const view = new LiveView(box, id, { boxes: true, zones: true, motion: false });
const editor = el("canvas", { tabindex: "0", role: "application",
  "aria-label": "Polygon editor: click to add a point, drag a point to move it, right-click a point to remove it. " +
    "Keys: arrows move the cursor (Shift: faster), Enter adds a point there, Backspace removes the last point." });
box.append(editor);
const form = document.getElementById("form");
const pointsText = form.elements.points;
const yaml = document.getElementById("yaml");
const reason = document.getElementById("reason");
const insideList = document.getElementById("inside");
let points = []; // [x, y] fractions of the frame
let cursor = null; // keyboard cursor, fractions
let drag = -1;
let zones = [];
let frozen = false; // keep the frame still while drawing

const round = (v) => Number(Math.min(1, Math.max(0, v)).toFixed(4));

// ---------------------------------------------------------------- geometry checks

function orient(a, b, c) {
  const v = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]);
  return Math.abs(v) < 1e-12 ? 0 : Math.sign(v);
}

function onSegment(a, b, p) {
  return Math.min(a[0], b[0]) <= p[0] && p[0] <= Math.max(a[0], b[0]) && Math.min(a[1], b[1]) <= p[1] && p[1] <= Math.max(a[1], b[1]);
}

function cross(a, b, c, d) {
  const o1 = orient(a, b, c), o2 = orient(a, b, d), o3 = orient(c, d, a), o4 = orient(c, d, b);
  if (o1 !== o2 && o3 !== o4) return true;
  return (o1 === 0 && onSegment(a, b, c)) || (o2 === 0 && onSegment(a, b, d)) ||
    (o3 === 0 && onSegment(c, d, a)) || (o4 === 0 && onSegment(c, d, b));
}

/** Why the polygon cannot be used, or "" when it can (the config's own checks and crossing edges). */
export function problem(pts) {
  const n = pts.length;
  if (n < 3) return `A polygon needs at least 3 points; it has ${n}. Click on the frame to add ${3 - n} more.`;
  if (n > 256) return `A polygon has at most 256 points; it has ${n}.`;
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      if (pts[i][0] === pts[j][0] && pts[i][1] === pts[j][1]) return `Points ${i + 1} and ${j + 1} are the same point; move or remove one.`;
    }
  }
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      if (j === i + 1 || (i === 0 && j === n - 1)) continue; // neighbours share a point
      if (cross(pts[i], pts[(i + 1) % n], pts[j], pts[(j + 1) % n])) {
        return `The polygon crosses itself: edge ${i + 1}–${i + 2} crosses edge ${j + 1}–${((j + 1) % n) + 1}. Drag a point to untangle it.`;
      }
    }
  }
  let area = 0;
  for (let i = 0; i < n; i++) area += pts[i][0] * pts[(i + n - 1) % n][1] - pts[(i + n - 1) % n][0] * pts[i][1];
  if (Math.abs(area) < 1e-9) return "The polygon has no area (its points lie on a line).";
  return "";
}

// ---------------------------------------------------------------- YAML

/** A YAML plain scalar where that reads back as the same string, else a quoted one ("1", "no", "on"). */
function scalar(value) {
  const plain = /^[A-Za-z_][A-Za-z0-9_.-]*$/.test(value) && !/^(y|n|yes|no|true|false|on|off|null)$/i.test(value);
  return plain ? value : JSON.stringify(value);
}

function flow(pts) {
  return `[${pts.map(([x, y]) => `[${x}, ${y}]`).join(", ")}]`;
}

export function snippet(cameraId, kind, zoneName, pts, classes) {
  const polygon = flow(pts);
  const camera = scalar(cameraId);
  const name = scalar(zoneName);
  if (kind === "zone") {
    return `cameras:\n  - id: ${camera}\n    zones:\n      - {name: ${name}, units: fraction, polygon: ${polygon}}\n`;
  }
  if (kind === "object_mask") {
    const cls = classes.length ? `, classes: [${classes.map(scalar).join(", ")}]` : "";
    return `cameras:\n  - id: ${camera}\n    objects:\n      masks:\n        - {name: ${name}, units: fraction, polygon: ${polygon}${cls}}\n`;
  }
  return `cameras:\n  - id: ${camera}\n    motion:\n      masks:\n        - {name: ${name}, units: fraction, polygon: ${polygon}}\n`;
}

// ---------------------------------------------------------------- state -> screen

function frameSize() {
  return view.frame ? [view.frame.width, view.frame.height] : [editor.width || 640, editor.height || 480];
}

function render({ fromText = false } = {}) {
  const [w, h] = frameSize();
  if (editor.width !== w || editor.height !== h) { editor.width = w; editor.height = h; }
  const ctx = editor.getContext("2d");
  ctx.clearRect(0, 0, w, h);
  const scale = Math.max(0.5, w / (editor.clientWidth || w));
  const px = points.map(([x, y]) => [x * w, y * h]);
  const bad = problem(points);
  if (px.length >= 2) {
    drawPolygon(ctx, px, { color: bad ? "#ff6f6f" : "#41c98b", fill: bad ? "rgba(255,111,111,.12)" : "rgba(65,201,139,.18)", scale });
  }
  px.forEach(([x, y], i) => {
    ctx.beginPath();
    ctx.arc(x, y, (i === drag ? 7 : 5) * scale, 0, Math.PI * 2);
    ctx.fillStyle = i === 0 ? "#5fb0ff" : "#e4e7eb";
    ctx.fill();
    ctx.font = `${Math.round(12 * scale)}px system-ui, sans-serif`;
    ctx.fillText(String(i + 1), x + 7 * scale, y - 7 * scale);
  });
  if (cursor && document.activeElement === editor) {
    const [cx, cy] = [cursor[0] * w, cursor[1] * h];
    ctx.strokeStyle = "#f0b54a";
    ctx.lineWidth = 1.5 * scale;
    ctx.beginPath();
    ctx.moveTo(cx - 12 * scale, cy); ctx.lineTo(cx + 12 * scale, cy);
    ctx.moveTo(cx, cy - 12 * scale); ctx.lineTo(cx, cy + 12 * scale);
    ctx.stroke();
  }
  // Anchors of the current detections: which fall inside.
  const anchor = form.elements.anchor.value;
  const dets = view.frame?.detections || [];
  const rows = [];
  for (const d of dets) {
    const [ax, ay] = anchorOf(d.box, anchor);
    const f = [ax / w, ay / h];
    const hit = !bad && inside(f, points);
    ctx.beginPath();
    ctx.arc(ax, ay, 4 * scale, 0, Math.PI * 2);
    ctx.fillStyle = hit ? "#41c98b" : "#98a2ad";
    ctx.fill();
    rows.push(el("li", { class: hit ? "okc" : "muted",
      text: `${d.class_name} ${Math.round(d.score * 100)}% at (${round(f[0])}, ${round(f[1])}): ${hit ? "inside" : "outside"}` }));
  }
  const hits = rows.filter((r) => r.classList.contains("okc")).length;
  document.getElementById("inside-count").textContent = dets.length
    ? `${hits} of ${dets.length} current detections have their ${anchor.replace("_", "-")} anchor inside.`
    : "No detection in the current frame.";
  insideList.replaceChildren(...rows);
  box.dataset.inside = String(hits);

  if (!fromText) pointsText.value = points.map(([x, y]) => `${x}, ${y}`).join("\n");
  const kind = form.elements.kind.value;
  const name = form.elements.name.value.trim();
  const classes = form.elements.classes.value.split(/[\s,]+/).filter(Boolean);
  document.getElementById("classes-field").hidden = kind !== "object_mask";
  let why = bad;
  if (!why && !NAME.test(name)) why = "Give it a name: letters, digits, '_', '.', '-', starting with a letter or digit (at most 64).";
  if (!why && classes.some((c) => !NAME.test(c))) why = `Class names are single words like person, car: ${classes.join(", ")}`;
  reason.textContent = why;
  reason.hidden = !why;
  const taken = kind === "zone" && zones.some((z) => z.name === name);
  document.getElementById("taken").hidden = !taken || !!why;
  yaml.textContent = why ? "" : snippet(id, kind, name, points, classes);
  yaml.hidden = !!why;
  document.getElementById("copy").disabled = !!why;
  box.dataset.valid = String(!why);
}

// ---------------------------------------------------------------- input

function toFraction(event) {
  const r = editor.getBoundingClientRect();
  return [round((event.clientX - r.left) / r.width), round((event.clientY - r.top) / r.height)];
}

function nearest(f) {
  const r = editor.getBoundingClientRect();
  let best = -1, bestD = 14; // CSS pixels
  points.forEach(([x, y], i) => {
    const d = Math.hypot((x - f[0]) * r.width, (y - f[1]) * r.height);
    if (d < bestD) { best = i; bestD = d; }
  });
  return best;
}

editor.addEventListener("pointerdown", (e) => {
  if (e.button !== 0) return;
  const f = toFraction(e);
  drag = nearest(f);
  if (drag === -1) { points.push(f); drag = points.length - 1; }
  editor.setPointerCapture(e.pointerId);
  render();
});
editor.addEventListener("pointermove", (e) => {
  if (drag === -1) return;
  points[drag] = toFraction(e);
  render();
});
const endDrag = () => { if (drag !== -1) { drag = -1; render(); } };
editor.addEventListener("pointerup", endDrag);
editor.addEventListener("pointercancel", endDrag);
editor.addEventListener("contextmenu", (e) => {
  const i = nearest(toFraction(e));
  if (i !== -1) { e.preventDefault(); points.splice(i, 1); render(); }
});
editor.addEventListener("focus", () => { cursor = cursor || [0.5, 0.5]; render(); });
editor.addEventListener("blur", () => render());
editor.addEventListener("keydown", (e) => {
  const step = e.shiftKey ? 0.05 : 0.01;
  const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
  if (moves[e.key]) {
    cursor = [round(cursor[0] + moves[e.key][0]), round(cursor[1] + moves[e.key][1])];
  } else if (e.key === "Enter" || e.key === " ") {
    points.push([...cursor]);
  } else if (e.key === "Backspace" || e.key === "Delete") {
    points.pop();
  } else return;
  e.preventDefault();
  render();
});

pointsText.addEventListener("input", () => {
  const parsed = pointsText.value.split("\n").map((line) => line.split(/[\s,;]+/).filter(Boolean).map(Number))
    .filter((p) => p.length === 2 && p.every(Number.isFinite));
  points = parsed.map(([x, y]) => [round(x), round(y)]);
  render({ fromText: true });
});
form.addEventListener("input", (e) => { if (e.target !== pointsText) render(); });
form.addEventListener("submit", (e) => e.preventDefault());
document.getElementById("undo").addEventListener("click", () => { points.pop(); render(); });
document.getElementById("clear").addEventListener("click", () => { points = []; render(); });
document.getElementById("copy").addEventListener("click", async () => {
  const done = document.getElementById("copied");
  try {
    await navigator.clipboard.writeText(yaml.textContent);
    done.textContent = "Copied.";
  } catch {
    getSelection().selectAllChildren(yaml); // no clipboard (plain http): selected, for Ctrl+C
    done.textContent = "Selected: press Ctrl+C to copy.";
  }
});
document.getElementById("freeze").addEventListener("change", (e) => { frozen = e.target.checked; });

async function main() {
  document.title = `vigil · Zones · ${id}`;
  document.getElementById("name").textContent = `Zones and masks · ${id}`;
  document.getElementById("back").href = `/cameras/${encodeURIComponent(id)}`;
  await header("Live");
  const { items } = await api("/api/cameras");
  const camera = items.find((c) => c.id === id);
  if (!camera) {
    reason.hidden = false;
    reason.textContent = `No camera ${id}; pick one on the live page.`;
    return;
  }
  zones = camera.zones;
  view.setZones(zones);
  const existing = document.getElementById("existing");
  existing.replaceChildren(...zones.map((z) => el("li", {}, el("button", { type: "button", text: `Edit a copy of ${z.name}`,
    onclick: () => {
      if (z.units !== "fraction") {
        const [w, h] = frameSize();
        points = z.polygon.map(([x, y]) => [round(x / w), round(y / h)]);
      } else points = z.polygon.map(([x, y]) => [round(x), round(y)]);
      form.elements.name.value = z.name;
      form.elements.kind.value = "zone";
      render();
    } }))));
  document.getElementById("no-zones").hidden = zones.length > 0;
  view.onframe = () => render();
  if (camera.latest) view.show(await api(`/api/cameras/${encodeURIComponent(id)}/latest.json`));
  stream(`cameras=${encodeURIComponent(id)}`, { frame: (f) => !frozen && f.camera === id && view.show(f) });
  render();
}

main();
