// rrjobs dashboard: plain JavaScript, no library, no build step.
// Reads server-sent events from /api/events through fetch() (EventSource cannot
// send an Authorization header: the token never goes into a URL).
"use strict";

const TOKEN_KEY = "rrjobs.dashboard.token";
const points = 60; // chart points per pipeline: the last 60 updates (a minute by default)
const SVG_NS = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);
const rateHistory = new Map(); // pipeline -> {push: [], handle: []}
const deadSeen = new Map(); // pipeline -> its dead_lettered count in the last snapshot
let stream = null; // the AbortController of the running event stream
let retryDelay = 1000;

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function headers(extra) {
  const h = Object.assign({}, extra || {});
  const t = token();
  if (t) h["Authorization"] = "Bearer " + t;
  return h;
}

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function setConnection(state, text) {
  const c = $("connection");
  c.dataset.state = state;
  c.textContent = text;
}

function say(text) {
  $("notice").textContent = text;
}

function problem(text) {
  $("problem").textContent = text;
}

function rate(v) {
  if (v === null || v === undefined) return "–";
  return v < 100 ? v.toFixed(1) : v.toFixed(0);
}

function bytes(n) {
  if (n < 1024) return n + " B";
  return n < 1048576 ? (n / 1024).toFixed(1) + " KiB" : (n / 1048576).toFixed(1) + " MiB";
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

const enc = encodeURIComponent;

function seconds(s) {
  if (s < 60) return s.toFixed(1) + " s";
  const m = Math.floor(s / 60);
  return m + " min " + Math.floor(s % 60) + " s";
}

// -- authentication ---------------------------------------------------------------------

function askForToken(reason) {
  document.body.classList.add("locked");
  const form = $("token-form");
  form.hidden = false;
  $("token-title").textContent = reason === "refused" ? "Token refused" : "Token required";
  $("token-reason").textContent = reason === "refused"
    ? "The dashboard refused this token. Enter the right one; it is kept in this tab only."
    : "This dashboard needs its access token (dashboard.token, or the RPC token). " +
      "It is kept in this tab only.";
  setConnection("locked", reason === "refused" ? "token refused" : "token required");
  $("token-input").focus();
}

$("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const value = $("token-input").value.trim();
  if (!value) return;
  sessionStorage.setItem(TOKEN_KEY, value);
  $("token-input").value = "";
  $("token-form").hidden = true;
  $("forget-token").hidden = false;
  connect();
});

// A request was refused: the token is wrong (or gone); ask again.
function refused() {
  sessionStorage.removeItem(TOKEN_KEY);
  $("forget-token").hidden = true;
  if (stream) stream.abort();
  askForToken("refused");
}

// One API call: {ok, status, body}, or null once a 401 asked for the token again.
async function api(method, path, body) {
  const init = {method, cache: "no-store",
                headers: headers(body === undefined ? {} : {"Content-Type": "application/json"})};
  if (body !== undefined) init.body = JSON.stringify(body);
  const r = await fetch(path, init);
  if (r.status === 401) {
    refused();
    return null;
  }
  let data = {};
  try {
    data = await r.json();
  } catch (err) {
    data = {error: {type: "HTTP", message: "HTTP " + r.status}};
  }
  return {ok: r.ok, status: r.status, body: data};
}

function failure(r) {
  return r.body.error ? r.body.error.message : "HTTP " + r.status;
}

$("forget-token").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  $("forget-token").hidden = true;
  if (stream) stream.abort();
  askForToken("required");
});

// -- the event stream -------------------------------------------------------------------

