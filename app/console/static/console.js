// Tailor console: plain DOM, no framework. Server text always goes through textContent.
"use strict";

const state = { key: null, models: [], domains: [], history: [], controller: null };
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined) node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return node;
}

function toast(message, kind = "error") {
  const t = $("toast");
  t.textContent = message;
  t.className = kind;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.hidden = true), 6000);
}

// -- API ---------------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (state.key) headers.set("Authorization", `Bearer ${state.key}`);
  if (options.json !== undefined) {
    headers.set("Content-Type", "application/json");
    options = { ...options, body: JSON.stringify(options.json) };
  }
  const resp = await fetch(path, { ...options, headers });
  if (resp.status === 401) {
    askKey();
    throw new ApiError(401, await resp.json().catch(() => null));
  }
  if (options.raw) {
    if (!resp.ok) throw new ApiError(resp.status, await resp.json().catch(() => null));
    return resp;
  }
  const body = resp.status === 204 ? null : await resp.json().catch(() => null);
  if (!resp.ok) throw new ApiError(resp.status, body);
  return body;
}

function askKey() {
  const d = $("key-dialog");
  if (!d.open) d.showModal();
}

function setupKey() {
  $("key-button").addEventListener("click", askKey);
  $("key-form").addEventListener("submit", (e) => e.preventDefault());
  $("key-save").addEventListener("click", (e) => {
    e.preventDefault();
    state.key = $("key-input").value.trim() || null;
    $("key-input").value = "";
    $("key-dialog").close();
    $("key-button").textContent = state.key ? "API key ✓" : "API key";
    refreshAll();
  });
}

// -- models, domains, health ---------------------------------------------------------------------
async function loadModels() {
  const picked = $("model").value;
  const list = await api("/v1/models");
  state.models = list.data.filter((m) => m.kind !== "embedding");
  const select = $("model");
  select.replaceChildren();
  const groups = {
    domain: "Domains",
    base: "Base model",
    gate: "Gate (picks the domain)",
    adapter: "Adapters",
    soft_prompt: "Soft prompts",
  };
  for (const [kind, label] of Object.entries(groups)) {
    const items = state.models.filter((m) => m.kind === kind);
    if (!items.length) continue;
    const g = el("optgroup", { label });
    for (const m of items) g.append(el("option", { value: m.id }, m.id));
    select.append(g);
  }
  if (picked && state.models.some((m) => m.id === picked)) select.value = picked;
}

async function loadDomains() {
  const list = await api("/v1/domains");
  state.domains = list.data.map((d) => d.name);
  for (const id of ["doc-domain", "profile-domain"]) {
    const select = $(id);
    const picked = select.value;
    select.replaceChildren(...state.domains.map((n) => el("option", { value: n }, n)));
    if (picked && state.domains.includes(picked)) select.value = picked;
  }
}

async function pollHealth() {
  const pill = $("health");
  try {
    const resp = await fetch("/health");
    const body = await resp.json();
    pill.textContent = body.status === "ready" ? `ready · ${body.max_model_len} tokens` : body.status;
    pill.className = `pill ${body.status === "ready" ? "ok" : "warn"}`;
    pill.title = body.reason || body.model || "";
  } catch {
    pill.textContent = "offline";
    pill.className = "pill bad";
  }
}

// -- chat ----------------------------------------------------------------------------------------
function addMessage(role, text) {
  const box = $("messages");
  box.querySelector(".hint")?.remove();
  const body = el("div", { class: "body" }, text);
  const msg = el("div", { class: `msg ${role}` }, el("div", { class: "who" }, role === "user" ? "You" : $("model").value), body);
  box.append(msg);
  box.scrollTop = box.scrollHeight;
  return msg;
}

function showPassage(src) {
  $("passage").hidden = false;
  $("passage-title").textContent = `[${src.index}] ${src.title || src.filename || src.document_id}`;
  const where = Object.entries(src.location || {}).map(([k, v]) => `${k} ${v}`).join(", ");
  $("passage-meta").textContent = [src.document_id, where, `score ${Number(src.score).toFixed(3)}`].filter(Boolean).join(" · ");
  $("passage-text").textContent = src.text;
}

function renderSources(msg, sources) {
  if (!sources || !sources.length) return;
  const list = el("div", { class: "sources" }, el("span", { class: "muted" }, "Sources "));
  for (const s of sources) {
    const label = `[${s.index}] ${s.title || s.filename || s.document_id}`;
    list.append(el("button", { type: "button", class: "source", title: s.text.slice(0, 200), onclick: () => showPassage(s) }, label));
  }
  msg.append(list);
}

async function* sseEvents(resp) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of block.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  }
}

