// rtv's web page: plain JS over the /v1 JSON API (no build step, no dependencies).
// Every piece of text from the index is put into the page with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const enc = new TextEncoder();
const dec = new TextDecoder();
const state = { index: null, thresholds: { suspicious: 0.2, dirty: 0.8 }, find: null };

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e[k] = v;
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function showError(msg) {
  const box = $("error");
  box.textContent = msg || "";
  box.hidden = !msg;
}

function headers(json = true) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  const token = sessionStorage.getItem("rtv-token");
  if (token) h["Authorization"] = "Bearer " + token;
  return h;
}

async function check(r) {
  if (r.ok) return r;
  let msg = r.status + " " + r.statusText;
  try { msg = (await r.json()).error.message; } catch (e) { /* not JSON */ }
  if (r.status === 401) {
    $("token-box").hidden = false;
    msg += " — enter the token above.";
  }
  throw new Error(msg);
}

async function api(path, body) {
  const opts = body === undefined ? { headers: headers(false) } : { method: "POST", headers: headers(), body: JSON.stringify(body) };
  const r = await check(await fetch(path, opts));
  return r.json();
}

const v1 = (op) => "v1/" + encodeURIComponent(state.index) + "/" + op;

// -- text with highlighted byte spans ---------------------------------------------------------------
// spans are [start, end) byte offsets into the UTF-8 text (as the API reports them)
function highlighted(text, spans) {
  const bytes = enc.encode(text);
  const out = document.createDocumentFragment();
  const sorted = (spans || []).map((s) => [s[0], s[1]]).sort((a, b) => a[0] - b[0]);
  let at = 0;
  for (const [s, e] of sorted) {
    if (e <= at) continue;
    const start = Math.max(s, at);
    if (start > at) out.append(dec.decode(bytes.slice(at, start)));
    out.append(el("mark", { textContent: dec.decode(bytes.slice(start, e)) }));
    at = e;
  }
  if (at < bytes.length) out.append(dec.decode(bytes.slice(at)));
  return out;
}

// every occurrence of `needle` in `text`, as byte spans
function spansOf(text, needle) {
  const spans = [];
  if (!needle) return spans;
  const t = enc.encode(text), n = enc.encode(needle);
  outer: for (let i = 0; i + n.length <= t.length; i++) {
    for (let j = 0; j < n.length; j++) if (t[i + j] !== n[j]) continue outer;
    spans.push([i, i + n.length]);
  }
  return spans;
}

// -- tabs and indexes -----------------------------------------------------------------------------
function showView(name) {
  for (const b of document.querySelectorAll(".tab")) b.classList.toggle("active", b.dataset.view === name);
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== "view-" + name;
  history.replaceState(null, "", "#" + name);
}

async function loadIndexes() {
  try {
    const info = await api("v1");
    const sel = $("index");
    sel.replaceChildren(...info.indexes.map((ix) => el("option", { value: ix.name, textContent: ix.name })));
    const rows = Object.fromEntries(info.indexes.map((ix) => [ix.name, ix]));
    const describe = () => {
      state.index = sel.value;
      const ix = rows[sel.value];
      $("index-info").textContent = ix ? `${ix.documents} documents · ${ix.passages} passages` +
        (ix.dense ? " · dense" : " · exact only") + (info.reranker ? " · reranker" : "") : "";
    };
    sel.onchange = describe;
    describe();
    showError("");
  } catch (e) {
    showError(e.message);
  }
}

// -- search ---------------------------------------------------------------------------------------
function stageBadges(stages) {
  const out = el("span", { class: "stages" });
  for (const [name, s] of Object.entries(stages || {})) {
    const score = typeof s.score === "number" ? " " + s.score.toFixed(3) : "";
    out.append(el("span", { class: "stage stage-" + name, dataset: { stage: name, rank: String(s.rank) },
                            textContent: `${name} #${s.rank}${score}` }), " ");
  }
  return out;
}

