// Review: alerts newest first as cards, filters in the URL, infinite scroll by cursor, the clip
// next to the snapshot, review single and bulk with Frigate-style keys, new alerts live on top.

import { ApiError, api, clock, durationNode, el, header, stream } from "./common.js";

const PAGE = 48;
const list = document.getElementById("cards");
const more = document.getElementById("more");
const form = document.getElementById("filters");
const status = document.getElementById("status");
const bulk = document.getElementById("bulk");
const player = document.getElementById("player");
const layout = document.getElementById("layout");
const cards = new Map(); // id -> {node, alert}
const selected = new Set();
let cursor = null;
let loading = false;
let generation = 0;
let current = null; // the alert in the player
let user = null;

// ---------------------------------------------------------------- filters <-> URL

const FIELDS = ["camera", "rule", "label", "reviewed", "day"];

function filters() {
  const data = new FormData(form);
  return Object.fromEntries(FIELDS.map((f) => [f, data.get(f) || ""]));
}

function query(f, extra = {}) {
  const q = new URLSearchParams();
  for (const key of ["camera", "rule", "label"]) if (f[key]) q.set(key, f[key]);
  if (f.reviewed === "false" || f.reviewed === "true") q.set("reviewed", f.reviewed);
  if (f.reviewed === "false_positive") { q.set("reviewed", "true"); q.set("verdict", "false_positive"); }
  if (f.day) {
    const [y, m, d] = f.day.split("-").map(Number);
    q.set("after", new Date(y, m - 1, d).toISOString()); // the day in this browser's time zone
    q.set("before", new Date(y, m - 1, d + 1).toISOString());
  }
  for (const [k, v] of Object.entries(extra)) q.set(k, v);
  return q;
}

function matches(a, f) {
  if (f.camera && a.camera !== f.camera) return false;
  if (f.rule && a.rule !== f.rule) return false;
  if (f.label && a.label !== f.label) return false;
  if (f.reviewed === "false" && a.reviewed) return false;
  if (f.reviewed === "true" && !a.reviewed) return false;
  if (f.reviewed === "false_positive" && !(a.reviewed && a.verdict === "false_positive")) return false;
  if (f.day) {
    const [y, m, d] = f.day.split("-").map(Number);
    const t = a.started_ns / 1e6;
    if (t < new Date(y, m - 1, d).getTime() || t >= new Date(y, m - 1, d + 1).getTime()) return false;
  }
  return true;
}

function fillSelect(name, values, chosen) {
  const select = form.elements[name];
  const all = new Set(values);
  if (chosen) all.add(chosen);
  select.replaceChildren(el("option", { value: "", text: "all" }),
    ...[...all].sort().map((v) => el("option", { value: v, text: v, selected: v === chosen })));
}

// ---------------------------------------------------------------- cards

function cardText(a) {
  return `${a.label} ${Math.round(a.score * 100)}% on ${a.camera}, ${a.rule}, ${clock(a.started_ns)}`;
}

function card(a) {
  const pick = el("input", { type: "checkbox", class: "pick", "aria-label": `Select: ${cardText(a)}`, tabIndex: -1 });
  pick.addEventListener("click", (e) => { e.stopPropagation(); toggle(a.id); });
  const node = el("li", { class: "card", "data-alert-id": a.id, tabindex: "-1", role: "option" });
  node.addEventListener("click", (e) => {
    if (e.shiftKey || e.ctrlKey || e.metaKey) { toggle(a.id); return; }
    focusCard(node);
    open(cards.get(a.id).alert);
  });
  node.addEventListener("focus", () => node.scrollIntoView({ block: "nearest" }));
  const entry = { node, alert: a, pick };
  fillCard(entry);
  return entry;
}