async function send(e) {
  e.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || state.controller) return;
  $("prompt").value = "";
  addMessage("user", text);
  state.history.push({ role: "user", content: text });
  const msg = addMessage("assistant", "");
  msg.classList.add("streaming");
  const body = msg.querySelector(".body");
  state.controller = new AbortController();
  $("send").disabled = true;
  $("stop").hidden = false;
  let answer = "";
  try {
    const resp = await api("/v1/chat/completions", {
      method: "POST",
      raw: true,
      signal: state.controller.signal,
      json: { model: $("model").value, messages: state.history, stream: true, stream_options: { include_usage: true } },
    });
    for await (const chunk of sseEvents(resp)) {
      if (chunk.error) throw new ApiError(500, chunk);
      for (const c of chunk.choices || []) {
        if (c.delta?.content) {
          answer += c.delta.content;
          body.textContent = answer;
          $("messages").scrollTop = $("messages").scrollHeight;
        }
      }
      if (chunk.sources) renderSources(msg, chunk.sources);
      if (chunk.usage) msg.dataset.usage = `${chunk.usage.prompt_tokens} + ${chunk.usage.completion_tokens} tokens`;
    }
    state.history.push({ role: "assistant", content: answer });
  } catch (err) {
    if (err.name !== "AbortError") toast(err.message);
    state.history.pop();
  } finally {
    msg.classList.remove("streaming");
    msg.classList.add("done");
    if (msg.dataset.usage) msg.append(el("div", { class: "muted usage" }, msg.dataset.usage));
    state.controller = null;
    $("send").disabled = false;
    $("stop").hidden = true;
  }
}

function setupChat() {
  $("chat-form").addEventListener("submit", send);
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) send(e);
  });
  $("stop").addEventListener("click", () => state.controller?.abort());
  $("clear").addEventListener("click", () => {
    state.history = [];
    $("messages").replaceChildren();
    $("passage").hidden = true;
  });
  $("passage-close").addEventListener("click", () => ($("passage").hidden = true));
  $("model").addEventListener("change", () => {
    state.history = [];
    const name = $("model").value;
    if (state.domains.includes(name)) {
      $("doc-domain").value = name;
      $("profile-domain").value = name;
    }
  });
}

// -- documents -----------------------------------------------------------------------------------
function docDomain() {
  return $("new-domain").value.trim() || $("doc-domain").value;
}

async function loadDocuments() {
  const domain = $("doc-domain").value;
  const tbody = $("doc-table").querySelector("tbody");
  if (!domain) return tbody.replaceChildren();
  let list;
  try {
    list = await api(`/v1/domains/${encodeURIComponent(domain)}/documents?limit=200`);
  } catch (err) {
    if (err.status === 404) {
      $("doc-count").textContent = "(none yet)";
      return tbody.replaceChildren();
    }
    throw err;
  }
  $("doc-count").textContent = `(${list.total})`;
  tbody.replaceChildren(
    ...list.data.map((d) =>
      el("tr", {},
        el("td", { class: "mono" }, d.id), el("td", {}, d.title || ""), el("td", {}, d.content_type || ""),
        el("td", {}, d.language || ""), el("td", {}, String(d.chunk_count)), el("td", {}, d.status),
        el("td", {}, el("button", { type: "button", class: "ghost danger", onclick: () => deleteDocument(domain, d.id) }, "Delete")),
      ),
    ),
  );
}

async function deleteDocument(domain, id) {
  if (!confirm(`Delete ${id} from ${domain}?`)) return;
  try {
    await api(`/v1/domains/${encodeURIComponent(domain)}/documents/${id.split("/").map(encodeURIComponent).join("/")}`, { method: "DELETE" });
    toast(`Deleted ${id}`, "ok");
    await loadDocuments();
  } catch (err) {
    toast(err.message);
  }
}

async function upload(e) {
  e.preventDefault();
  const domain = docDomain();
  const files = $("files").files;
  if (!domain || !files.length) return toast("Pick a domain and at least one file.");
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name);
  const bar = $("progress-bar");
  const status = $("upload-status");
  bar.parentElement.hidden = false;
  bar.style.width = "0%";
  $("upload-errors").replaceChildren();
  status.textContent = `Uploading ${files.length} file(s)…`;
  try {
    let job = await api(`/v1/domains/${encodeURIComponent(domain)}/documents?wait=false`, { method: "POST", body: form });
    while (job.status === "queued" || job.status === "running") {
      const p = job.progress;
      const frac = p.documents_total ? (p.documents_done + (p.chunks_total ? p.chunks_done / p.chunks_total : 0)) / (p.documents_total + 1) : 0;
      bar.style.width = `${Math.round(frac * 100)}%`;
      status.textContent = `Indexing: ${p.documents_done}/${p.documents_total} documents, ${p.chunks_done}/${p.chunks_total} chunks`;
      await new Promise((r) => setTimeout(r, 400));
      job = await api(`/v1/jobs/${job.id}`);
    }
    bar.style.width = "100%";
    const made = job.results.filter((r) => r.status !== "error").length;
    status.textContent = job.status === "succeeded" ? `Done: ${made} document(s) indexed, ${job.errors.length} failed.` : `Job ${job.status}: ${job.error || ""}`;
    status.dataset.state = job.status;
    $("upload-errors").replaceChildren(...job.errors.map((r) => el("li", {}, `${r.filename || r.id}: ${r.error}`)));
    $("new-domain").value = "";
    $("files").value = "";
    await Promise.all([loadDomains(), loadModels()]);
    $("doc-domain").value = domain;
    await loadDocuments();
  } catch (err) {
    status.textContent = err.message;
    status.dataset.state = "failed";
    toast(err.message);
  }
}