async function runSearch(ev) {
  ev.preventDefault();
  const rr = $("rerank").value;
  const body = { query: $("q").value, mode: $("mode").value, k: parseInt($("k").value, 10) || 10,
                 rerank: rr === "auto" ? "auto" : rr === "true", fusion: $("fusion").value };
  const where = $("where").value.trim();
  if (where) body.where = where;  // only documents whose metadata match (the --where language)
  $("search-status").textContent = "searching…";
  try {
    const res = await api(v1("query"), body);
    const list = $("search-results");
    list.replaceChildren(...res.results.map((h) => el("li",
      { class: "hit", dataset: { passageId: String(h.passage_id), docId: String(h.doc_id), rank: String(h.rank) } },
      el("div", { class: "hit-head" },
        el("strong", { class: "ext-id", textContent: h.ext_id ?? "doc " + h.doc_id }),
        el("span", { class: "muted", textContent: `doc ${h.doc_id} · bytes ${h.start}–${h.end} · score ${h.score.toFixed(4)}` }),
        stageBadges(h.stages)),
      el("div", { class: "hit-text" }, highlighted(h.text, h.spans)))));
    $("search-status").textContent = `${res.results.length} results · ${res.mode}` +
      (res.reranked ? " · reranked" : "") + ` · ${res.latency_ms.toFixed(1)} ms`;
    showError("");
  } catch (e) {
    $("search-status").textContent = "";
    showError(e.message);
  }
}

// -- count explorer -------------------------------------------------------------------------------
async function runCount(ev) {
  ev.preventDefault();
  const text = $("count-text").value;
  const n = parseInt($("count-n").value, 10) || 1;
  try {
    const [whole, grams] = await Promise.all([
      api(v1("count"), { query: text }),
      api(v1("ngrams"), { text, n, unit: $("count-unit").value }),
    ]);
    const total = $("count-total");
    total.replaceChildren(
      el("button", { type: "button", class: "linklike", id: "count-whole", textContent: `“${text}”`,
                     onclick: () => showFind(text, 0) }),
      ` occurs ${whole.count} times · ${grams.ngrams.length} ${n}-${grams.unit === "tokens" ? "token" : grams.unit === "chars" ? "character" : "byte"} n-grams · ${(whole.latency_ms + grams.latency_ms).toFixed(1)} ms`);
    total.dataset.count = String(whole.count);
    $("ngram-table").tBodies[0].replaceChildren(...grams.ngrams.map((g) => el("tr",
      { class: g.count ? "" : "zero", dataset: { ngram: g.ngram, count: String(g.count) }, onclick: () => showFind(g.ngram, 0) },
      el("td", { class: "gram", textContent: g.ngram }), el("td", { class: "num", textContent: String(g.count) }))));
    showError("");
  } catch (e) {
    showError(e.message);
  }
}

async function showFind(pattern, offset) {
  try {
    const page = await api(v1("find"), { query: pattern, offset, limit: 10, context: 60 });
    state.find = { pattern, next: page.next_offset };
    $("find-title").textContent = `“${pattern}”: ${page.count} occurrences` + (page.count ? ` (${offset + 1}–${offset + page.results.length})` : "");
    const items = page.results.map((r) => el("li", { class: "occurrence", dataset: { docId: String(r.doc_id), offset: String(r.offset) } },
      el("div", { class: "hit-head" },
        el("button", { type: "button", class: "linklike doc-link", textContent: r.ext_id ?? "doc " + r.doc_id,
                       onclick: () => showDoc(r.doc_id, r.ext_id, pattern) }),
        el("span", { class: "muted", textContent: `doc ${r.doc_id} · byte ${r.offset}` })),
      el("div", { class: "snippet" }, highlighted(r.snippet, spansOf(r.snippet, pattern)))));
    if (offset === 0) $("find-results").replaceChildren(...items);
    else $("find-results").append(...items);
    $("find-more").hidden = page.next_offset === null;
    showError("");
  } catch (e) {
    showError(e.message);
  }
}

async function showDoc(docId, extId, pattern) {
  try {
    const doc = await api(v1("extract"), { doc_id: docId });
    $("doc-title").textContent = `${extId ?? "doc " + docId} (document ${docId}, ${enc.encode(doc.text).length} bytes)`;
    const view = $("doc-view");
    view.replaceChildren(highlighted(doc.text, spansOf(doc.text, pattern)));
    view.hidden = false;
    const first = view.querySelector("mark");
    view.scrollTop = first ? Math.max(0, first.offsetTop - view.offsetTop - 60) : 0;  // the box scrolls, not the page
    showError("");
  } catch (e) {
    showError(e.message);
  }
}