function fillCard(entry) {
  const a = entry.alert;
  const badges = el("span", { class: "badges" },
    a.state === "active" ? el("span", { class: "badge active", text: "active" }) : null,
    a.reviewed ? el("span", { class: `badge ${a.verdict === "false_positive" ? "fp" : "done"}`,
      text: a.verdict === "false_positive" ? "false positive" : "reviewed" }) : null);
  const img = entry.node.querySelector("img") ||
    el("img", { src: a.snapshot_url, alt: `Snapshot: ${cardText(a)}`, loading: "lazy", width: 320, height: 240 });
  entry.node.replaceChildren(img, entry.pick, badges, el("div", { class: "info" },
    el("b", { text: `${a.label} · ${Math.round(a.score * 100)}%` }),
    el("span", { text: `${a.camera} · ${a.rule}${a.zone ? ` (${a.zone})` : ""}` }),
    el("span", { class: "muted" }, `${clock(a.started_ns)} · `, durationNode(a))));
  entry.node.setAttribute("aria-label", `${cardText(a)}${a.reviewed ? ", reviewed" : ""}`);
  entry.node.setAttribute("aria-selected", selected.has(a.id) ? "true" : "false");
  entry.node.dataset.reviewed = String(a.reviewed);
  entry.node.classList.toggle("selected", selected.has(a.id));
  entry.node.classList.toggle("current", current?.id === a.id);
  entry.pick.checked = selected.has(a.id);
}

function update(a) {
  const entry = cards.get(a.id);
  if (entry) { entry.alert = a; fillCard(entry); }
  if (current?.id === a.id) { current = a; renderPlayer(false); }
}

// Cards are kept in the API's order, newest start first (ties by id), wherever they come from:
// pages by cursor, or the event stream (an alert can be stored after newer ones: cameras and
// detectors lag differently).
const newer = (a, b) => a.started_ns > b.started_ns || (a.started_ns === b.started_ns && a.id > b.id);

function add(a, { live = false } = {}) {
  if (cards.has(a.id)) { update(a); return; }
  const entry = card(a);
  cards.set(a.id, entry);
  let before = null; // the first card older than `a`; pages arrive in order, so look from the end
  for (let node = list.lastElementChild; node && newer(a, cards.get(node.dataset.alertId).alert); node = node.previousElementSibling) {
    before = node;
  }
  list.insertBefore(entry.node, before);
  if (live && !entry.node.previousElementSibling) entry.node.classList.add("fresh");
  if (!list.querySelector('[tabindex="0"]')) entry.node.tabIndex = 0;
}

async function loadMore() {
  if (loading || cursor === undefined) return;
  loading = true;
  const mine = generation;
  more.disabled = true;
  try {
    const page = await api(`/api/alerts?${query(filters(), { limit: PAGE, ...(cursor ? { cursor } : {}) })}`);
    if (mine !== generation) return;
    page.items.forEach((a) => add(a));
    cursor = page.next_cursor === null ? undefined : page.next_cursor;
    status.textContent = cards.size ? `${cards.size}${cursor === undefined ? "" : "+"} alerts` : "No alert matches these filters.";
  } catch (err) {
    if (mine === generation) status.textContent = err.message;
  } finally {
    loading = false;
    more.disabled = false;
    more.hidden = cursor === undefined;
    if (mine === generation && cursor !== undefined && nearEnd()) setTimeout(loadMore, 0);
  }
}

async function refreshTop() {
  const mine = generation;
  try {
    const page = await api(`/api/alerts?${query(filters(), { limit: PAGE })}`);
    if (mine === generation) page.items.forEach((a) => add(a));
  } catch {
    // the next (re)connect or reload asks again
  }
}

function nearEnd() {
  return more.getBoundingClientRect().top < innerHeight + 800;
}

function reset() {
  generation += 1;
  cards.clear();
  selected.clear();
  list.replaceChildren();
  cursor = null;
  loading = false;
  renderBulk();
  const f = filters();
  const q = new URLSearchParams(Object.entries(f).filter(([, v]) => v));
  history.replaceState(null, "", `/review${q.toString() ? `?${q}` : ""}${location.hash}`);
  loadMore();
}