async function connect() {
  if (stream) stream.abort();
  const controller = new AbortController();
  stream = controller;
  setConnection("connecting", "connecting…");
  let response;
  try {
    response = await fetch("/api/events", {headers: headers(), signal: controller.signal,
                                           cache: "no-store"});
  } catch (err) {
    if (controller.signal.aborted) return;
    return reconnect("cannot reach the dashboard");
  }
  if (response.status === 401) {
    const had = Boolean(token());
    sessionStorage.removeItem(TOKEN_KEY);
    $("forget-token").hidden = true;
    return askForToken(had ? "refused" : "required");
  }
  if (!response.ok) return reconnect("the dashboard answered HTTP " + response.status);
  $("token-form").hidden = true;
  document.body.classList.remove("locked");
  $("forget-token").hidden = !token();
  setConnection("live", "live");
  retryDelay = 1000;
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, {stream: true});
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        handleEvent(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
  } catch (err) {
    if (controller.signal.aborted) return;
  }
  if (!controller.signal.aborted) reconnect("the stream ended");
}

function reconnect(why) {
  setConnection("down", why + "; retrying…");
  setTimeout(connect, retryDelay);
  retryDelay = Math.min(retryDelay * 2, 15000);
}

function handleEvent(block) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
  }
  if (name === "snapshot") render(JSON.parse(data.join("\n")));
  else if (name === "closing") setConnection("down", "the server is stopping");
}

// -- rendering --------------------------------------------------------------------------

function render(snap) {
  renderPipelines(snap.pipelines);
  renderChoices(snap.pipelines);
  renderWorkers(snap.workers);
  if (snap.failures) renderFailures(snap.failures);
}

function renderPipelines(pipelines) {
  const body = $("pipelines").tBodies[0];
  const names = new Set(pipelines.map((p) => p.pipeline));
  for (const row of Array.from(body.rows)) {
    if (!names.has(row.dataset.pipeline)) row.remove();
  }
  for (const name of Array.from(rateHistory.keys())) {
    if (!names.has(name)) rateHistory.delete(name);
  }
  let queued = 0, flight = 0, failed = 0;
  pipelines.forEach((p, i) => {
    queued += p.active;
    flight += p.reserved;
    failed += p.counters.failed;
    let row = body.querySelector(`tr[data-pipeline="${CSS.escape(p.pipeline)}"]`);
    if (!row) row = newPipelineRow(p.pipeline);
    if (body.rows[i] !== row) body.insertBefore(row, body.rows[i] || null);
    const h = rateHistory.get(p.pipeline) || {push: [], handle: []};
    rateHistory.set(p.pipeline, h);
    if (p.rates.push !== null) {
      h.push.push(p.rates.push);
      h.handle.push(p.rates.handle);
      while (h.push.length > points) { h.push.shift(); h.handle.shift(); }
    }
    const cells = row.cells;
    const state = cells[1].firstChild;
    state.textContent = p.state;
    state.className = "state state-" + p.state;
    if (p.error_message) state.title = p.error_message;
    else state.removeAttribute("title");
    const values = [p.active, p.delayed, p.reserved, p.counters.ok, p.counters.failed,
                    p.counters.dead_lettered, rate(p.rates.push), rate(p.rates.handle)];
    values.forEach((v, j) => { cells[2 + j].textContent = String(v); });
    cells[6].classList.toggle("bad", p.counters.failed > 0);
    cells[7].classList.toggle("bad", p.counters.dead_lettered > 0);
    drawChart(cells[10].firstChild, h, p);
    const [pause, resume] = cells[11].querySelectorAll("button");
    pause.disabled = !p.ready;
    resume.disabled = p.ready;
  });
  const n = pipelines.length;
  $("summary").textContent = n === 0 ? "No pipelines." :
    `${n} pipeline${n === 1 ? "" : "s"}: ${queued} queued, ${flight} in flight, ` +
    `${failed} failed in all.`;
}

