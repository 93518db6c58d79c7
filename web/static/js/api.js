// API: the endpoints of GET /api/openapi.json as a readable list (method, path, what it does, its
// query/path parameters, body fields and answers). Local only: no Swagger UI, nothing off this host.

import { api, el, header } from "./common.js";

const out = document.getElementById("out");

function refName(schema) {
  return schema && schema.$ref ? schema.$ref.split("/").pop() : null;
}

function typeOf(schema, doc) {
  if (!schema) return "";
  const ref = refName(schema);
  if (ref) return ref;
  if (schema.anyOf) return schema.anyOf.map((s) => typeOf(s, doc)).join(" | ");
  if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(" | ");
  if (schema.const !== undefined) return JSON.stringify(schema.const);
  if (schema.type === "array") return `${typeOf(schema.items, doc) || "any"}[]`;
  return schema.type || "any";
}

function fields(schema, doc) {
  const ref = refName(schema);
  const target = ref ? (doc.components?.schemas || {})[ref] : schema;
  if (!target || !target.properties) return [];
  const required = new Set(target.required || []);
  return Object.entries(target.properties).map(([name, s]) =>
    el("li", {}, el("code", { text: name }), ` ${typeOf(s, doc)}${required.has(name) ? " (required)" : ""}`));
}

function operation(method, path, op, doc) {
  const params = (op.parameters || []).map((p) => el("li", {}, el("code", { text: p.name }),
    ` ${p.in} · ${typeOf(p.schema, doc)}${p.required ? " (required)" : ""}` +
    `${p.schema && p.schema.default !== undefined ? ` · default ${JSON.stringify(p.schema.default)}` : ""}`));
  const body = op.requestBody ? fields(op.requestBody.content?.["application/json"]?.schema, doc) : [];
  const answers = Object.entries(op.responses || {}).map(([code, r]) => `${code} ${r.description || ""}`.trim());
  const id = `${method}-${path}`.replace(/[^A-Za-z0-9]+/g, "-");
  return el("article", { class: "endpoint", id },
    el("h3", {}, el("span", { class: `method ${method}`, text: method.toUpperCase() }), " ", el("code", { text: path })),
    op.summary ? el("p", { text: op.summary }) : null,
    op.description && op.description !== op.summary ? el("p", { class: "muted", text: op.description }) : null,
    params.length ? el("div", {}, el("b", { text: "Parameters" }), el("ul", {}, params)) : null,
    body.length ? el("div", {}, el("b", { text: "JSON body" }), el("ul", {}, body)) : null,
    answers.length ? el("p", { class: "muted", text: `Answers: ${answers.join(" · ")}` }) : null);
}

function render(doc) {
  const groups = new Map();
  for (const [path, item] of Object.entries(doc.paths || {})) {
    for (const [method, op] of Object.entries(item)) {
      const tag = (op.tags && op.tags[0]) || "other";
      if (!groups.has(tag)) groups.set(tag, []);
      groups.get(tag).push(operation(method, path, op, doc));
    }
  }
  out.replaceChildren(
    el("p", { class: "muted", text: `${doc.info?.title || "API"} ${doc.info?.version || ""}` }),
    ...[...groups].map(([tag, ops]) => el("section", {}, el("h2", { text: tag }), ops)));
  document.body.dataset.endpoints = String(out.querySelectorAll(".endpoint").length);
}

header("API").then(async () => {
  try {
    render(await api("/api/openapi.json"));
  } catch (err) {
    document.getElementById("problem").textContent = `Could not read the OpenAPI document: ${err.message}`;
  }
});
