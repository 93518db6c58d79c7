// A camera's live view: the newest frame as an <img> with a <canvas> over it on which boxes,
// labels, zones and motion are drawn client-side from `frame` events. One image load at a time per
// view: a frame that arrives while one loads replaces the waiting one, so a slow link or tab
// never queues frames up (the newest is the one worth drawing).

import { arrived, el, painted } from "./common.js";

const PALETTE = ["#5fb0ff", "#41c98b", "#f0b54a", "#ff6f6f", "#c38bff", "#4fd1d9", "#ff9f5a", "#a3d65c"];

export function colorFor(classId) {
  return PALETTE[Math.abs(classId | 0) % PALETTE.length];
}

export function anchorOf(box, anchor = "bottom_center") {
  const [x1, y1, x2, y2] = box;
  return anchor === "center" ? [(x1 + x2) / 2, (y1 + y2) / 2] : [(x1 + x2) / 2, y2];
}

/** Ray casting, as vigil.geometry.points_in_polygon does for the aggregator. */
export function inside([x, y], polygon) {
  let hit = false;
  for (let i = 0, j = polygon.length - 1; i < polygon.length; j = i++) {
    const [xi, yi] = polygon[i];
    const [xj, yj] = polygon[j];
    if ((yi > y) !== (yj > y) && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) hit = !hit;
  }
  return hit;
}

export function drawPolygon(ctx, points, { color = "#4fd1d9", name = "", fill = "rgba(79,209,217,.12)", scale = 1 } = {}) {
  if (points.length < 2) return;
  ctx.save();
  ctx.beginPath();
  points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
  ctx.closePath();
  ctx.fillStyle = fill;
  ctx.fill();
  ctx.lineWidth = 2 * scale;
  ctx.strokeStyle = color;
  ctx.setLineDash([6 * scale, 4 * scale]);
  ctx.stroke();
  let label = null;
  if (name) {
    ctx.setLineDash([]);
    ctx.font = `${Math.round(13 * scale)}px system-ui, sans-serif`;
    ctx.fillStyle = color;
    const [x, y] = points[0];
    ctx.fillText(name, x + 4 * scale, y + 16 * scale);
    label = { x: x + 4 * scale, y: y + 3 * scale, w: ctx.measureText(name).width, h: 16 * scale };
  }
  ctx.restore();
  return label; // where the name went, so box labels keep off it
}

const overlaps = (a, b) => a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;

/**
 * Boxes with "class score%" labels. Labels never cover one another nor run off the frame: the most
 * confident objects are labelled first, each above its box, else inside its top, below it or inside
 * its bottom edge, moved in from the frame's sides; one with no free place is left out (its box is
 * still drawn). `taken`: rectangles already holding text (zone names). Returns the labels drawn.
 */
export function drawBoxes(ctx, detections, scale = 1, taken = []) {
  ctx.save();
  ctx.lineWidth = 2 * scale;
  ctx.font = `600 ${Math.round(13 * scale)}px system-ui, sans-serif`;
  ctx.textBaseline = "top";
  for (const d of detections) {
    const [x1, y1, x2, y2] = d.box;
    ctx.strokeStyle = colorFor(d.class_id);
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
  }
  const placed = [...taken];
  const labels = [];
  const width = ctx.canvas.width;
  const height = ctx.canvas.height;
  const h = 18 * scale;
  for (const d of [...detections].sort((a, b) => b.score - a.score)) {
    const [x1, y1, x2, y2] = d.box;
    const text = `${d.class_name} ${Math.round(d.score * 100)}%`;
    const w = ctx.measureText(text).width + 8 * scale;
    const x = Math.max(0, Math.min(x1 - scale, width - w));
    const spot = [y1 - h, y1, y2, y2 - h]
      .map((y) => ({ x, y: Math.max(0, Math.min(y, height - h)), w, h }))
      .find((r) => !placed.some((p) => overlaps(r, p)));
    if (!spot) continue;
    placed.push(spot);
    labels.push({ ...spot, text });
    ctx.fillStyle = colorFor(d.class_id);
    ctx.fillRect(spot.x, spot.y, w, h);
    ctx.fillStyle = "#0b0d10";
    ctx.fillText(text, spot.x + 4 * scale, spot.y + 2 * scale);
  }
  ctx.restore();
  return labels;
}

export function drawMotion(ctx, boxes, scale = 1) {
  ctx.save();
  ctx.strokeStyle = "rgba(240,181,74,.8)";
  ctx.lineWidth = 1.5 * scale;
  ctx.setLineDash([3 * scale, 3 * scale]);
  for (const [x1, y1, x2, y2] of boxes) ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
  ctx.restore();
}