function newPipelineRow(name) {
  const row = el("tr", {"data-pipeline": name});
  const labels = ["Pipeline", "State", "Queued", "Delayed", "In flight", "OK", "Failed",
                  "Dead-lettered", "Pushed/s", "Handled/s", "Throughput", "Actions"];
  labels.forEach((label, i) => {
    const cell = el(i === 0 ? "th" : "td", {"data-label": label});
    if (i === 0) cell.setAttribute("scope", "row");
    if (i >= 2 && i <= 9) cell.className = "num";
    row.appendChild(cell);
  });
  row.cells[0].textContent = name;
  row.cells[1].appendChild(el("span", {class: "state"}));
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("viewBox", "0 0 120 32");
  svg.setAttribute("role", "img");
  svg.setAttribute("preserveAspectRatio", "none");
  const frame = document.createElementNS(SVG_NS, "rect");
  for (const [k, v] of Object.entries({class: "frame", x: 0, y: 0, width: 120, height: 32})) {
    frame.setAttribute(k, String(v));
  }
  svg.appendChild(frame);
  for (const cls of ["line-push", "line-handle"]) {
    const line = document.createElementNS(SVG_NS, "polyline");
    line.setAttribute("class", cls);
    svg.appendChild(line);
  }
  row.cells[10].appendChild(svg);
  const actions = el("div", {class: "actions"});
  row.cells[11].appendChild(actions);
  for (const action of ["pause", "resume", "destroy"]) {
    const b = el("button", {type: "button", "data-action": action,
                            "aria-label": `${action[0].toUpperCase()}${action.slice(1)} ${name}`},
                 action[0].toUpperCase() + action.slice(1));
    if (action === "destroy") b.className = "danger";
    b.addEventListener("click", () => act(name, action, b));
    actions.appendChild(b);
  }
  return row;
}

// A throughput chart by hand: two polylines (pushed/s, handled/s) scaled to the
// larger of the two over the last 60 updates, the newest at the right edge.
function drawChart(svg, h, p) {
  const top = Math.max(1, ...h.push, ...h.handle);
  const line = (values) => values.map((v, i) => {
    const x = (120 * (i + points - values.length)) / (points - 1);
    const y = 31 - (30 * v) / top;
    return x.toFixed(1) + "," + y.toFixed(1);
  }).join(" ");
  svg.querySelector(".line-push").setAttribute("points", line(h.push));
  svg.querySelector(".line-handle").setAttribute("points", line(h.handle));
  svg.setAttribute("aria-label", `${p.pipeline}: ${rate(p.rates.push)} pushed/s, ` +
    `${rate(p.rates.handle)} handled/s; peak ${rate(top)}/s over the last ${points} updates`);
}

function renderWorkers(w) {
  $("workers-summary").textContent =
    `${w.busy} busy, ${w.idle} idle of ${w.total} worker${w.total === 1 ? "" : "s"}.`;
  $("longest").textContent = w.longest
    ? `Longest-running: ${w.longest.name} (${w.longest.job_id}) on ${w.longest.pipeline}, ` +
      `${seconds(w.longest.seconds)}.`
    : "No job is running.";
  const body = $("running").tBodies[0];
  body.replaceChildren(...w.running.map((r) => {
    const row = el("tr");
    const cells = [["Worker", String(r.worker)], ["Job", r.job_id], ["Name", r.name],
                   ["Pipeline", r.pipeline], ["Running for", seconds(r.seconds)]];
    cells.forEach(([label, text], i) => {
      const c = el("td", {"data-label": label}, text);
      if (i === 4) c.className = "num";
      row.appendChild(c);
    });
    return row;
  }));
  $("running").hidden = w.running.length === 0;
}

function renderFailures(failures) {
  $("failures-empty").textContent = "No failures.";
  $("failures-empty").hidden = failures.length > 0;
  $("failures").replaceChildren(...failures.map((f) => {
    const item = el("li", {class: "failure"});
    const head = el("p", {class: "failure-head"});
    head.appendChild(el("strong", {}, f.name));
    head.appendChild(document.createTextNode(` on ${f.pipeline} · job `));
    head.appendChild(el("code", {}, f.job_id));
    head.appendChild(document.createTextNode(
      ` · attempt ${f.attempt} · ${f.outcome} · ${new Date(f.time * 1000).toLocaleTimeString()}`));
    item.appendChild(head);
    item.appendChild(el("p", {class: "failure-error"}, f.error));
    const details = el("details");
    details.appendChild(el("summary", {}, "Traceback"));
    details.appendChild(el("pre", {}, f.traceback));
    item.appendChild(details);
    return item;
  }));
}