// ---------------------------------------------------------------- selection and keys

function toggle(id, on = !selected.has(id)) {
  if (on) selected.add(id);
  else selected.delete(id);
  const entry = cards.get(id);
  if (entry) fillCard(entry);
  renderBulk();
}

function clearSelection() {
  const ids = [...selected];
  selected.clear();
  ids.forEach((id) => cards.has(id) && fillCard(cards.get(id)));
  renderBulk();
}

function renderBulk() {
  bulk.hidden = selected.size === 0;
  document.getElementById("bulk-count").textContent = `${selected.size} selected`;
}

function focusCard(node) {
  if (!node) return;
  list.querySelectorAll('.card[tabindex="0"]').forEach((n) => (n.tabIndex = -1));
  node.tabIndex = 0;
  node.focus();
}

function columns() {
  const nodes = [...list.children];
  if (nodes.length < 2) return 1;
  const top = nodes[0].offsetTop;
  const n = nodes.findIndex((x) => x.offsetTop !== top);
  return n === -1 ? nodes.length : n;
}

function move(delta) {
  const nodes = [...list.children];
  const at = nodes.indexOf(document.activeElement);
  const next = nodes[Math.max(0, Math.min(nodes.length - 1, at === -1 ? 0 : at + delta))];
  focusCard(next);
  if (next && next === nodes[nodes.length - 1] && cursor !== undefined) loadMore();
}

function focused() {
  const node = document.activeElement?.closest?.(".card");
  return node && cards.get(node.dataset.alertId);
}

async function review(ids, reviewed, verdict) {
  if (!ids.length) return;
  if (user?.role !== "admin") { status.textContent = `${user?.name || "this user"} is a viewer; only admins may change review state`; return; }
  try {
    if (ids.length === 1) update(await api(`/api/alerts/${encodeURIComponent(ids[0])}/review`, { method: "POST", body: { reviewed, verdict } }));
    else {
      for (let i = 0; i < ids.length; i += 500) {
        await api("/api/alerts/review", { method: "POST", body: { ids: ids.slice(i, i + 500), reviewed, verdict } });
      }
      for (const id of ids) {
        const entry = cards.get(id);
        if (entry) update({ ...entry.alert, reviewed, verdict, reviewed_by: user.name });
      }
    }
    status.textContent = `${ids.length} alert${ids.length > 1 ? "s" : ""} ${reviewed ? (verdict === "false_positive" ? "marked false positive" : "marked reviewed") : "marked not reviewed"}`;
  } catch (err) {
    status.textContent = err instanceof ApiError ? err.message : String(err);
  }
}

function targets() {
  if (selected.size) return [...selected];
  const f = focused() || (current && cards.get(current.id));
  return f ? [f.alert.id] : [];
}

function act(kind) {
  const ids = targets();
  const done = () => clearSelection();
  if (kind === "reviewed") review(ids, true, null).then(done);
  else if (kind === "false_positive") review(ids, true, "false_positive").then(done);
  else if (kind === "true_positive") review(ids, true, "true_positive").then(done);
  else if (kind === "unreview") review(ids, false, null).then(done);
}