// -- domain profile ------------------------------------------------------------------------------
const ADVANCED = ["examples", "retrieval", "generation", "soft_prompt", "adapter"];

async function loadProfile() {
  const name = $("profile-domain").value;
  if (!name) return;
  const p = await api(`/v1/domains/${encodeURIComponent(name)}`);
  $("p-description").value = p.description;
  $("p-system").value = p.system_prompt;
  $("p-template").value = p.template;
  $("p-advanced").value = JSON.stringify(Object.fromEntries(ADVANCED.map((k) => [k, p[k]])), null, 2);
  $("profile-version").textContent = `version ${p.version}${p.configured ? "" : " (default profile)"}${p.knowledge ? ` · ${p.knowledge.documents} documents` : ""}`;
}

async function saveProfile(e) {
  e.preventDefault();
  const name = $("profile-domain").value;
  let advanced;
  try {
    advanced = JSON.parse($("p-advanced").value || "{}");
  } catch (err) {
    return toast(`The JSON field does not parse: ${err.message}`);
  }
  const body = { description: $("p-description").value, system_prompt: $("p-system").value, template: $("p-template").value, ...advanced };
  try {
    const saved = await api(`/v1/domains/${encodeURIComponent(name)}`, { method: "PUT", json: body });
    $("profile-status").textContent = `Saved: version ${saved.version}.`;
    await loadProfile();
  } catch (err) {
    $("profile-status").textContent = err.message;
    toast(err.message);
  }
}

// -- adapters, soft prompts, fine-tuning ---------------------------------------------------------
function rows(tbody, items, cells) {
  tbody.replaceChildren(...(items.length ? items.map((x) => el("tr", {}, ...cells(x).map((c) => el("td", {}, c)))) : [el("tr", {}, el("td", { colspan: "5", class: "muted" }, "None yet."))]));
}

async function loadTuning() {
  const [adapters, soft, jobs] = await Promise.all([
    api("/v1/adapters").catch(() => ({ data: [] })),
    api("/v1/soft-prompts").catch(() => ({ data: [] })),
    api("/v1/fine_tuning/jobs?limit=50").catch(() => ({ data: [] })),
  ]);
  rows($("adapter-table").querySelector("tbody"), adapters.data, (a) => [a.id, String(a.rank), a.domain || "", a.parent]);
  rows($("soft-table").querySelector("tbody"), soft.data, (s) => [s.id, s.method, String(s.num_virtual_tokens), s.domain || ""]);
  rows($("ft-table").querySelector("tbody"), jobs.data, (j) => {
    const p = j.progress || {};
    const fill = el("div");
    fill.style.width = `${p.total_steps ? Math.round((100 * p.step) / p.total_steps) : j.status === "succeeded" ? 100 : 0}%`;
    const bar = el("div", { class: "progress small" }, fill);
    const loss = p.train_loss != null ? ` · loss ${p.train_loss.toFixed(3)}` : "";
    return [j.id, j.method?.type || "", j.status, el("span", {}, bar, `${p.step || 0}/${p.total_steps || 0}${loss}`), j.fine_tuned_model || j.model];
  });
}

// -- tabs and start ------------------------------------------------------------------------------
function showTab(name) {
  for (const b of document.querySelectorAll(".tabs button")) b.classList.toggle("active", b.dataset.tab === name);
  for (const s of document.querySelectorAll(".tab")) s.classList.toggle("active", s.id === `tab-${name}`);
  const load = { documents: loadDocuments, domain: loadProfile, tuning: loadTuning }[name];
  if (load) load().catch((err) => toast(err.message));
}

async function refreshAll() {
  try {
    await Promise.all([loadModels(), loadDomains()]);
  } catch (err) {
    if (err.status !== 401) toast(err.message);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  setupKey();
  setupChat();
  for (const b of document.querySelectorAll(".tabs button")) b.addEventListener("click", () => showTab(b.dataset.tab));
  $("upload-form").addEventListener("submit", upload);
  $("doc-domain").addEventListener("change", () => loadDocuments().catch((err) => toast(err.message)));
  $("profile-domain").addEventListener("change", () => loadProfile().catch((err) => toast(err.message)));
  $("profile-form").addEventListener("submit", saveProfile);
  pollHealth();
  setInterval(pollHealth, 5000);
  setInterval(() => {
    if ($("tab-tuning").classList.contains("active")) loadTuning().catch(() => {});
  }, 3000);
  refreshAll();
});