// -- actions ----------------------------------------------------------------------------

async function act(name, action, button) {
  if (action === "destroy" && !(await confirmAction(
    `Destroy pipeline ${name}?`,
    `Pipeline ${name} stops and is removed; its queued jobs leave this server ` +
    "(a durable broker keeps them). This cannot be undone here.", "Destroy"))) {
    button.focus();
    return;
  }
  problem("");
  try {
    const r = await api("POST", `/api/pipelines/${enc(name)}/${action}`, {});
    if (!r) return;
    if (!r.ok) return problem(`${action} ${name} failed: ${failure(r)}`);
    const done = {pause: "paused", resume: "resumed", destroy: "destroyed"}[action];
    say(`Pipeline ${name} ${done}.`);
  } catch (err) {
    problem(`${action} ${name} failed: ${err}`);
  }
}

// Ask in the modal dialog (Cancel has the focus; Escape cancels): resolves to true or false.
function confirmAction(title, text, button) {
  const dialog = $("confirm");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-yes").textContent = button;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"),
                            {once: true});
    dialog.showModal();
  });
}

// -- tabs -------------------------------------------------------------------------------

const tabs = [$("tab-overview"), $("tab-dead-letters")];

function showTab(tab, focus) {
  for (const t of tabs) {
    const on = t === tab;
    t.setAttribute("aria-selected", String(on));
    t.tabIndex = on ? 0 : -1;
    $(t.getAttribute("aria-controls")).hidden = !on;
  }
  if (focus) tab.focus();
  const hash = tab === tabs[1] ? "#dead-letters" : "";
  if (location.hash !== hash) history.replaceState(null, "", hash || location.pathname);
  if (tab === tabs[1]) loadDeadLetters();
}

tabs.forEach((tab, i) => {
  tab.addEventListener("click", () => showTab(tab, false));
  tab.addEventListener("keydown", (ev) => { // the arrow keys move between tabs
    const to = {ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1}[ev.key];
    if (to === undefined) return;
    ev.preventDefault();
    showTab(tabs[(to + tabs.length) % tabs.length], true);
  });
});

function deadLettersShown() {
  return !$("view-dead-letters").hidden;
}

// -- dead letters -----------------------------------------------------------------------

let listing = 0; // the number of the latest list request: an older answer is ignored
let peeked = null; // {name, id, button} of the letter shown in the peek panel

// The pipeline choice follows the snapshots; the list is read again when the chosen
// pipeline dead-letters a job (never on every snapshot: a store may be a broker's queue).
function renderChoices(pipelines) {
  const select = $("dl-pipeline");
  const key = pipelines.map((p) => p.pipeline + (p.dead_letter_read ? "" : "!")).join(" ");
  if (select.dataset.key !== key) {
    const current = select.value;
    select.dataset.key = key;
    select.replaceChildren(...pipelines.map((p) => el("option", {value: p.pipeline},
      p.dead_letter_read ? p.pipeline : `${p.pipeline} (not readable)`)));
    const first = pipelines.find((p) => p.dead_letter_read) || pipelines[0];
    const keep = pipelines.some((p) => p.pipeline === current);
    select.value = keep ? current : (first ? first.pipeline : "");
    if (!keep && deadLettersShown()) loadDeadLetters();
  }
  for (const p of pipelines) {
    const before = deadSeen.get(p.pipeline);
    deadSeen.set(p.pipeline, p.counters.dead_lettered);
    if (p.pipeline === select.value && before !== undefined &&
        before !== p.counters.dead_lettered && deadLettersShown()) loadDeadLetters();
  }
}