document.addEventListener("keydown", (e) => {
  const t = e.target;
  if (t.closest && t.closest("input, select, textarea, video, button, a") && !t.classList.contains("pick")) {
    if (e.key === "Escape" && t.closest("video")) { closePlayer(); e.preventDefault(); }
    return;
  }
  if (e.altKey || e.metaKey) return;
  const key = e.key;
  const onCard = !!focused();
  if (e.ctrlKey) {
    if (key === "a" && onCard) { [...cards.keys()].forEach((id) => selected.add(id)); [...cards.values()].forEach(fillCard); renderBulk(); e.preventDefault(); }
    return;
  }
  const handled = (() => {
    switch (key) {
      case "ArrowRight": case "j": move(1); return true;
      case "ArrowLeft": case "k": move(-1); return true;
      case "ArrowDown": move(columns()); return true;
      case "ArrowUp": move(-columns()); return true;
      case "Home": focusCard(list.firstElementChild); return true;
      case "End": focusCard(list.lastElementChild); return true;
      case " ": case "x": if (onCard) { toggle(focused().alert.id); return true; } return false;
      case "Enter": if (onCard) { open(focused().alert); return true; } return false;
      case "a": [...cards.keys()].forEach((id) => selected.add(id)); [...cards.values()].forEach(fillCard); renderBulk(); return true;
      case "r": case "R": act("reviewed"); return true;
      case "f": case "F": act("false_positive"); return true;
      case "t": case "T": act("true_positive"); return true;
      case "u": case "U": act("unreview"); return true;
      case "Escape": if (selected.size) clearSelection(); else closePlayer(); return true;
      default: return false;
    }
  })();
  if (handled) e.preventDefault();
});

// ---------------------------------------------------------------- the player

function open(a) {
  current = a;
  [...cards.values()].forEach((entry) => entry.node.classList.toggle("current", entry.alert.id === a.id));
  renderPlayer(true);
  history.replaceState(null, "", `${location.pathname}${location.search}#${encodeURIComponent(a.id)}`);
}

function closePlayer() {
  if (!current) return;
  const id = current.id;
  current = null;
  player.hidden = true;
  player.replaceChildren();
  layout.classList.remove("open");
  history.replaceState(null, "", `${location.pathname}${location.search}`);
  focusCard(cards.get(id)?.node);
}

let retry = 0;

function renderPlayer(fresh) {
  const a = current;
  if (!a) return;
  layout.classList.add("open");
  player.hidden = false;
  const admin = user?.role === "admin";
  const button = (text, kind, key, cls = "") => el("button", { type: "button", class: cls, disabled: !admin,
    title: admin ? `${text} (${key})` : "viewers cannot change review state",
    onclick: () => review([a.id], kind !== "unreview", kind === "reviewed" || kind === "unreview" ? null : kind) }, `${text} `, el("kbd", { text: key }));
  const info = el("dl", {},
    el("dt", { text: "Camera" }), el("dd", {}, el("a", { href: `/cameras/${encodeURIComponent(a.camera)}`, text: a.camera })),
    el("dt", { text: "Rule" }), el("dd", { text: `${a.rule}${a.zone ? ` · zone ${a.zone}` : ""}` }),
    el("dt", { text: "Object" }), el("dd", { text: `${a.label} · best score ${a.score.toFixed(2)} · track ${a.track_id}` }),
    el("dt", { text: "Started" }), el("dd", { text: `${new Date(a.started_ns / 1e6).toLocaleString()}` }),
    el("dt", { text: "Duration" }), el("dd", {}, durationNode(a, {
      title: a.state === "active" ? "from its start until now" : "from its start to the object's last sighting in the zone" })),
    el("dt", { text: a.state === "active" ? "Last seen" : "Ended" }), el("dd", { text: clock(a.ended_ns || a.last_seen_ns) }),
    el("dt", { text: "Review" }), el("dd", { "data-review": "", text: a.reviewed ? `${a.verdict ? a.verdict.replace("_", " ") : "reviewed"} by ${a.reviewed_by || "?"}` : "not reviewed" }));
  const actions = el("div", { class: "row" },
    a.reviewed ? button("Not reviewed", "unreview", "U") : button("Mark reviewed", "reviewed", "R", "primary"),
    button("True positive", "true_positive", "T"), button("False positive", "false_positive", "F", "danger"));
  if (!fresh && player.querySelector("video")) {
    player.querySelector("dl").replaceWith(info);
    player.querySelector(".row").replaceWith(actions);
    return;
  }
  clearTimeout(retry);
  const note = el("p", { class: "muted", "aria-live": "polite" });
  const video = el("video", { controls: true, playsInline: true, muted: true, autoplay: true, preload: "auto",
    "aria-label": `Clip of ${cardText(a)}` });
  video.addEventListener("error", () => explain(a, video, note));
  video.src = a.clip_url;
  player.replaceChildren(
    el("div", { class: "row" }, el("h2", { text: `${a.label} on ${a.camera}` }),
      el("button", { type: "button", style: "margin-left:auto", onclick: closePlayer, "aria-label": "Close the clip" }, "Close ", el("kbd", { text: "Esc" }))),
    el("div", { class: "media" }, video, el("img", { src: a.snapshot_url, alt: `Snapshot: ${cardText(a)}` })),
    note, info, actions);
}