// -- contamination --------------------------------------------------------------------------------
async function runBench(ev) {
  ev.preventDefault();
  const params = new URLSearchParams();
  for (const f of $("bench-fields").value.split(",").map((s) => s.trim()).filter(Boolean)) params.append("fields", f);
  params.set("unit", $("bench-unit").value);
  if ($("bench-window").value) params.set("window", $("bench-window").value);
  for (const t of $("bench-thresholds").value.split(",").map((s) => s.trim()).filter(Boolean)) params.append("thresholds", t);
  const file = $("bench-file").files[0];
  params.set("name", file ? file.name.replace(/\.[^.]*$/, "") : "pasted");
  const body = file ? await file.text() : $("bench-text").value;
  if (!body.trim()) { showError("paste benchmark entries (JSON lines) or choose a JSONL file"); return; }
  $("bench-status").textContent = "checking…";
  $("bucket-table").tBodies[0].replaceChildren();
  $("worst-table").tBodies[0].replaceChildren();
  $("histogram").replaceChildren();
  try {
    const h = headers(false);
    h["Content-Type"] = "application/x-ndjson";
    const r = await check(await fetch(v1("contamination") + "?" + params, { method: "POST", headers: h, body }));
    const reader = r.body.getReader();
    let buf = "", entries = 0, summary = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (value) buf += dec.decode(value, { stream: true });
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (!line.trim()) continue;
        const obj = JSON.parse(line);
        if (obj.type === "entry") {
          entries++;
          if (entries % 50 === 0) $("bench-status").textContent = `${entries} entries…`;
        } else if (obj.type === "summary") summary = obj;
      }
      if (done) break;
    }
    if (!summary) throw new Error("the server's answer ended before the summary");
    showSummary(summary);
    $("bench-status").textContent = `${summary.entries} entries · ${summary.latency_ms.toFixed(1)} ms`;
    showError("");
  } catch (e) {
    $("bench-status").textContent = "";
    showError(e.message);
  }
}

function showSummary(s) {
  const rows = ["clean", "suspicious", "dirty"].map((b) => el("tr", { dataset: { bucket: b, count: String(s.buckets[b]) } },
    el("td", { class: "bucket-" + b, textContent: b }), el("td", { class: "num", textContent: String(s.buckets[b]) }),
    el("td", { class: "num", textContent: (100 * s.rates[b]).toFixed(1) + "%" })));
  for (const [label, n] of [["too short", s.too_short], ["empty", s.empty]]) {
    if (n) rows.push(el("tr", {}, el("td", { textContent: label }), el("td", { class: "num", textContent: String(n) }), el("td")));
  }
  $("bucket-table").tBodies[0].replaceChildren(...rows);
  $("bench-summary").textContent = `${s.window}-${s.unit === "chars" ? "character" : "token"} windows · fields ${s.fields.join(", ")}` +
    ` · mean score ${s.mean_score === null ? "–" : s.mean_score.toFixed(3)} · ${s.thresholds.rule}`;
  const counts = s.histogram.counts, max = Math.max(1, ...counts);
  $("histogram").replaceChildren(...counts.map((c, i) => {
    const lo = i / counts.length;
    const kind = lo >= s.thresholds.dirty ? "dirty" : lo >= s.thresholds.suspicious ? "suspicious" : "clean";
    const bar = el("div", { class: "bar " + kind, title: `score ${lo.toFixed(2)}–${((i + 1) / counts.length).toFixed(2)}: ${c}`,
                            dataset: { count: String(c) } });
    bar.style.height = (100 * c / max) + "%";
    return bar;
  }));
  $("worst-table").tBodies[0].replaceChildren(...s.worst.map((w) => el("tr", { dataset: { id: w.id, bucket: w.bucket } },
    el("td", { textContent: w.id }), el("td", { class: "num", textContent: w.score.toFixed(3) }),
    el("td", { class: "bucket-" + w.bucket, textContent: w.bucket }),
    el("td", { class: "matched", textContent: w.matched_text ?? "" }),
    el("td", { class: "docs" }, ...(w.matches || []).map((m) => el("div", {},
      el("strong", { textContent: (m.ext_id ?? "doc " + m.doc_id) + ` @${m.offset}: ` }),
      m.snippet ? highlighted(m.snippet, spansOf(m.snippet, w.matched_text)) : ""))))));
}

// -- wiring ---------------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  for (const b of document.querySelectorAll(".tab")) b.addEventListener("click", () => showView(b.dataset.view));
  $("search-form").addEventListener("submit", runSearch);
  $("count-form").addEventListener("submit", runCount);
  $("find-more").addEventListener("click", () => state.find && state.find.next !== null && showFind(state.find.pattern, state.find.next));
  $("bench-form").addEventListener("submit", runBench);
  $("token").value = sessionStorage.getItem("rtv-token") || "";
  $("token").addEventListener("change", () => { sessionStorage.setItem("rtv-token", $("token").value); loadIndexes(); });
  const view = location.hash.slice(1);
  if (["search", "count", "contamination"].includes(view)) showView(view);
  loadIndexes();
});