async function loadDeadLetters() {
  const name = $("dl-pipeline").value;
  if (!name) return;
  const mine = ++listing;
  const summary = $("dl-summary");
  let r;
  try {
    r = await api("GET", `/api/pipelines/${enc(name)}/dead-letters`);
  } catch (err) {
    if (mine === listing) problem(`Listing the dead letters of ${name} failed: ${err}`);
    return;
  }
  if (!r || mine !== listing) return;
  const table = $("dead-letters");
  const unreadable = $("dl-unreadable");
  const letters = r.ok ? r.body.dead_letters : [];
  unreadable.hidden = r.ok || r.body.error.type !== "CapabilityError";
  if (r.ok) {
    const more = letters.length === r.body.limit ? ` (the oldest ${r.body.limit})` : "";
    summary.textContent = letters.length === 0 ? `No dead letters in ${name}.` :
      `${plural(letters.length, "dead letter")} in ${name}${more}, oldest first.`;
  } else if (!unreadable.hidden) {
    unreadable.textContent = r.body.error.message;
    summary.textContent = `The dead letters of ${name} cannot be browsed here.`;
  } else {
    summary.textContent = "";
    problem(`Listing the dead letters of ${name} failed: ${failure(r)}`);
  }
  table.tBodies[0].replaceChildren(...letters.map((d) => letterRow(name, d)));
  table.hidden = letters.length === 0;
  $("dl-replay-all").disabled = letters.length === 0;
  $("dl-purge").disabled = letters.length === 0;
  if (peeked && (peeked.name !== name || !letters.some((d) => d.id === peeked.id))) closePeek();
}

function letterRow(name, d) {
  const row = el("tr", {"data-id": d.id});
  const cells = [["Job", d.id], ["Name", d.name], ["Attempts", String(d.attempts)],
                 ["Failed at", d.failed_at || "–"], ["Error", d.error || "–"],
                 ["Size", bytes(d.size)]];
  cells.forEach(([label, text], i) => {
    const cell = el(i === 0 ? "th" : "td", {"data-label": label});
    if (i === 0) {
      cell.setAttribute("scope", "row");
      cell.appendChild(el("code", {}, text));
    } else {
      cell.textContent = text;
    }
    if (label === "Attempts" || label === "Size") cell.className = "num";
    if (label === "Error") cell.className = "error";
    row.appendChild(cell);
  });
  const actions = el("div", {class: "actions"});
  const peekButton = el("button", {type: "button", "aria-label": `Peek at ${d.id}`}, "Peek");
  peekButton.addEventListener("click", () => peek(name, d.id, peekButton));
  const replayButton = el("button", {type: "button", "aria-label": `Replay ${d.id}`}, "Replay");
  replayButton.addEventListener("click", () => replay(name, [d.id]));
  actions.append(peekButton, replayButton);
  row.appendChild(el("td", {"data-label": "Actions"})).appendChild(actions);
  return row;
}

function field(list, term, value) {
  list.appendChild(el("dt", {}, term));
  list.appendChild(el("dd", {}, value));
}

