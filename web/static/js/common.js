// Shared by every console page: the API client (session cookie + CSRF header), the page header,
// the event stream, DOM and time helpers. Plain ES module, no build step, no network but this server.

const NS = 1e9;
let meCache = null;

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

export function toLogin() {
  const next = location.pathname + location.search;
  location.assign(`/login?next=${encodeURIComponent(next)}`);
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** JSON from the API; state changes carry the session's CSRF token; 401 sends the browser to /login. */
export async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") {
    headers["Content-Type"] = "application/json";
    headers["X-CSRF-Token"] = (await me()).csrf_token || "";
  }
  const response = await fetch(path, {
    method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401 && path !== "/api/login") {
    toLogin();
    throw new ApiError(401, "the session ended; log in again");
  }
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, (data && data.error) || `HTTP ${response.status}`);
  return data;
}

export async function me() {
  if (!meCache) {
    meCache = fetch("/api/me", { credentials: "same-origin" }).then(async (r) => {
      if (r.status === 401) {
        toLogin();
        throw new ApiError(401, "not logged in");
      }
      return r.json();
    });
  }
  return meCache;
}

const PAGES = [["/", "Live"], ["/review", "Review"], ["/system", "System"]];

/** The header every page but /login has: brand, navigation, who is logged in, log out. */
export async function header(current) {
  const nav = el("nav", { "aria-label": "Pages" },
    PAGES.map(([href, name]) => el("a", { href, "aria-current": name === current ? "page" : null, text: name })));
  const who = el("span", { class: "who" });
  const top = el("header", { class: "top" },
    el("a", { class: "skip", href: "#main", text: "Skip to content" }),
    el("a", { class: "brand", href: "/", text: "vigil" }), nav, who);
  document.body.prepend(top);
  const user = await me();
  const out = el("button", { type: "button", text: "Log out", onclick: async () => {
    await api("/api/logout", { method: "POST" }).catch(() => null);
    location.assign("/login");
  } });
  who.append(el("span", { text: `${user.name} · ${user.role}` }), out);
  return user;
}

/**
 * The server-sent event stream (/api/events). `handlers` maps event names to functions of the data.
 * EventSource reconnects by itself (the stream sends `retry: 2000`); a refused stream (the session
 * ended) is closed for good, and then /api/me decides whether to send the browser to /login.
 */
export function stream(query, handlers) {
  let source = null;
  let closed = false;
  const open = () => {
    source = new EventSource(`/api/events${query ? `?${query}` : ""}`);
    for (const [name, handler] of Object.entries(handlers)) {
      // `open`: the server has subscribed this client (it does so before the first byte), on every (re)connect.
      if (name === "open") source.addEventListener("open", () => handler());
      else source.addEventListener(name, (event) => handler(JSON.parse(event.data)));
    }
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED && !closed) {
        fetch("/api/me", { credentials: "same-origin" }).then((r) => {
          if (r.status === 401) toLogin();
          else setTimeout(open, 2000);
        }).catch(() => setTimeout(open, 5000));
      }
    };
  };
  open();
  return { close() { closed = true; if (source) source.close(); } };
}

// ---------------------------------------------------------------- time and numbers

export function since(ns) {
  if (!ns) return "";
  return span((Date.now() * 1e6 - ns) / NS);
}

export function span(seconds) {
  const s = Math.max(0, seconds);
  if (s < 60) return `${Math.floor(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

/** A duration for people: tenths below 10 s (a 0.3 s alert is not "0 s"), then s, min and s, h. */
export function duration(seconds) {
  const s = Math.max(0, seconds);
  if (s < 10) return `${(Math.floor(s * 10) / 10).toFixed(1)} s`;
  if (s < 60) return `${Math.floor(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
  return span(s);
}

/**
 * How long an alert lasts. Ended: `duration_s`, its end minus its start (the end is the object's
 * last sighting in the rule's zone). Active: now minus its start, growing; never less than its
 * last sighting minus its start (`duration_s` of the newest event), whatever the browser's clock.
 */
export function alertSeconds(a, nowMs = Date.now()) {
  if (a.state !== "active") return a.duration_s;
  return Math.max(a.duration_s, (nowMs * 1e6 - a.started_ns) / NS);
}

export function alertDuration(a) {
  return a.state === "active" ? `active · ${duration(alertSeconds(a))}` : duration(a.duration_s);
}

let ticking = 0;

/** A text node's element showing the alert's duration; an active alert's keeps growing each second. */
export function durationNode(a, attrs = {}) {
  const node = el("span", { ...attrs, "data-duration": "", text: alertDuration(a) });
  if (a.state === "active") {
    node.dataset.activeSince = String(a.started_ns);
    node.dataset.seenS = String(a.duration_s);
    if (!ticking) {
      ticking = setInterval(() => {
        for (const n of document.querySelectorAll("[data-active-since]")) {
          n.textContent = alertDuration({ state: "active", started_ns: Number(n.dataset.activeSince),
            duration_s: Number(n.dataset.seenS) });
        }
      }, 1000);
    }
  }
  return node;
}

export function clock(ns) {
  const d = new Date(ns / 1e6);
  const today = new Date();
  const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  if (d.toDateString() === today.toDateString()) return time;
  return `${d.toLocaleDateString([], { month: "short", day: "numeric" })} ${time}`;
}

export function num(value, digits = 1) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

// ---------------------------------------------------------------- measurements the tests and bench read

/** Frames-on-screen figures, in the page: capture time → the frame in which it is painted. */
export const stats = (window.vigilStats = window.vigilStats || { latencyMs: [], eventMs: [], firstFrameMs: null, frames: 0 });

function keep(list, value) {
  if (list.length >= 5000) list.shift();
  list.push(value);
}

/** A frame's event reached the page: capture → event, the part of the latency that is not drawing. */
export function arrived(captureNs) {
  keep(stats.eventMs, performance.timeOrigin + performance.now() - captureNs / 1e6);
}

export function painted(captureNs) {
  requestAnimationFrame(() => {
    const now = performance.timeOrigin + performance.now();
    stats.frames += 1;
    if (stats.firstFrameMs === null) stats.firstFrameMs = performance.now();
    keep(stats.latencyMs, now - captureNs / 1e6);
  });
}

export function cameraPath(prefix) {
  return decodeURIComponent(location.pathname.slice(prefix.length).replace(/\/+$/, ""));
}