/** A clip that did not play: ask the server why (202 still recording, 410 aged out) in words. */
async function explain(a, video, note) {
  const response = await fetch(a.clip_url, { headers: { Range: "bytes=0-0" }, credentials: "same-origin" }).catch(() => null);
  if (current?.id !== a.id) return;
  if (response && response.status === 202) {
    const wait = Number(response.headers.get("Retry-After") || 2);
    note.textContent = `The clip is still being recorded; trying again in ${wait} s.`;
    retry = setTimeout(() => { if (current?.id === a.id) { video.src = `${a.clip_url}?t=${Date.now()}`; } }, wait * 1000);
    return;
  }
  const data = response ? await response.json().catch(() => null) : null;
  note.textContent = data?.error ? `No clip: ${data.error}` : "The clip could not be played.";
}

// ---------------------------------------------------------------- start

async function main() {
  // The first page of cards is asked for at once; who is logged in and the filter values follow.
  const who = header("Review").then((u) => (user = u));
  const params = new URLSearchParams(location.search);
  for (const f of FIELDS) if (params.get(f) && form.elements[f].tagName === "INPUT") form.elements[f].value = params.get(f);
  if (params.get("reviewed")) form.elements.reviewed.value = params.get("reviewed");
  for (const name of ["camera", "rule", "label"]) fillSelect(name, [], params.get(name));
  reset();
  // Open at once. Once the server has subscribed us (`open`, also after a reconnect), the first page is asked
  // again: an alert stored after the first request's query but before the subscription is in neither.
  stream("frames=0", {
    open: () => refreshTop(),
    alert: (a) => {
      if (cards.has(a.id)) update(a);
      else if (matches(a, filters())) {
        // Older than every card while more pages remain: the cursor brings it in its place.
        const last = list.lastElementChild && cards.get(list.lastElementChild.dataset.alertId);
        if (cursor === undefined || !last || newer(a, last.alert)) add(a, { live: true });
      }
    },
  });
  api("/api/alerts/facets").then((facets) => {
    for (const [name, values] of [["camera", facets.cameras], ["rule", facets.rules], ["label", facets.labels]]) {
      fillSelect(name, values, form.elements[name].value);
    }
  });
  await who;
  form.addEventListener("change", reset);
  form.addEventListener("submit", (e) => { e.preventDefault(); reset(); });
  document.getElementById("clear").addEventListener("click", () => { form.reset(); reset(); });
  more.addEventListener("click", loadMore);
  new IntersectionObserver((e) => e[0].isIntersecting && loadMore(), { rootMargin: "800px" }).observe(more);
  for (const [id, kind] of [["bulk-reviewed", "reviewed"], ["bulk-fp", "false_positive"], ["bulk-unreview", "unreview"]]) {
    document.getElementById(id).addEventListener("click", () => act(kind));
  }
  document.getElementById("bulk-clear").addEventListener("click", clearSelection);
  for (const b of bulk.querySelectorAll("button[data-admin]")) b.disabled = user.role !== "admin";
  if (location.hash.length > 1) {
    const id = decodeURIComponent(location.hash.slice(1));
    api(`/api/alerts/${encodeURIComponent(id)}`).then(open).catch(() => null);
  }
}

main();