async function peek(name, id, button) {
  problem("");
  let r;
  try {
    r = await api("GET", `/api/pipelines/${enc(name)}/dead-letters/${enc(id)}`);
  } catch (err) {
    return problem(`Peeking at ${id} failed: ${err}`);
  }
  if (!r) return;
  if (!r.ok) return problem(`Peeking at ${id} failed: ${failure(r)}`);
  const d = r.body.dead_letter;
  $("peek-title").textContent = `Dead letter ${d.id}`;
  const list = $("peek-fields");
  list.replaceChildren();
  field(list, "Name", d.name);
  field(list, "Replays into", d.pipeline);
  field(list, "Attempts", String(d.attempts));
  field(list, "Failed at", d.failed_at || "–");
  field(list, "Error", d.error || "–");
  field(list, "Priority", String(d.priority));
  for (const [key, values] of Object.entries(d.headers)) {
    if (!key.startsWith("rr_")) field(list, `Header ${key}`, values.join(", "));
  }
  const kind = {json: "JSON", text: "text", binary: "binary"}[d.payload_format];
  $("peek-payload-title").textContent = `Payload (${kind}, ${bytes(d.payload_size)})`;
  const pre = $("peek-payload");
  pre.textContent = d.payload_text === null
    ? `${d.payload_size} bytes that are not UTF-8 text: rrjobs dlq peek --json gives their base64.`
    : d.payload_text + (d.payload_truncated ? "\n… (cut here: rrjobs dlq peek shows it all)" : "");
  pre.classList.toggle("binary", d.payload_text === null);
  peeked = {name, id, button};
  const panel = $("peek");
  panel.hidden = false;
  panel.focus();
}

function closePeek() {
  const was = peeked;
  peeked = null;
  const panel = $("peek");
  const focused = panel.contains(document.activeElement);
  panel.hidden = true;
  if (focused && was && was.button.isConnected) was.button.focus();
  else if (focused) $("dl-summary").focus();
}

// ids: the job ids to replay, or null for every dead letter of the pipeline.
async function replay(name, ids) {
  problem("");
  let r;
  try {
    r = await api("POST", `/api/pipelines/${enc(name)}/dead-letters/replay`,
                  ids ? {ids} : {all: true});
  } catch (err) {
    return problem(`Replaying in ${name} failed: ${err}`);
  }
  if (!r) return;
  if (!r.ok) return problem(`Replaying in ${name} failed: ${failure(r)}`);
  const done = r.body.replayed;
  say(`Replayed ${plural(done.length, "dead letter")} of ${name}` +
      (ids && done.length ? `: ${done.join(", ")}.` : "."));
  if (r.body.missing.length) problem(`No dead letter in ${name} for: ${r.body.missing.join(", ")}.`);
  if (peeked && done.includes(peeked.id)) closePeek();
  await loadDeadLetters();
  const active = document.activeElement; // a row's button went with its row
  if (!active || active === document.body || active.disabled) $("dl-summary").focus();
}

async function purge(name) {
  const listed = $("dead-letters").tBodies[0].rows.length;
  const yes = await confirmAction(
    `Purge the dead letters of ${name}?`,
    `Every dead letter of pipeline ${name} (${listed} listed) is deleted for good, none ` +
    "is replayed. This cannot be undone.", "Purge");
  if (!yes) {
    $("dl-purge").focus();
    return;
  }
  problem("");
  let r;
  try {
    r = await api("POST", `/api/pipelines/${enc(name)}/dead-letters/purge`, {});
  } catch (err) {
    return problem(`Purging ${name} failed: ${err}`);
  }
  if (!r) return;
  if (!r.ok) return problem(`Purging ${name} failed: ${failure(r)}`);
  say(`Purged ${plural(r.body.purged, "dead letter")} of ${name}.`);
  closePeek();
  await loadDeadLetters();
  $("dl-summary").focus();
}

$("dl-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  loadDeadLetters();
});
$("dl-pipeline").addEventListener("change", () => {
  closePeek();
  loadDeadLetters();
});
$("dl-replay-all").addEventListener("click", () => replay($("dl-pipeline").value, null));
$("dl-purge").addEventListener("click", () => purge($("dl-pipeline").value));
$("peek-close").addEventListener("click", closePeek);
$("peek").addEventListener("keydown", (ev) => { if (ev.key === "Escape") closePeek(); });
$("peek-replay").addEventListener("click", () => { if (peeked) replay(peeked.name, [peeked.id]); });

// -- start ------------------------------------------------------------------------------

$("forget-token").hidden = !token();
if (location.hash === "#dead-letters") showTab(tabs[1], false);
connect();
