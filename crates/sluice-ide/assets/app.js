// The Sluice IDE: one plain ES module, no framework. It owns the browser side only and
// talks to the server through the documented control API (/api/v1, docs/api.md) with the
// user's key, exactly like the CLI. The code editor (CodeMirror 6) is a separate bundle
// loaded lazily, so the first screen costs a few tens of KB.
//
// Layout: login → top bar (workspace switcher, keys) · sidebar (feeds with status and
// search, data sources with tables) · workbench (editor + parameter form, tabs for results,
// chart, output, deploy, revisions, observe, connect).

const EDITOR_URL = "{{editor.js}}";
const $ = (sel, root = document) => root.querySelector(sel);

/** Create an element: h("button", {class: "x", onclick}, "text", child…). */
function h(tag, attrs = {}, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids.flat()) if (kid != null && kid !== false) el.append(kid);
  return el;
}

const state = {
  key: null, me: null, ws: null, feeds: [], drafts: [], sources: [], templates: [],
  doc: null,       // {name, filename, source, feed (record|null), draft (bool)}
  sig: null,       // the open module's feed signature (from inspect)
  editor: null,    // handle from editor.js, or a textarea fallback
  run: null,       // last run result
  tail: null,      // AbortController of the live log tail
  metricsTimer: null, // interval refreshing the Observe panel's numbers
};

// ---------------------------------------------------------------------------------------
// HTTP

class ApiError extends Error {
  constructor(problem, status) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.problem = problem; this.status = status;
  }
}