/** Zones of a camera (from /api/cameras) in pixels of a frame of width × height. */
export function zonePixels(zones, width, height) {
  return (zones || []).map((z) => ({
    name: z.name,
    points: z.units === "fraction" ? z.polygon.map(([x, y]) => [x * width, y * height]) : z.polygon,
  }));
}

/**
 * Whether frame `a` should replace `b` on screen: a newer one does; an older one only when it has
 * its detections and `b` has none (the server sends frames without detections only while the
 * detector is behind; once its records meet their frames again, boxes win over a few seconds).
 */
export function better(a, b) {
  if (!b) return true;
  if (a.seq > b.seq) return true;
  return !!a.detected && !b.detected;
}

export class LiveView {
  /**
   * @param {HTMLElement} box  the `.frame` element to fill
   * @param {string} name      the camera, for the image's text alternative
   * @param {object} options   {boxes, zones, motion}: what to draw over the frame
   */
  constructor(box, name, options = { boxes: true, zones: true, motion: false }) {
    this.box = box;
    this.name = name;
    this.options = { ...options };
    this.zones = [];
    this.frame = null; // the frame on screen
    this.waiting = null; // the newest frame not yet loaded
    this.loading = false;
    this.img = el("img", { alt: `Newest frame of ${name}`, decoding: "async" });
    this.canvas = el("canvas", { "aria-hidden": "true" });
    this.empty = el("div", { class: "empty", text: "waiting for a frame…" });
    box.replaceChildren(this.img, this.canvas, this.empty);
    this.onframe = null;
  }

  setZones(zones) {
    this.zones = zones || [];
    this.redraw();
  }

  set(option, on) {
    this.options[option] = on;
    this.redraw();
  }

  /** A `frame` event (or latest.json): shows it when its image has loaded. */
  show(frame) {
    arrived(frame.capture_ns);
    const newest = this.waiting || this.frame;
    if (!better(frame, newest)) return;
    if (this.frame && frame.seq === this.frame.seq) {
      // The frame on screen again, now with its detections: only the overlay changes.
      this.frame = frame;
      this.waiting = null;
      this.redraw();
      return;
    }
    this.waiting = frame;
    if (!this.loading) this.load();
  }

  async load() {
    const frame = this.waiting;
    if (!frame) return;
    this.waiting = null;
    this.loading = true;
    const next = new Image();
    next.alt = this.img.alt;
    next.decoding = "async";
    next.src = frame.image_url;
    try {
      await next.decode();
      // Swap the decoded image in and draw its overlay in the same task: both reach the same paint.
      this.img.replaceWith(next);
      this.img = next;
      this.frame = frame;
      this.empty.hidden = true;
      this.redraw();
      painted(frame.capture_ns);
      if (this.onframe) this.onframe(frame);
    } catch {
      // The frame left the server's memory before we asked (or the image was broken): the next one will do.
    } finally {
      this.loading = false;
      if (this.waiting) this.load();
    }
  }

  redraw() {
    const frame = this.frame;
    if (!frame) return;
    const c = this.canvas;
    if (c.width !== frame.width || c.height !== frame.height) {
      c.width = frame.width;
      c.height = frame.height;
      this.box.style.aspectRatio = `${frame.width} / ${frame.height}`; // no letterbox: canvas pixels map 1:1 to the frame's
    }
    const ctx = c.getContext("2d");
    ctx.clearRect(0, 0, c.width, c.height);
    // Line widths and text in CSS pixels whatever the frame's size: legible in a small tile and a 4K frame alike.
    const shown = this.box.clientWidth || frame.width;
    const scale = Math.max(0.5, frame.width / shown) * (shown < 480 ? 0.8 : 1); // smaller labels in a phone's tile
    const names = [];
    if (this.options.zones) {
      for (const z of zonePixels(this.zones, frame.width, frame.height)) {
        names.push(drawPolygon(ctx, z.points, { name: z.name, scale }));
      }
    }
    if (this.options.motion && frame.motion) drawMotion(ctx, frame.motion, scale);
    const boxes = this.options.boxes ? frame.detections || [] : [];
    const labels = drawBoxes(ctx, boxes, scale, names.filter(Boolean));
    this.box.dataset.boxes = String(boxes.length);
    this.box.dataset.labels = String(labels.length);
    this.box.dataset.seq = String(frame.seq);
    this.box.dataset.detected = String(!!frame.detected);
  }
}
