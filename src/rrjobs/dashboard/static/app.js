// rrjobs dashboard: plain JavaScript, no library, no build step.
// Reads server-sent events from /api/events through fetch() (EventSource cannot
// send an Authorization header: the token never goes into a URL).
"use strict";

const TOKEN_KEY = "rrjobs.dashboard.token";
const points = 60; // chart points per pipeline: the last 60 updates (a minute by default)
const SVG_NS = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);
const history = new Map(); // pipeline -> {push: [], handle: []}
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
  renderWorkers(snap.workers);
  if (snap.failures) renderFailures(snap.failures);
}

function renderPipelines(pipelines) {
  const body = $("pipelines").tBodies[0];
  const names = new Set(pipelines.map((p) => p.pipeline));
  for (const row of Array.from(body.rows)) {
    if (!names.has(row.dataset.pipeline)) row.remove();
  }
  for (const name of Array.from(history.keys())) {
    if (!names.has(name)) history.delete(name);
  }
  let queued = 0, flight = 0, failed = 0;
  pipelines.forEach((p, i) => {
    queued += p.active;
    flight += p.reserved;
    failed += p.counters.failed;
    let row = body.querySelector(`tr[data-pipeline="${CSS.escape(p.pipeline)}"]`);
    if (!row) row = newPipelineRow(p.pipeline);
    if (body.rows[i] !== row) body.insertBefore(row, body.rows[i] || null);
    const h = history.get(p.pipeline) || {push: [], handle: []};
    history.set(p.pipeline, h);
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
  if (action === "destroy" && !(await confirmDestroy(name))) {
    button.focus();
    return;
  }
  problem("");
  try {
    const r = await fetch(`/api/pipelines/${encodeURIComponent(name)}/${action}`, {
      method: "POST", headers: headers({"Content-Type": "application/json"}), body: "{}"});
    if (r.status === 401) return askForToken("refused");
    const body = await r.json();
    if (!r.ok) {
      problem(`${action} ${name} failed: ${body.error.message}`);
      return;
    }
    const done = {pause: "paused", resume: "resumed", destroy: "destroyed"}[action];
    say(`Pipeline ${name} ${done}.`);
  } catch (err) {
    problem(`${action} ${name} failed: ${err}`);
  }
}

function confirmDestroy(name) {
  const dialog = $("confirm");
  $("confirm-title").textContent = `Destroy pipeline ${name}?`;
  $("confirm-text").textContent = `Pipeline ${name} stops and is removed; its queued jobs ` +
    "leave this server (a durable broker keeps them). This cannot be undone here.";
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "destroy"),
                            {once: true});
    dialog.showModal();
  });
}

// -- start ------------------------------------------------------------------------------

$("forget-token").hidden = !token();
connect();