async function api(method, path, body, opts = {}) {
  const headers = { Authorization: `Bearer ${state.key}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (opts.accept) headers.Accept = opts.accept;
  const res = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: opts.signal,
  });
  if (opts.raw) {
    if (!res.ok) throw new ApiError(await problemOf(res), res.status);
    return res;
  }
  if (res.status === 204) return null;
  if (!res.ok) {
    const p = await problemOf(res);
    if (res.status === 401 && !opts.login) signOut("Your key is no longer valid: sign in again.");
    throw new ApiError(p, res.status);
  }
  const type = res.headers.get("content-type") || "";
  return type.includes("json") ? res.json() : res.text();
}

async function problemOf(res) {
  try { return await res.json(); } catch { return { detail: `${res.status} ${res.statusText}` }; }
}

/** Read an NDJSON response line by line. */
async function* ndjson(res) {
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      if (line) yield JSON.parse(line);
    }
  }
  if (buf.trim()) yield JSON.parse(buf);
}

const enc = encodeURIComponent;
const wsPath = (p = "") => `/api/v1/workspaces/${enc(state.ws)}${p}`;
const feedPath = (name, p = "") => wsPath(`/feeds/${enc(name)}${p}`);

// ---------------------------------------------------------------------------------------
// Small UI helpers

function toast(msg) {
  const t = $("#toast");
  t.textContent = msg;
  t.classList.add("show");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.classList.remove("show"), 2500);
}

async function copy(text, what = "Copied") {
  try { await navigator.clipboard.writeText(text); toast(`${what} to the clipboard`); }
  catch { toast("Copy failed: select the text and press Ctrl+C"); }
}

function copyRow(label, value, { secret = false } = {}) {
  const id = `c${Math.random().toString(36).slice(2, 8)}`;
  const input = h("input", { id, readonly: true, value, type: secret ? "password" : "text", "aria-label": label });
  const row = h("div", { class: "copyrow" },
    h("label", { for: id, class: "muted", style: "min-width:84px" }, label), input,
    h("button", { type: "button", onclick: () => copy(value, label), "aria-label": `Copy ${label}` }, "Copy"));
  if (secret) {
    row.insertBefore(h("button", {
      type: "button", "aria-label": `Show ${label}`,
      onclick: (e) => { input.type = input.type === "password" ? "text" : "password"; e.target.textContent = input.type === "password" ? "Show" : "Hide"; },
    }, "Show"), row.lastChild);
  }
  return row;
}

/** A modal dialog. fields: build the body; actions: [{label, primary, run(form) → true to close}]. */
function dialog(title, body, actions) {
  const d = $("#dialog");
  $("#dialog-title").textContent = title;
  $("#dialog-body").replaceChildren(...[].concat(body));
  $("#dialog-error").textContent = "";
  const acts = $("#dialog-actions");
  acts.replaceChildren();
  for (const a of actions) {
    const b = h("button", { type: a.primary ? "submit" : "button", class: a.primary ? "primary" : a.danger ? "danger" : "" }, a.label);
    b.addEventListener("click", async (e) => {
      e.preventDefault();
      if (!a.run) return d.close();
      b.disabled = true;
      try { if (await a.run()) d.close(); }
      catch (err) { $("#dialog-error").textContent = err.message; }
      finally { b.disabled = false; }
    });
    acts.append(b);
  }
  d.showModal();
  const first = $("#dialog-body input, #dialog-body select, #dialog-body textarea", d);
  (first || acts.lastChild).focus();
}

/** Ask before something that cannot be undone, in a modal of its own, since #dialog may be
 *  open underneath (the keys). Focus starts on Cancel, the safe choice; Escape cancels and
 *  closes only this one; focus then goes back to `opener`. Resolves true when confirmed. */
function confirmDialog({ title, message, confirm, opener = document.activeElement }) {
  const d = $("#confirm");
  $("#confirm-title").textContent = title;
  $("#confirm-body").textContent = message;
  $("#confirm-ok").textContent = confirm;
  d.returnValue = "";
  return new Promise((resolve) => {
    // Escape and Cancel close with no "confirm" value; only the confirm button sets it.
    d.addEventListener("close", () => {
      if (opener?.isConnected) opener.focus();
      resolve(d.returnValue === "confirm");
    }, { once: true });
    d.showModal();
    $("#confirm-cancel").focus();
  });
}

function fmtTime(t) { return t ? new Date(t).toLocaleString() : ""; }
function fmtMs(ms) { return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`; }
function canWrite() { return state.me && state.me.role !== "viewer"; }

// ---------------------------------------------------------------------------------------
// Sign in / out

function signOut(msg) {
  sessionStorage.removeItem("sluice.key");
  localStorage.removeItem("sluice.key");
  stopObserve();
  state.key = null;
  $("#app").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = msg || "";
  $("#login-key").focus();
}

async function signIn(key, remember) {
  state.key = key;
  const me = await api("GET", "/api/v1/whoami", undefined, { login: true });
  state.me = me;
  (remember ? localStorage : sessionStorage).setItem("sluice.key", key);
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#me").textContent = `${me.name} · ${me.role}`;
  $("#keys-btn").hidden = !canWrite();
  $("#new-btn").hidden = !canWrite();
  const [workspaces, templates] = await Promise.all([
    api("GET", "/api/v1/workspaces"), api("GET", "/api/v1/templates"),
  ]);
  state.templates = templates;
  const sel = $("#ws-select");
  sel.replaceChildren(...workspaces.map((w) => h("option", { value: w.name }, w.name)));
  const asked = parseHash();  // read before switching rewrites the address
  const wanted = asked.ws || localStorage.getItem("sluice.ws");
  const ws = workspaces.find((w) => w.name === wanted) ? wanted : workspaces[0]?.name;
  if (!ws) { toast("No workspace yet: an admin creates one with `sluice` or POST /api/v1/workspaces"); return; }
  await switchWorkspace(ws);
  if (asked.feed && asked.ws === ws) await openDoc(asked.feed);
}

// ---------------------------------------------------------------------------------------
// Workspace, feed list, sources

function parseHash() {
  const m = location.hash.match(/^#\/([^/]+)(?:\/([^/]+))?/);
  return m ? { ws: decodeURIComponent(m[1]), feed: m[2] && decodeURIComponent(m[2]) } : {};
}

async function switchWorkspace(ws) {
  state.ws = ws;
  $("#ws-select").value = ws;
  localStorage.setItem("sluice.ws", ws);
  closeDoc();
  history.replaceState(null, "", `#/${enc(ws)}`);
  await Promise.all([refreshFeeds(), refreshSources()]);
}

async function refreshFeeds() {
  const [feeds, drafts] = await Promise.all([
    api("GET", wsPath("/feeds")),
    canWrite() ? api("GET", wsPath("/drafts")) : [],
  ]);
  state.feeds = feeds;
  state.drafts = drafts;
  renderFeedList();
}

function renderFeedList() {
  const q = $("#search").value.trim().toLowerCase();
  const names = new Map();
  for (const f of state.feeds) names.set(f.name, { feed: f });
  for (const d of state.drafts) names.set(d.name, { ...(names.get(d.name) || {}), draft: d });
  const items = [...names.entries()]
    .filter(([n, v]) => !q || n.includes(q) || (v.feed?.doc || "").toLowerCase().includes(q))
    .sort(([a], [b]) => a.localeCompare(b));
  const ul = $("#feed-list");
  ul.replaceChildren(...items.map(([name, v]) => {
    const badges = [];
    if (v.feed?.live_revision) badges.push(h("span", { class: "badge live", title: `revision ${v.feed.live_revision} is live` }, `live r${v.feed.live_revision}`));
    else if (v.feed) badges.push(h("span", { class: "badge err" }, "no live revision"));
    if (v.draft) badges.push(h("span", { class: "badge draft", title: "unpublished changes" }, "draft"));
    const a = h("a", {
      href: `#/${enc(state.ws)}/${enc(name)}`, "data-feed": name,
      "aria-current": state.doc?.name === name ? "page" : null,
      title: v.feed?.doc || "",
      onclick: (e) => { e.preventDefault(); openDoc(name); },
    }, h("span", { class: "name" }, name), ...badges);
    return h("li", {}, a);
  }));
  if (!items.length) ul.append(h("li", { class: "muted row" }, q ? "No feed matches." : "No feeds yet."));
}

async function refreshSources() {
  const all = await api("GET", "/api/v1/sources");
  state.sources = all.filter((s) => s.workspaces.includes(state.ws));
  const ul = $("#source-list");
  ul.replaceChildren(...state.sources.map((s) => {
    const det = h("details", {},
      h("summary", {}, `${s.name} `, h("span", { class: "muted" }, `(${s.kind})`)));
    det.addEventListener("toggle", () => { if (det.open && !det.dataset.loaded) loadTables(s, det); });
    return h("li", {}, det);
  }));
  if (!state.sources.length) ul.append(h("li", { class: "muted row" }, "None granted to this workspace."));
}

async function loadTables(source, det) {
  det.dataset.loaded = "1";
  const box = h("ul", { "aria-label": `Tables of ${source.name}` }, h("li", { class: "muted" }, "Loading…"));
  det.append(box);
  try {
    const tables = await api("GET", `/api/v1/sources/${enc(source.name)}/tables`);
    box.replaceChildren(...tables.map((t) => h("li", {},
      h("div", { class: "row" },
        h("span", { class: "name mono" }, t.name),
        canWrite() && h("button", {
          type: "button", title: `Insert a sluice.sql query on ${t.name} at the cursor`,
          "aria-label": `Insert a sluice.sql snippet for ${source.name}.${t.name}`,
          onclick: () => insertSnippet(source.name, t),
        }, "insert")),
      h("div", { class: "cols mono" }, t.columns.map((c) => `${c.name} ${c.type || ""}`.trim()).join(", ")))));
    if (!tables.length) box.replaceChildren(h("li", { class: "muted" }, "No tables."));
  } catch (e) {
    box.replaceChildren(h("li", { class: "error" }, e.message));
  }
}

function insertSnippet(source, table) {
  if (!state.editor) { toast("Open a feed first, then insert the query into its code"); return; }
  const cols = table.columns.slice(0, 8).map((c) => c.name).join(", ");
  state.editor.insert(`sluice.sql(\n        "${source}",\n        "select ${cols} from ${table.name} limit :limit",\n        limit=100,\n    )`);
  toast(`Inserted a query on ${table.name}`);
}

// ---------------------------------------------------------------------------------------
// Documents: a feed (its live code) or a draft (my unpublished code under the same name)

async function loadEditorModule() {
  if (!loadEditorModule.p) loadEditorModule.p = import(EDITOR_URL);
  return loadEditorModule.p;
}

function closeDoc() {
  stopObserve();
  state.doc = null; state.sig = null; state.run = null;
  $("#workbench").hidden = true;
  $("#welcome").hidden = false;
}

async function openDoc(name, { source: fresh } = {}) {
  stopObserve();
  const feed = state.feeds.find((f) => f.name === name) || null;
  let draft = state.drafts.find((d) => d.name === name) || null;
  let source = fresh;
  if (source == null && draft) source = (await api("GET", wsPath(`/drafts/${enc(name)}`))).source;
  if (source == null && !canWrite()) source = "# A feed's code is shown to editors of the workspace.\n";
  if (source == null && feed?.live_revision) {
    source = (await api("GET", feedPath(name, `/revisions/${feed.live_revision}`))).source;
  }
  state.doc = { name, filename: `${name}.py`, source: source || "", feed, draft: !!draft, saved: source || "" };
  state.run = null; state.sig = null;
  $("#run-meta").textContent = "";
  history.replaceState(null, "", `#/${enc(state.ws)}/${enc(name)}`);
  $("#welcome").hidden = true;
  $("#workbench").hidden = false;
  $("#doc-name").textContent = name;
  renderDocStatus();
  $("#run-btn").hidden = !canWrite();
  $("#deploy-btn").hidden = !canWrite();
  $("#delete-btn").hidden = !canWrite() || !feed;
  renderFeedList();
  await mountEditor(state.doc.source);
  renderResults(); renderChart(); renderOutput(null);
  $("#p-deploy").replaceChildren(h("p", { class: "muted" }, "Deploy publishes this code as a new revision; progress appears here."));
  selectTab(currentTab());
  if (canWrite()) inspect();
  else if (feed) renderParams(feed.params);
}

function renderDocStatus() {
  const d = state.doc;
  const s = $("#doc-status");
  if (d.feed?.live_revision) { s.className = "badge live"; s.textContent = `live r${d.feed.live_revision}`; }
  else { s.className = "badge draft"; s.textContent = "not deployed"; }
  if (d.draft && d.feed) { s.textContent += " · draft"; }
}

async function mountEditor(text) {
  const host = $("#editor");
  host.replaceChildren();
  const onChange = (t) => { state.doc.source = t; scheduleSave(); };
  try {
    const { createEditor } = await loadEditorModule();
    state.editor = createEditor(host, {
      doc: text, label: `Code of ${state.doc.name} (Python)`, onChange,
      keys: [
        { key: "Mod-s", run: () => saveDraft(true) },
        { key: "Mod-Enter", run: () => runDoc() },
        { key: "Mod-Shift-Enter", run: () => deployDoc() },
      ],
    });
    state.editor.setReadOnly(!canWrite());
  } catch (e) {
    // The editor bundle failed to load (an old browser, a proxy): a textarea still works.
    const ta = h("textarea", { class: "editor-fallback", "aria-label": "Feed code (Python)", spellcheck: "false" });
    ta.value = text;
    ta.addEventListener("input", () => onChange(ta.value));
    host.append(ta);
    state.editor = {
      get: () => ta.value, set: (t) => { ta.value = t; }, mark: () => 0, clearMarks() {},
      insert: (t) => ta.setRangeText(t, ta.selectionStart, ta.selectionEnd, "end"),
      focus: () => ta.focus(), setReadOnly: (ro) => { ta.readOnly = ro; },
    };
    console.warn("editor bundle did not load", e);
  }
}

function scheduleSave() {
  $("#save-status").textContent = "Unsaved changes";
  clearTimeout(scheduleSave.t);
  scheduleSave.t = setTimeout(() => saveDraft(false), 800);
}

/** Drafts live on the server, per user (key) and workspace, so work survives a closed tab. */
async function saveDraft(explicit) {
  const d = state.doc;
  if (!d || !canWrite()) return;
  clearTimeout(scheduleSave.t);
  if (d.source === d.saved && !explicit) return;
  try {
    await api("PUT", wsPath(`/drafts/${enc(d.name)}`), { source: d.source, filename: d.filename });
    d.saved = d.source;
    if (!d.draft) { d.draft = true; await refreshFeeds(); renderDocStatus(); }
    $("#save-status").textContent = `Draft saved ${new Date().toLocaleTimeString()}`;
    if (explicit) inspect();
  } catch (e) {
    $("#save-status").textContent = `Not saved: ${e.message}`;
  }
}

/** Load the module in a worker without running it: its signature builds the parameter
 *  form, and a load error is marked at its line, as deploy would report it. */
async function inspect() {
  const d = state.doc;
  const seq = (inspect.seq = (inspect.seq || 0) + 1);
  // The form may be rebuilt when the answer comes: say so to assistive technology (and to
  // anything else waiting for the form to settle). Only the latest inspection clears it.
  const form = $("#params");
  form.setAttribute("aria-busy", "true");
  try {
    const r = await api("POST", wsPath("/inspect"), { source: d.source, filename: d.filename });
    if (seq !== inspect.seq || d !== state.doc) return;
    state.sig = r.feeds.find((f) => f.name === d.name) || r.feeds[0];
    state.editor.clearMarks();
    renderParams(state.sig?.params || [], r.feeds.length > 1 ? r.feeds.map((f) => f.name) : null);
  } catch (e) {
    if (seq !== inspect.seq || d !== state.doc) return;
    markProblem(e.problem || { detail: e.message });
    renderParams(state.doc.feed?.params || []);
  } finally {
    if (seq === inspect.seq) form.setAttribute("aria-busy", "false");
  }
}

function renderParams(params, feeds) {
  const form = $("#params");
  // A re-inspection (after a run or a save) must not undo what the user typed.
  const typed = state.paramsOf === state.doc ? new Map([...form.elements].filter((el) => el.name).map((el) => [el.name, el.value])) : new Map();
  state.paramsOf = state.doc;
  const kids = [h("h2", {}, "Parameters")];
  if (feeds) {
    kids.push(h("label", { for: "param-feed" }, "feed"),
      h("select", { id: "param-feed", name: "__feed" }, feeds.map((f) => h("option", { value: f, selected: f === state.sig?.name }, f))));
  }
  for (const p of params) {
    const id = `param-${p.name}`;
    const def = p.default == null ? "" : Array.isArray(p.default) ? p.default.join(",") : String(p.default);
    let input;
    if (p.type === "bool") {
      input = h("select", { id, name: p.name }, ["true", "false"].map((v) => h("option", { value: v, selected: String(p.default) === v }, v)));
    } else {
      const type = { int: "number", float: "number", date: "date" }[p.type] || "text";
      input = h("input", {
        id, name: p.name, type, value: def, step: p.type === "float" ? "any" : null,
        required: p.required, placeholder: p.type === "list[str]" ? "a,b,c" : p.required ? "required" : "",
      });
    }
    kids.push(h("label", { for: id }, `${p.name} `, h("span", { class: "muted" }, `(${p.type}${p.required ? ", required" : ""})`)), input);
  }
  if (!params.length) kids.push(h("p", { class: "muted" }, "This feed takes no parameters."));
  kids.push(h("label", { for: "run-limit" }, "rows to preview"),
    h("select", { id: "run-limit", name: "__limit" }, [100, 1000, 10000, 100000].map((n) => h("option", { value: n, selected: n === 1000 }, n.toLocaleString()))));
  form.replaceChildren(...kids);
  for (const el of form.elements) if (typed.has(el.name)) el.value = typed.get(el.name);
}

function formParams() {
  const out = {}; let feed = null; let limit = 1000;
  for (const el of $("#params").elements) {
    if (!el.name) continue;
    if (el.name === "__feed") feed = el.value;
    else if (el.name === "__limit") limit = Number(el.value);
    else if (el.value !== "") {
      const spec = (state.sig?.params || []).find((p) => p.name === el.name);
      out[el.name] = spec?.type === "list[str]" ? el.value.split(",").map((s) => s.trim()) : el.value;
    }
  }
  return { params: out, feed, limit };
}

/** A problem's location: `line` from validation, else the deepest frame of the user's
 *  file in the traceback. */
function problemLines(p) {
  const d = state.doc;
  if (p.line) return [p.line];
  const tb = p.traceback || "";
  const re = new RegExp(`File "[^"]*${d.filename.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}", line (\\d+)`, "g");
  const lines = [...tb.matchAll(re)].map((m) => Number(m[1]));
  return lines.length ? [lines[lines.length - 1]] : [];
}

function markProblem(p) {
  const lines = problemLines(p);
  const msg = p.detail || p.title || "error";
  const n = state.editor.mark(lines.map((line) => ({ line, message: msg })));
  return n ? ` (line ${lines[0]})` : "";
}

// ---------------------------------------------------------------------------------------
// Run (no deploy): results table, chart, output

async function runDoc() {
  const d = state.doc;
  if (!d || !canWrite()) return;
  saveDraft(false);
  const { params, feed, limit } = formParams();
  const btn = $("#run-btn");
  btn.disabled = true;
  $("#run-meta").textContent = "Running…";
  state.editor.clearMarks();
  const t0 = performance.now();
  try {
    const r = await api("POST", wsPath("/run"), { source: d.source, filename: d.filename, feed: feed || state.sig?.name || null, params, limit });
    if (d !== state.doc) return;
    state.run = r;
    $("#run-meta").textContent = `${r.row_count.toLocaleString()} rows${r.truncated ? ` (showing ${r.rows.length.toLocaleString()})` : ""} · ${fmtMs(r.duration_ms)} on the server · ${fmtMs(performance.now() - t0)} total`;
    renderResults(); renderChart(); renderOutput(r, null);
    selectTab(currentTab() === "chart" ? "chart" : "results");
    inspect();
  } catch (e) {
    const p = e.problem || { detail: e.message };
    const where = markProblem(p);
    $("#run-meta").textContent = `Failed${where}: ${p.code || ""}`;
    renderOutput(null, p);
    selectTab("output");
  } finally {
    btn.disabled = false;
  }
}

const ROW_H = 24;

function renderResults() {
  const box = $("#p-results");
  const r = state.run;
  if (!r) {
    box.replaceChildren(h("p", { class: "muted", style: "padding:8px 12px" }, "Press Run (Ctrl+Enter) to preview rows. Nothing is published until you deploy."));
    return;
  }
  const cols = r.columns;
  const numeric = cols.map((_, i) => r.rows.some((row) => typeof row[i] === "number"));
  const widths = cols.map((c, i) => {
    let w = c.length;
    for (let k = 0; k < Math.min(r.rows.length, 200); k++) w = Math.max(w, String(r.rows[k][i] ?? "null").length);
    return Math.min(Math.max(w * 8 + 18, 60), 360);
  });
  const template = widths.map((w) => `${w}px`).join(" ");
  const total = r.rows.length;
  const grid = h("div", { class: "grid", tabindex: "0", role: "table", "aria-label": `Results: ${total} rows`, "aria-rowcount": total + 1 });
  const head = h("div", { class: "grid-head", role: "row", style: `grid-template-columns:${template}` },
    cols.map((c, i) => h("div", { class: `grid-cell${numeric[i] ? " num" : ""}`, role: "columnheader", title: c }, c)));
  const spacer = h("div", { style: `height:${(total + 1) * ROW_H}px;width:${widths.reduce((a, b) => a + b, 0)}px` });
  const body = h("div", { role: "rowgroup" });
  grid.append(head, spacer, body);
  const where = h("span", { "aria-live": "off" });
  const pageRows = () => Math.max(1, Math.floor(grid.clientHeight / ROW_H) - 1);
  const go = (row) => { grid.scrollTop = Math.max(0, Math.min(total, row)) * ROW_H; };
  const bar = h("div", { class: "grid-bar" },
    h("button", { type: "button", onclick: () => go(0), "aria-label": "First page" }, "⏮"),
    h("button", { type: "button", onclick: () => go(Math.floor(grid.scrollTop / ROW_H) - pageRows()), "aria-label": "Previous page" }, "◀"),
    h("button", { type: "button", onclick: () => go(Math.floor(grid.scrollTop / ROW_H) + pageRows()), "aria-label": "Next page" }, "▶"),
    h("button", { type: "button", onclick: () => go(total), "aria-label": "Last page" }, "⏭"),
    where,
    h("span", { class: "grow" }),
    h("button", { type: "button", onclick: () => downloadCsv(r) }, "Download CSV"));
  // Only the rows in view (plus a margin) exist in the DOM; scrolling re-renders them in
  // one animation frame.
  let frame = 0;
  const draw = () => {
    frame = 0;
    const first = Math.max(0, Math.floor(grid.scrollTop / ROW_H) - 10);
    const last = Math.min(total, first + Math.ceil(grid.clientHeight / ROW_H) + 20);
    const frag = document.createDocumentFragment();
    for (let k = first; k < last; k++) {
      const row = r.rows[k];
      const el = document.createElement("div");
      el.className = "grid-row"; el.setAttribute("role", "row"); el.setAttribute("aria-rowindex", k + 2);
      el.style.cssText = `top:${(k + 1) * ROW_H}px;grid-template-columns:${template}`;
      for (let i = 0; i < cols.length; i++) {
        const v = row[i];
        const c = document.createElement("div");
        c.className = `grid-cell${numeric[i] ? " num" : ""}${v == null ? " null" : ""}`;
        c.setAttribute("role", "cell");
        c.textContent = v == null ? "null" : typeof v === "object" ? JSON.stringify(v) : String(v);
        el.append(c);
      }
      frag.append(el);
    }
    body.replaceChildren(frag);
    const top = Math.min(total, Math.floor(grid.scrollTop / ROW_H) + 1);
    where.textContent = total ? `rows ${top.toLocaleString()}–${Math.min(total, top + pageRows() - 1).toLocaleString()} of ${total.toLocaleString()}` : "no rows";
  };
  grid.addEventListener("scroll", () => { if (!frame) frame = requestAnimationFrame(draw); });
  grid.addEventListener("keydown", (e) => {
    const row = Math.floor(grid.scrollTop / ROW_H);
    const moves = { PageDown: row + pageRows(), PageUp: row - pageRows(), Home: 0, End: total, ArrowDown: row + 1, ArrowUp: row - 1 };
    if (e.key in moves) { e.preventDefault(); go(moves[e.key]); }
  });
  box.replaceChildren(bar, grid);
  new ResizeObserver(() => { if (!frame) frame = requestAnimationFrame(draw); }).observe(grid);
  draw();
}

function downloadCsv(r) {
  const esc = (v) => { const s = v == null ? "" : typeof v === "object" ? JSON.stringify(v) : String(v); return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s; };
  const text = [r.columns.map(esc).join(","), ...r.rows.map((row) => row.map(esc).join(","))].join("\n");
  const a = h("a", { href: URL.createObjectURL(new Blob([text], { type: "text/csv" })), download: `${r.feed}.csv` });
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

/** A quick SVG chart of one column against another: line or bar, no library. */
function renderChart() {
  const box = $("#p-chart");
  const r = state.run;
  if (!r || !r.rows.length) { box.replaceChildren(h("p", { class: "muted" }, "Run the feed, then chart any numeric column.")); return; }
  const numCols = r.columns.filter((_, i) => r.rows.some((row) => typeof row[i] === "number"));
  if (!numCols.length) { box.replaceChildren(h("p", { class: "muted" }, "No numeric column to chart.")); return; }
  const prev = renderChart.pick || {};
  const xDefault = r.columns.includes(prev.x) ? prev.x : r.columns.find((c) => !numCols.includes(c)) || r.columns[0];
  const yDefault = numCols.includes(prev.y) ? prev.y : numCols.find((c) => c !== xDefault) || numCols[0];
  const sel = (id, label, opts, val) => [h("label", { for: id }, label), h("select", { id }, opts.map((o) => h("option", { value: o, selected: o === val }, o)))];
  const tools = h("div", { class: "chart-tools" },
    ...sel("chart-x", "X", r.columns, xDefault), ...sel("chart-y", "Y", numCols, yDefault),
    ...sel("chart-kind", "Kind", ["bar", "line"], prev.kind || "bar"));
  const out = h("div", { class: "chart", role: "img" });
  box.replaceChildren(tools, out);
  const draw = () => {
    const x = $("#chart-x").value, y = $("#chart-y").value, kind = $("#chart-kind").value;
    renderChart.pick = { x, y, kind };
    out.setAttribute("aria-label", `${kind} chart of ${y} by ${x}`);
    out.replaceChildren(chartSvg(r, x, y, kind));
  };
  tools.addEventListener("change", draw);
  draw();
}

function chartSvg(r, xc, yc, kind) {
  const xi = r.columns.indexOf(xc), yi = r.columns.indexOf(yc);
  let pts = r.rows.map((row) => [row[xi], Number(row[yi])]).filter(([, y]) => Number.isFinite(y));
  const maxBars = 60;
  let note = "";
  if (kind === "bar" && pts.length > maxBars) { note = `first ${maxBars} of ${pts.length} rows`; pts = pts.slice(0, maxBars); }
  if (kind === "line" && pts.length > 2000) {  // keep every n-th point: the shape survives
    const step = Math.ceil(pts.length / 2000);
    pts = pts.filter((_, i) => i % step === 0);
    note = `every ${step}th row`;
  }
  const W = 900, H = 240, L = 60, B = 40, T = 10;
  const ys = pts.map((p) => p[1]);
  const lo = Math.min(0, ...ys), hi = Math.max(0, ...ys) || 1;
  const sy = (v) => T + (H - T - B) * (1 - (v - lo) / (hi - lo || 1));
  const sx = (i) => L + ((W - L - 10) * (i + 0.5)) / Math.max(pts.length, 1);
  const ns = "http://www.w3.org/2000/svg";
  const s = (tag, a, text) => { const e = document.createElementNS(ns, tag); for (const k in a) e.setAttribute(k, a[k]); if (text != null) e.textContent = text; return e; };
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none" });
  svg.append(s("line", { x1: L, y1: sy(0), x2: W - 10, y2: sy(0), class: "axis" }), s("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }));
  for (const v of [lo, (lo + hi) / 2, hi]) svg.append(s("text", { x: L - 4, y: sy(v) + 4, "text-anchor": "end" }, Number(v.toPrecision(4)).toLocaleString()));
  const bw = Math.max(1, ((W - L - 10) / Math.max(pts.length, 1)) * 0.8);
  if (kind === "bar") {
    pts.forEach(([xv, yv], i) => {
      const rect = s("rect", { x: sx(i) - bw / 2, y: Math.min(sy(yv), sy(0)), width: bw, height: Math.abs(sy(yv) - sy(0)), fill: "#1b5e9e" });
      rect.append(s("title", {}, `${xv}: ${yv}`));
      svg.append(rect);
    });
  } else {
    svg.append(s("polyline", { points: pts.map(([, yv], i) => `${sx(i)},${sy(yv)}`).join(" "), fill: "none", stroke: "#1b5e9e", "stroke-width": 2 }));
  }
  const labels = Math.min(pts.length, 8);
  for (let k = 0; k < labels; k++) {
    const i = Math.floor((k * pts.length) / labels);
    svg.append(s("text", { x: sx(i), y: H - B + 14, "text-anchor": "middle" }, String(pts[i][0]).slice(0, 14)));
  }
  svg.append(s("text", { x: W - 10, y: H - 6, "text-anchor": "end" }, `${yc} by ${xc}${note ? ` (${note})` : ""}`));
  return svg;
}

function renderOutput(r, problem) {
  const box = $("#p-output");
  const kids = [];
  if (problem) {
    kids.push(h("h3", {}, `Error: ${problem.code || problem.title || ""}`), h("pre", { class: "tb" }, problem.detail || ""));
    if (problem.traceback) kids.push(h("h3", {}, "Traceback"), h("pre", { class: "tb", "aria-label": "Traceback" }, problem.traceback));
  }
  if (r) {
    kids.push(h("h3", {}, "stdout"), h("pre", { "aria-label": "stdout" }, r.stdout || "(empty)"));
    kids.push(h("h3", {}, "stderr"), h("pre", { "aria-label": "stderr" }, r.stderr || "(empty)"));
  }
  if (!kids.length) kids.push(h("p", { class: "muted" }, "print() output, warnings and tracebacks of the last run appear here."));
  box.replaceChildren(h("div", { class: "out" }, kids));
}

// ---------------------------------------------------------------------------------------
// Deploy with streamed progress; revisions, diff, rollback, delete

async function deployDoc() {
  const d = state.doc;
  if (!d || !canWrite()) return;
  await saveDraft(false);
  const btn = $("#deploy-btn");
  btn.disabled = true;
  selectTab("deploy");
  const list = h("ol", { class: "progress", "aria-live": "polite", "aria-label": "Deploy progress" });
  $("#p-deploy").replaceChildren(h("h3", {}, `Deploying ${d.filename}`), list);
  const step = (text, cls) => list.append(h("li", { class: cls || "" }, text));
  state.editor.clearMarks();
  try {
    const res = await api("POST", wsPath("/deploy"), { source: d.source, filename: d.filename }, { accept: "application/x-ndjson", raw: true });
    for await (const ev of ndjson(res)) {
      if (ev.event === "progress") step(ev.message);
      else if (ev.event === "error") {
        const where = markProblem(ev.problem);
        step(`failed${where}: ${ev.problem.detail}`, "fail");
        if (ev.problem.traceback) list.after(h("pre", { class: "tb" }, ev.problem.traceback));
        renderOutput(null, ev.problem);
        return;
      } else if (ev.event === "done") {
        for (const f of ev.feeds) step(`${f.name}: revision ${f.revision} is live at ${f.url}`, "done");
        // Published: the draft has nothing left to publish.
        if (d.draft) await api("DELETE", wsPath(`/drafts/${enc(d.name)}`)).catch(() => {});
        await refreshFeeds();
        if (state.doc === d) {
          d.draft = false;
          d.feed = state.feeds.find((f) => f.name === d.name) || null;
          renderDocStatus();
          $("#delete-btn").hidden = !d.feed;
          $("#save-status").textContent = "Deployed";
        }
        toast(`Deployed ${ev.feeds.map((f) => `${f.name} r${f.revision}`).join(", ")}`);
      }
    }
  } catch (e) {
    step(`failed: ${e.message}`, "fail");
    if (e.problem) markProblem(e.problem);
  } finally {
    btn.disabled = false;
  }
}

async function renderRevisions() {
  const d = state.doc;
  const box = $("#p-revisions");
  if (!d.feed) { box.replaceChildren(h("p", { class: "muted" }, "Not deployed yet: revisions appear after the first deploy.")); return; }
  const revs = await api("GET", feedPath(d.name, "/revisions"));
  const pick = (id, label, sel) => [h("label", { for: id }, label), h("select", { id }, revs.map((r) => h("option", { value: r.number, selected: r.number === sel }, `r${r.number}`)))];
  const diffBox = h("div", { class: "diff", "aria-label": "Diff", tabindex: "0" });
  const tools = h("div", { class: "chart-tools" },
    ...pick("diff-a", "Compare", revs[1]?.number ?? revs[0]?.number), ...pick("diff-b", "with", revs[0]?.number),
    h("button", { type: "button", onclick: () => showDiff() }, "Show diff"));
  const table = h("table", { class: "t" },
    h("thead", {}, h("tr", {}, ["Revision", "Created", "By", "Dependencies", ""].map((t) => h("th", {}, t)))),
    h("tbody", {}, revs.map((r) => h("tr", {},
      h("td", {}, `r${r.number} `, r.live ? h("span", { class: "badge live" }, "live") : ""),
      h("td", {}, fmtTime(r.created_at)), h("td", {}, r.created_by),
      h("td", { class: "mono" }, (r.env_hash || "").slice(0, 12)),
      h("td", {}, !r.live && canWrite() ? h("button", { type: "button", "data-rollback": r.number, onclick: () => rollback(r.number) }, `Roll back to r${r.number}`) : "")))));
  box.replaceChildren(table, h("h3", {}, "Diff"), tools, diffBox);
  const cache = new Map();
  const src = async (n) => { if (!cache.has(n)) cache.set(n, (await api("GET", feedPath(d.name, `/revisions/${n}`))).source); return cache.get(n); };
  async function showDiff() {
    const a = Number($("#diff-a").value), b = Number($("#diff-b").value);
    const rows = diffLines(await src(a), await src(b));
    diffBox.replaceChildren(...rows.map(([op, text]) => h("div", { class: op === "+" ? "add" : op === "-" ? "del" : "" }, `${op} ${text}`)));
    if (!rows.some(([op]) => op !== " ")) diffBox.prepend(h("div", { class: "muted" }, `r${a} and r${b} have the same code.`));
  }
  if (revs.length) showDiff();
}

/** Line diff by longest common subsequence: feed modules are small. */
function diffLines(a, b) {
  const x = a.split("\n"), y = b.split("\n");
  const n = x.length, m = y.length;
  const L = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) L[i][j] = x[i] === y[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
  const out = [];
  let i = 0, j = 0;
  while (i < n && j < m) {
    if (x[i] === y[j]) { out.push([" ", x[i]]); i++; j++; }
    else if (L[i + 1][j] >= L[i][j + 1]) out.push(["-", x[i++]]);
    else out.push(["+", y[j++]]);
  }
  while (i < n) out.push(["-", x[i++]]);
  while (j < m) out.push(["+", y[j++]]);
  return out;
}

async function rollback(n) {
  const d = state.doc;
  try {
    const f = await api("POST", feedPath(d.name, "/rollback"), { revision: n });
    d.feed = f;
    await refreshFeeds();
    renderDocStatus();
    toast(`r${n} of ${d.name} is live again`);
    renderRevisions();
  } catch (e) { toast(`Rollback failed: ${e.message}`); }
}

function deleteDoc() {
  const d = state.doc;
  dialog(`Delete ${d.name}?`, [
    h("p", {}, "The feed, all its revisions and its secret links are deleted. Its URL stops working at once. Your draft (if any) is kept."),
  ], [
    { label: "Cancel" },
    { label: "Delete feed", danger: true, run: async () => {
      await api("DELETE", feedPath(d.name));
      await refreshFeeds();
      toast(`${d.name} deleted`);
      if (state.drafts.some((x) => x.name === d.name)) await openDoc(d.name); else closeDoc();
      return true;
    } },
  ]);
}

// ---------------------------------------------------------------------------------------
// Observe: rate, latency and errors computed by the server (GET …/metrics, per minute over
// a window); recent invocations and a live tail for editors

const WINDOWS = [["15m", "Last 15 minutes"], ["1h", "Last hour"], ["24h", "Last 24 hours"]];

/** Stop what the Observe panel keeps running: the tail stream and the metrics refresh. */
function stopObserve() {
  if (state.tail) { state.tail.abort(); state.tail = null; }
  clearInterval(state.metricsTimer); state.metricsTimer = null;
}

async function renderObserve() {
  const d = state.doc;
  const box = $("#p-observe");
  stopObserve();
  if (!d.feed) { box.replaceChildren(h("p", { class: "muted" }, "Deploy the feed to see its traffic.")); return; }
  const win = h("select", { id: "obs-window" }, WINDOWS.map(([v, t]) => h("option", { value: v, selected: v === (renderObserve.window || "1h") }, t)));
  const refreshBtn = h("button", { type: "button" }, "Refresh");
  const stats = h("div", { class: "stats", id: "obs-stats", "aria-live": "polite" });
  const chart = h("div", { class: "chart traffic", role: "img" });
  const note = h("p", { class: "muted", id: "obs-note" });
  box.replaceChildren(h("div", { class: "chart-tools" }, h("label", { for: "obs-window" }, "Window"), win, refreshBtn), stats, chart, note);

  // One request at a time, and only the latest answer is drawn: a slow answer for the old
  // window must not overwrite the new one.
  let seq = 0;
  const loadMetrics = async () => {
    const mine = ++seq;
    const m = await api("GET", feedPath(d.name, `/metrics?window=${enc(win.value)}`));
    if (mine !== seq || d !== state.doc) return;
    drawMetrics(m, stats, chart, note);
  };
  const reload = () => loadMetrics().catch((e) => { note.textContent = `Metrics unavailable: ${e.message}`; });
  win.addEventListener("change", () => { renderObserve.window = win.value; reload(); });
  refreshBtn.addEventListener("click", reload);
  await loadMetrics();
  // The current minute fills up as calls come in.
  state.metricsTimer = setInterval(reload, 15_000);

  if (!canWrite()) { box.append(h("p", { class: "muted" }, "The invocations themselves (parameters, output) need an editor key.")); return; }
  const invs = await api("GET", feedPath(d.name, "/logs?limit=200"));
  if (d !== state.doc) return;
  const tbody = h("tbody", {});
  const table = h("table", { class: "t", "aria-label": "Recent invocations" },
    h("thead", {}, h("tr", {}, ["When", "Status", "Rows", "Time", "Revision", "Parameters", "Error"].map((t) => h("th", {}, t)))), tbody);
  const tailBtn = h("button", { type: "button", "aria-pressed": "false" }, "Live tail");
  box.append(h("h3", {}, "Recent invocations"),
    h("div", { class: "chart-tools" }, tailBtn, h("span", { class: "muted" }, "The latest 200; the tail adds new ones as they happen.")), table);
  const all = invs.slice();
  const row = (i) => h("tr", {},
    h("td", {}, fmtTime(i.at)), h("td", {}, h("span", { class: `badge ${i.status >= 400 ? "err" : "live"}` }, String(i.status))),
    h("td", {}, String(i.rows ?? "")), h("td", {}, fmtMs(i.duration_ms)), h("td", {}, `r${i.revision}`),
    h("td", { class: "mono" }, Object.entries(i.params || {}).map(([k, v]) => `${k}=${v}`).join(" ")),
    h("td", {}, i.error_code || ""));
  const update = () => tbody.replaceChildren(...all.slice(-200).reverse().map(row));
  update();
  let pending = 0;
  tailBtn.addEventListener("click", async () => {
    if (state.tail) {
      state.tail.abort(); state.tail = null;
      tailBtn.setAttribute("aria-pressed", "false"); tailBtn.textContent = "Live tail";
      return;
    }
    const ctl = (state.tail = new AbortController());
    tailBtn.setAttribute("aria-pressed", "true"); tailBtn.textContent = "Stop tail";
    const after = all.length ? all[all.length - 1].id : 0;
    try {
      const res = await api("GET", feedPath(d.name, `/logs?follow=true&after=${after}`), undefined, { raw: true, signal: ctl.signal });
      for await (const i of ndjson(res)) {
        all.push(i); update();
        // New calls move the numbers: refresh them, at most once a second.
        if (!pending) pending = setTimeout(() => { pending = 0; reload(); }, 1000);
      }
    } catch (e) { if (e.name !== "AbortError") toast(`Tail stopped: ${e.message}`); }
  });
}

function drawMetrics(m, stats, chart, note) {
  const t = m.total;
  const minutes = m.buckets.length || 1;
  const pct = (n) => (t.requests ? ` (${((100 * n) / t.requests).toFixed(1)}%)` : "");
  const stat = (name, value, label) => h("div", { class: "stat", "data-stat": name }, h("b", {}, value), label);
  const label = WINDOWS.find(([v]) => v === m.window)?.[1].toLowerCase() || m.window;
  stats.replaceChildren(
    stat("requests", t.requests.toLocaleString(), `calls, ${label}`),
    stat("rate", (t.requests / minutes).toFixed(2), "calls/min"),
    stat("p50", t.p50_ms == null ? "–" : fmtMs(t.p50_ms), "p50 latency"),
    stat("p95", t.p95_ms == null ? "–" : fmtMs(t.p95_ms), "p95 latency"),
    stat("errors", t.errors.toLocaleString(), `errors${pct(t.errors)}`),
    stat("client_errors", t.client_errors.toLocaleString(), "refused (4xx)"));
  chart.setAttribute("aria-label", `Calls per minute, ${label}: ${t.requests} calls, ${t.errors} errors`);
  chart.replaceChildren(trafficSvg(m.buckets));
  // Every call is counted, per minute, and minutes are kept for a day (docs/api.md): say
  // when the window reaches past the oldest one kept.
  const oldest = m.oldest_record && Date.parse(m.oldest_record);
  note.textContent = oldest && oldest > Date.parse(m.from)
    ? `Every call counted since ${fmtTime(m.oldest_record)}; latencies estimated per minute.`
    : "Every call counted; latencies estimated from per-minute histograms.";
}

/** Bars of calls per minute, the failed (5xx) part of each in red; the p95 latency of each
 *  minute in its tooltip. */
function trafficSvg(buckets) {
  const W = 900, H = 140, L = 44, B = 22, T = 8;
  const hi = Math.max(1, ...buckets.map((b) => b.requests));
  const n = Math.max(buckets.length, 1);
  const sy = (v) => T + (H - T - B) * (1 - v / hi);
  const bw = (W - L - 10) / n;
  const ns = "http://www.w3.org/2000/svg";
  const s = (tag, a, text) => { const e = document.createElementNS(ns, tag); for (const k in a) e.setAttribute(k, a[k]); if (text != null) e.textContent = text; return e; };
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none" });
  svg.append(s("line", { x1: L, y1: sy(0), x2: W - 10, y2: sy(0), class: "axis" }));
  for (const v of [0, hi]) svg.append(s("text", { x: L - 4, y: sy(v) + 4, "text-anchor": "end" }, String(v)));
  const hhmm = (t) => new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  buckets.forEach((b, i) => {
    if (!b.requests) return;
    const x = L + i * bw + bw * 0.1, w = Math.max(1, bw * 0.8);
    const g = s("g", {});
    g.append(s("rect", { x, y: sy(b.requests), width: w, height: sy(0) - sy(b.requests), fill: "#1b5e9e" }));
    if (b.errors) g.append(s("rect", { x, y: sy(b.errors), width: w, height: sy(0) - sy(b.errors), fill: "#b42318" }));
    g.append(s("title", {}, `${hhmm(b.start)}: ${b.requests} calls, ${b.errors} errors, p50 ${fmtMs(b.p50_ms)}, p95 ${fmtMs(b.p95_ms)}`));
    svg.append(g);
  });
  const ticks = Math.min(n, 6);
  for (let k = 0; k < ticks; k++) {
    const i = Math.floor((k * n) / ticks);
    if (buckets[i]) svg.append(s("text", { x: L + i * bw, y: H - 6 }, hhmm(buckets[i].start)));
  }
  return svg;
}

// ---------------------------------------------------------------------------------------
// Connect: URLs with the key, snippets and connection files for BI tools

async function renderConnect() {
  const d = state.doc;
  const box = $("#p-connect");
  if (!d.feed?.live_revision) { box.replaceChildren(h("p", { class: "muted" }, "Deploy the feed to connect tools to it.")); return; }
  const c = await api("GET", feedPath(d.name, "/connect"));
  const base = c.http.url;
  const withKey = (fmt) => `${base}${base.includes("?") ? "&" : "?"}format=${fmt}&api_key=${enc(state.key)}`;
  const kids = [
    h("p", {}, "These URLs carry your key: share them only with people who may use it. For a tool that cannot send a key, create a secret link with ", h("code", {}, `sluice links create ${d.name}`), "."),
  ];
  for (const fmt of ["json", "csv", "ndjson", "arrow"]) kids.push(copyRow(fmt.toUpperCase(), withKey(fmt), { secret: true }));
  kids.push(copyRow("OData", c.odata.url));
  if (c.postgres) kids.push(copyRow("PostgreSQL", `postgresql://${c.postgres.user}@${c.postgres.host}:${c.postgres.port}/${c.postgres.database} (table ${c.postgres.table}, password: your key)`));
  for (const t of c.tools) {
    const pre = h("pre", { "aria-label": `${t.title} ${t.kind}` }, "Loading…");
    const dl = h("button", { type: "button", onclick: () => download(t) }, `Download ${t.filename}`);
    const cp = h("button", { type: "button", onclick: () => copy(pre.textContent, t.title) }, "Copy");
    kids.push(h("section", { class: "snip", "data-tool": t.tool }, h("header", {}, h("strong", {}, t.title), h("span", { class: "muted" }, `via ${t.via}`), h("span", { class: "grow" }), cp, dl), pre));
    api("GET", feedPath(d.name, `/connect/${enc(t.tool)}`), undefined, { raw: true })
      .then((res) => res.text()).then((text) => { pre.textContent = text; }, (e) => { pre.textContent = e.message; });
  }
  box.replaceChildren(...kids);
}

async function download(t) {
  const res = await api("GET", feedPath(state.doc.name, `/connect/${enc(t.tool)}`), undefined, { raw: true });
  const a = h("a", { href: URL.createObjectURL(await res.blob()), download: t.filename });
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

// ---------------------------------------------------------------------------------------
// Tabs (WAI-ARIA: arrow keys move between tabs)

const TABS = ["results", "chart", "output", "deploy", "revisions", "observe", "connect"];
const loaders = { revisions: renderRevisions, observe: renderObserve, connect: renderConnect };
function currentTab() { return TABS.find((t) => $(`#tab-${t}`).getAttribute("aria-selected") === "true") || "results"; }

function selectTab(name, focus = false) {
  if (name !== "observe") stopObserve();
  for (const t of TABS) {
    const on = t === name;
    const tab = $(`#tab-${t}`);
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
    $(`#p-${t}`).hidden = !on;
    if (on && focus) tab.focus();
  }
  if (loaders[name] && state.doc) loaders[name]().catch((e) => $(`#p-${name}`).replaceChildren(h("p", { class: "error" }, e.message)));
}

// ---------------------------------------------------------------------------------------
// New feed, keys, shortcuts

function newFeed() {
  const name = h("input", { id: "new-name", required: true, pattern: "[a-z][a-z0-9_]*", placeholder: "e.g. top_products", autocomplete: "off" });
  const tpl = h("select", { id: "new-template" }, state.templates.map((t) => h("option", { value: t.name }, t.title)));
  const desc = h("p", { class: "muted" });
  const showDesc = () => { desc.textContent = state.templates.find((t) => t.name === tpl.value)?.description || ""; };
  tpl.addEventListener("change", showDesc);
  showDesc();
  dialog("New feed", [
    h("label", { for: "new-name" }, "Name (lower case, digits, _): it becomes the feed's URL"), name,
    h("label", { for: "new-template" }, "Template"), tpl, desc,
  ], [
    { label: "Cancel" },
    { label: "Create", primary: true, run: async () => {
      const n = name.value.trim();
      if (!/^[a-z][a-z0-9_]{0,62}$/.test(n)) throw new Error("Use a lower-case letter first, then letters, digits or _ (like top_products).");
      if (state.feeds.some((f) => f.name === n) || state.drafts.some((d) => d.name === n)) throw new Error(`${n} exists already: open it from the list, or pick another name.`);
      const t = state.templates.find((x) => x.name === tpl.value);
      const source = t.source.replaceAll("{feed}", n);
      await api("PUT", wsPath(`/drafts/${enc(n)}`), { source, filename: `${n}.py` });
      await refreshFeeds();
      await openDoc(n);
      toast("Draft created: press Run to preview it");
      return true;
    } },
  ]);
}

async function keysDialog() {
  const body = h("div", {});
  const render = async () => {
    const keys = await api("GET", "/api/v1/keys");
    body.replaceChildren(h("table", { class: "t", "aria-label": "Keys" },
      h("thead", {}, h("tr", {}, ["Name", "Prefix", "Role", "Workspace", "Last used", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, keys.map((k) => h("tr", {},
        h("td", {}, k.name), h("td", { class: "mono" }, k.prefix), h("td", {}, k.role), h("td", {}, k.workspace || "all"),
        h("td", {}, k.last_used_at ? fmtTime(k.last_used_at) : "never"),
        h("td", {}, k.prefix === state.me.prefix ? h("span", { class: "muted" }, "this key") : h("button", {
          type: "button", class: "danger", "aria-label": `Revoke key ${k.name}`,
          onclick: (e) => revoke(k, e.currentTarget),
        }, "Revoke")))))));
  };
  const revoke = async (k, button) => {
    const yes = await confirmDialog({
      title: `Revoke ${k.name}?`,
      message: "Tools and people using this key stop working at once. This cannot be undone.",
      confirm: "Revoke key", opener: button,
    });
    if (!yes) return;
    try {
      await api("DELETE", `/api/v1/keys/${enc(k.prefix)}`);
      toast(`${k.name} revoked`);
      await render();
      // The button went with its row: keep focus in the keys dialog.
      name.focus();
    } catch (err) { $("#dialog-error").textContent = `Could not revoke ${k.name}: ${err.message}`; }
  };
  const name = h("input", { id: "key-name", placeholder: "who or what uses it, e.g. finance Power BI" });
  const role = h("select", { id: "key-role" }, ["viewer", "editor", ...(state.me.role === "admin" ? ["admin"] : [])].map((r) => h("option", { value: r }, r)));
  const secret = h("div", { "aria-live": "polite" });
  dialog("API keys", [
    body, h("h3", {}, "Create a key"),
    h("label", { for: "key-name" }, "Name"), name,
    h("label", { for: "key-role" }, `Role (viewer: read feeds; editor: write and deploy in ${state.ws})`), role, secret,
  ], [
    { label: "Close" },
    { label: "Create key", primary: true, run: async () => {
      const k = await api("POST", "/api/v1/keys", { name: name.value, role: role.value, workspace: role.value === "admin" ? null : state.ws });
      secret.replaceChildren(h("p", {}, h("strong", {}, "Copy this key now: it is shown only once.")), copyRow("New key", k.secret));
      name.value = "";
      await render();
      return false;
    } },
  ]);
  render().catch((e) => { body.replaceChildren(h("p", { class: "error" }, e.message)); });
}

function shortcuts() {
  dialog("Keyboard shortcuts", [h("table", { class: "t" }, h("tbody", {}, [
    ["Ctrl+Enter", "Run without deploying"], ["Ctrl+Shift+Enter", "Deploy"], ["Ctrl+S", "Save the draft now"],
    ["Alt+N", "New feed"], ["/", "Search feeds"], ["Ctrl+F (in the editor)", "Find and replace"],
    ["Tab / Shift+Tab", "Indent (in the editor); Esc then Tab leaves it"], ["← → (on the tabs)", "Switch panels"],
  ].map(([k, v]) => h("tr", {}, h("td", {}, h("kbd", {}, k)), h("td", {}, v)))))], [{ label: "Close", primary: true }]);
}

// ---------------------------------------------------------------------------------------
// Wiring

function wire() {
  $("#login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    $("#login-error").textContent = "";
    try { await signIn($("#login-key").value.trim(), $("#login-remember").checked); $("#login-key").value = ""; }
    catch (err) { state.key = null; $("#login-error").textContent = err.status === 401 ? "That key is not valid (or was revoked)." : err.message; }
  });
  $("#logout-btn").addEventListener("click", () => signOut());
  $("#ws-select").addEventListener("change", (e) => switchWorkspace(e.target.value));
  $("#search").addEventListener("input", renderFeedList);
  $("#new-btn").addEventListener("click", newFeed);
  $("#keys-btn").addEventListener("click", keysDialog);
  $("#help-btn").addEventListener("click", shortcuts);
  $("#run-btn").addEventListener("click", runDoc);
  $("#deploy-btn").addEventListener("click", deployDoc);
  $("#delete-btn").addEventListener("click", deleteDoc);
  $("#params").addEventListener("submit", (e) => { e.preventDefault(); runDoc(); });
  const tabs = $("#tabs");
  for (const t of TABS) $(`#tab-${t}`).addEventListener("click", () => selectTab(t));
  tabs.addEventListener("keydown", (e) => {
    const i = TABS.indexOf(currentTab());
    if (e.key === "ArrowRight") selectTab(TABS[(i + 1) % TABS.length], true);
    else if (e.key === "ArrowLeft") selectTab(TABS[(i + TABS.length - 1) % TABS.length], true);
  });
  document.addEventListener("keydown", (e) => {
    const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(e.target.tagName) || e.target.isContentEditable;
    if (e.key === "/" && !typing) { e.preventDefault(); $("#search").focus(); }
    else if (e.altKey && e.key.toLowerCase() === "n" && canWrite()) { e.preventDefault(); newFeed(); }
    else if ((e.ctrlKey || e.metaKey) && e.key === "Enter" && state.doc && !typing) { e.preventDefault(); e.shiftKey ? deployDoc() : runDoc(); }
  });
  window.addEventListener("hashchange", () => {
    const { ws, feed } = parseHash();
    if (!state.key) return;
    if (ws && ws !== state.ws) switchWorkspace(ws).then(() => feed && openDoc(feed));
    else if (feed && feed !== state.doc?.name) openDoc(feed);
  });
}

wire();
const saved = sessionStorage.getItem("sluice.key") || localStorage.getItem("sluice.key");
if (saved) signIn(saved, !!localStorage.getItem("sluice.key")).catch(() => signOut());
else signOut();
// Warm the editor bundle while the user types their key.
loadEditorModule().catch(() => {});
