// The stratoflow web console: plain JavaScript, no build step, no network beyond the
// engine's own REST API (same origin: the local server's cookie, or `stratoflow console`
// signing for a deployed stack). Pages are routed by the URL's hash, so every page has a
// stable URL and the back button works:
//   #/                          workflows
//   #/workflows/<id>            a workflow: versions, graph, runs, trigger form
//   #/runs/<id>                 a run: live graph, timeline, tasks
//   #/runs/<id>/tasks/<task>    the same, with a task's attempts and log open
"use strict";

const POLL_MS = 1000;
const FINAL_RUN = new Set(["succeeded", "failed", "cancelled"]);
// State is shown by icon and word as well as colour (app.css colours data-state).
const STATES = {
  pending: "○",
  queued: "◔",
  waiting: "‖",
  running: "▶",
  up_for_retry: "↻",
  succeeded: "✓",
  failed: "✗",
  upstream_failed: "⊘",
  skipped: "↷",
  cancelled: "■",
  compensating: "↺",
};
// A group shows the state that most needs looking at: live work first, then failures.
const GROUP_PRIORITY = [
  "running", "up_for_retry", "queued", "waiting", "failed", "upstream_failed",
  "cancelled", "pending", "skipped", "succeeded",
];
const TABLE_ROWS = 200;
const LOG_PAGE = 256 * 1024; // characters of a log fetched at a time
const GANTT_ROWS = 300;

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// A path segment as the API expects it: run ids keep their '@' and ':' (the CLI sends
// them so too), everything else that could end the segment is escaped.
function seg(text) {
  return encodeURIComponent(text).replace(/%40/g, "@").replace(/%3A/gi, ":");
}

async function api(method, path, { body, headers } = {}) {
  const init = { method, headers: { ...(headers || {}) }, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, `Cannot reach the stratoflow engine at ${location.origin} ` +
      "(is `stratoflow local up` or `stratoflow console` still running?)");
  }
  let doc = null;
  try {
    doc = await resp.json();
  } catch (err) {
    doc = null;
  }
  if (!resp.ok) {
    let message = (doc && doc.message) || `HTTP ${resp.status}`;
    if (resp.status === 401 || resp.status === 403) {
      message += " — open the console with the link `stratoflow local up` printed " +
        "(it carries ?token=…), or through `stratoflow console`.";
    }
    throw new ApiError(resp.status, message);
  }
  hideBanner();
  return doc;
}

// ---------------------------------------------------------------- DOM helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function esc(text) {
  return String(text).replace(/[&<>"']/g, (c) => (
    { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function stateBadge(state) {
  return h("span", { class: "badge", "data-state": state || "none" },
    `${STATES[state] || "·"} ${state || "—"}`);
}

function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString();
}

function duration(a, b) {
  if (!a) return "";
  const ms = (b ? new Date(b) : new Date()) - new Date(a);
  if (!(ms >= 0)) return "";
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
}

const main = () => document.getElementById("main");

function banner(message) {
  const el = document.getElementById("banner");
  el.textContent = message;
  el.hidden = false;
}

function hideBanner() {
  document.getElementById("banner").hidden = true;
}

function page(title, ...content) {
  document.title = `${title} · stratoflow`;
  const root = main();
  root.replaceChildren(...content);
  return root;
}

function failure(err, what) {
  if (err.status === 404) {
    return page("Not found", h("h1", { text: `${what} not found` }),
      h("p", { class: "error", role: "alert", text: err.message }),
      h("p", {}, h("a", { href: "#/", text: "Back to the workflows" })));
  }
  return page("Error", h("h1", { text: `Cannot show ${what}` }),
    h("p", { class: "error", role: "alert", text: err.message }),
    h("p", {}, h("button", { type: "button", onclick: () => route(), text: "Try again" })));
}

// ---------------------------------------------------------------- routing

let current = null; // the page on screen: { key, stop(), openTask?(id) }

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean)
    .map((p) => { try { return decodeURIComponent(p); } catch (e) { return p; } });
  if (parts[0] === "runs" && parts[1] && current && current.key === `run:${parts[1]}`) {
    current.openTask(parts[2] === "tasks" ? parts[3] : null); // same run: keep the graph
    return;
  }
  if (current) current.stop();
  current = null;
  hideBanner();
  if (parts.length === 0) current = workflowsPage();
  else if (parts[0] === "workflows" && parts.length === 2) current = workflowPage(parts[1]);
  else if (parts[0] === "runs" && parts.length >= 2) {
    current = runPage(parts[1], parts[2] === "tasks" ? parts[3] : null);
  } else {
    page("Not found", h("h1", { text: "No such page" }),
      h("p", {}, h("a", { href: "#/", text: "Back to the workflows" })));
  }
}

function runLink(runId) {
  return h("a", { href: `#/runs/${seg(runId)}`, text: runId });
}

// A poller that runs `step` every POLL_MS until `stop()`, or at three times the step's own
// duration if longer (a 10,000-task run's document takes a few hundred ms to make: the
// page must not keep the engine busy); a failure shows the banner and it goes on trying
// (the engine may come back).
function poller(step) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    timer = null;
    if (stopped) return;
    let again = true;
    const started = performance.now();
    try {
      again = await step();
    } catch (err) {
      banner(err.message);
    }
    const delay = Math.max(POLL_MS, 3 * (performance.now() - started));
    if (!stopped && again !== false) timer = setTimeout(tick, delay);
  };
  timer = setTimeout(tick, POLL_MS);
  return {
    stop() { stopped = true; if (timer) clearTimeout(timer); },
  };
}

// ---------------------------------------------------------------- workflows

function workflowsPage() {
  const state = { stopped: false };
  page("Workflows", h("h1", { text: "Workflows" }), h("p", { class: "muted", text: "Loading…" }));
  load();
  return { key: "workflows", stop() { state.stopped = true; } };

  async function load() {
    let doc;
    try {
      doc = await api("GET", "/workflows");
    } catch (err) {
      if (!state.stopped) failure(err, "the workflows");
      return;
    }
    if (state.stopped) return;
    const rows = doc.workflows.map((w) => h("tr", { "data-workflow": w.workflow_id },
      h("th", { scope: "row" }, h("a", { href: `#/workflows/${seg(w.workflow_id)}`, text: w.workflow_id })),
      h("td", { text: w.active_version ?? "inactive" }),
      h("td", { text: w.schedule ? `${w.schedule} (${w.timezone})` : "—" }),
      h("td", { text: w.next_run ? when(w.next_run) : "—" }),
      h("td", {}, pauseButton(w)),
      h("td", {}, w.last_run ? runLink(w.last_run) : "—"),
      h("td", {}, w.last_status ? stateBadge(w.last_status) : "—")));
    const table = rows.length ? h("table", { class: "list", id: "workflows" },
      h("thead", {}, h("tr", {}, ["Workflow", "Active version", "Schedule", "Next run",
        "Schedule paused", "Last run", "Status"].map((t) => h("th", { scope: "col", text: t })))),
      h("tbody", {}, rows))
      : h("p", { class: "muted" }, "No workflows yet. Drop a workflow file into the folder ",
        h("code", { text: "stratoflow local up" }), " serves, or ",
        h("code", { text: "stratoflow upload FILE" }), ".");
    const errors = doc.load_errors.length ? [
      h("h2", { text: "Rejected uploads" }),
      h("table", { class: "list", id: "load-errors" },
        h("thead", {}, h("tr", {}, ["File", "Error", "At"].map((t) => h("th", { scope: "col", text: t })))),
        h("tbody", {}, doc.load_errors.map((e) => h("tr", {},
          h("td", { text: e.source }), h("td", {}, h("pre", { class: "inline", text: e.message })),
          h("td", { text: when(e.at) }))))),
    ] : [];
    page("Workflows", h("h1", { text: "Workflows" }), table, ...errors);
  }

  function pauseButton(w) {
    const button = h("button", {
      type: "button", class: "toggle", "aria-pressed": String(w.paused),
      "aria-label": `${w.workflow_id}: schedule ${w.paused ? "paused" : "active"}; press to ${w.paused ? "resume" : "pause"}`,
      text: w.paused ? "‖ paused" : "▶ active",
    });
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        const doc = await api("POST", `/workflows/${seg(w.workflow_id)}/${w.paused ? "unpause" : "pause"}`);
        w.paused = doc.paused;
        button.setAttribute("aria-pressed", String(w.paused));
        button.textContent = w.paused ? "‖ paused" : "▶ active";
      } catch (err) {
        banner(err.message);
      } finally {
        button.disabled = false;
      }
    });
    return button;
  }
}

// ---------------------------------------------------------------- a workflow

function workflowPage(workflowId) {
  const state = { stopped: false, next: null, runs: [] };
  page(workflowId, h("h1", { text: workflowId }), h("p", { class: "muted", text: "Loading…" }));
  load();
  return { key: `workflow:${workflowId}`, stop() { state.stopped = true; } };

  async function load() {
    let wf;
    try {
      wf = await api("GET", `/workflows/${seg(workflowId)}`);
    } catch (err) {
      if (!state.stopped) failure(err, `Workflow ${workflowId}`);
      return;
    }
    if (state.stopped) return;
    const graphBox = h("div", { class: "graph-box" });
    const runsBody = h("tbody", {});
    const more = h("button", { type: "button", hidden: true, text: "Older runs", onclick: () => loadRuns() });
    const filter = h("select", { id: "run-filter", "aria-label": "Show runs with status",
      onchange: () => showRuns() },
    ["all", "running", "queued", "succeeded", "failed", "cancelled"].map((s) => h("option", { value: s, text: s })));
    const versions = h("table", { class: "list", id: "versions" },
      h("thead", {}, h("tr", {}, ["Version", "Created", "Source", "Hash", ""].map((t) => h("th", { scope: "col", text: t })))),
      h("tbody", {}, [...wf.versions].reverse().map((v) => h("tr", { "data-version": v.version },
        h("th", { scope: "row", text: v.version === wf.active_version ? `${v.version} (active)` : v.version }),
        h("td", { text: when(v.created_at) }), h("td", { text: v.source || "—" }),
        h("td", {}, h("code", { text: (v.hash || "").slice(0, 12) })),
        h("td", {}, h("button", { type: "button", text: "Show graph",
          onclick: () => showGraph(graphBox, workflowId, v.version, { plain: true }) }))))));
    page(workflowId,
      h("p", { class: "crumbs" }, h("a", { href: "#/", text: "Workflows" }), " / "),
      h("h1", { text: workflowId }),
      h("p", {}, `Active version ${wf.active_version ?? "none"} · `,
        wf.schedule ? `schedule ${wf.schedule} (${wf.timezone}), next ${when(wf.next_run)}` : "no schedule",
        wf.paused ? " · paused" : ""),
      triggerForm(wf),
      h("h2", { text: "Graph" }), graphBox,
      h("h2", { text: "Runs" }),
      h("p", {}, h("label", { for: "run-filter", text: "Status " }), filter),
      h("table", { class: "list", id: "runs" },
        h("thead", {}, h("tr", {}, ["Run", "Status", "Trigger", "Version", "Started", "Finished"].map((t) => h("th", { scope: "col", text: t })))),
        runsBody),
      more,
      h("h2", { text: "Versions" }), versions, compareForm(wf));
    if (wf.active_version) showGraph(graphBox, workflowId, wf.active_version, { plain: true });
    else graphBox.replaceChildren(h("p", { class: "muted", text: "No active version." }));
    loadRuns();

    async function loadRuns() {
      more.disabled = true;
      try {
        const q = state.next ? `&next_token=${encodeURIComponent(state.next)}` : "";
        const doc = await api("GET", `/workflows/${seg(workflowId)}/runs?limit=20${q}`);
        state.runs.push(...doc.runs);
        state.next = doc.next_token;
        showRuns();
      } catch (err) {
        banner(err.message);
      } finally {
        more.disabled = false;
      }
    }

    function showRuns() {
      const wanted = filter.value;
      const rows = state.runs.filter((r) => wanted === "all" || r.status === wanted).map((r) => h("tr", {},
        h("th", { scope: "row" }, runLink(r.run_id)), h("td", {}, stateBadge(r.status)),
        h("td", { text: r.trigger }), h("td", { text: r.version }),
        h("td", { text: when(r.started_at) }), h("td", { text: when(r.finished_at) })));
      runsBody.replaceChildren(...(rows.length ? rows : [h("tr", {}, h("td", { colspan: 6, class: "muted", text: "No runs." }))]));
      more.hidden = !state.next;
    }
  }

  // Two versions' definitions, line by line (a diff of their JSON).
  function compareForm(wf) {
    const numbers = wf.versions.map((v) => v.version).reverse();
    const pick = (id, label, chosen) => [h("label", { for: id, text: ` ${label} ` }),
      h("select", { id }, numbers.map((n) => h("option", { value: n, text: n, selected: n === chosen })))];
    const out = h("div", { id: "version-diff" });
    const form = h("form", { class: "card", id: "compare" },
      h("strong", { text: "Compare versions" }),
      ...pick("diff-from", "from", numbers[1] ?? numbers[0]), ...pick("diff-to", "to", numbers[0]), " ",
      h("button", { type: "submit", text: "Compare" }), out);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const [a, b] = [form.querySelector("#diff-from").value, form.querySelector("#diff-to").value];
      out.replaceChildren(h("p", { class: "muted", text: "Loading…" }));
      try {
        const [va, vb] = await Promise.all([a, b].map((n) => api("GET", `/workflows/${seg(workflowId)}/versions/${n}`)));
        out.replaceChildren(diffView(JSON.stringify(va.definition, null, 2), JSON.stringify(vb.definition, null, 2)));
      } catch (err) {
        out.replaceChildren(h("p", { class: "error", role: "alert", text: err.message }));
      }
    });
    return form;
  }

  function triggerForm(wf) {
    const params = (wf.definition && wf.definition.params) || {};
    const secret = new Set((wf.definition && wf.definition.secret_params) || []);
    const fields = Object.entries(params).map(([name, value]) => h("p", {},
      h("label", { for: `param-${name}`, text: `${name} ` }),
      h("input", { id: `param-${name}`, name, "data-param": name, value: secret.has(name) ? "" : value,
        type: secret.has(name) ? "password" : "text", autocomplete: "off" })));
    const key = h("input", { id: "idempotency-key", name: "idempotency_key", autocomplete: "off",
      placeholder: "optional" });
    const answer = h("p", { role: "status", class: "answer" });
    const form = h("form", { id: "trigger", class: "card", "aria-labelledby": "trigger-title" },
      h("h2", { id: "trigger-title", text: "Trigger a run" }),
      fields.length ? fields : h("p", { class: "muted", text: "This workflow declares no params." }),
      h("p", {}, h("label", { for: "idempotency-key", text: "Idempotency key " }), key),
      h("p", {}, h("button", { type: "submit", disabled: !wf.active_version, text: "Trigger" })),
      answer);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const body = { params: {} };
      for (const input of form.querySelectorAll("[data-param]")) {
        body.params[input.dataset.param] = input.value;
      }
      const headers = key.value.trim() ? { "Idempotency-Key": key.value.trim() } : {};
      answer.textContent = "Starting…";
      try {
        const run = await api("POST", `/workflows/${seg(workflowId)}/runs`, { body, headers });
        location.hash = `#/runs/${seg(run.run_id)}`;
      } catch (err) {
        answer.textContent = err.message;
        answer.className = "answer error";
      }
    });
    return form;
  }
}

// A line diff (longest common subsequence) of two texts, as a <pre> of +/- lines.
function diffView(before, after) {
  const a = before.split("\n");
  const b = after.split("\n");
  if (a.length * b.length > 4e6) {
    return h("p", { class: "muted", text: "Too large to compare here: use `stratoflow workflows` and a diff tool." });
  }
  const lcs = Array.from({ length: a.length + 1 }, () => new Int32Array(b.length + 1));
  for (let i = a.length - 1; i >= 0; i--) {
    for (let j = b.length - 1; j >= 0; j--) {
      lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const lines = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    if (i < a.length && j < b.length && a[i] === b[j]) { lines.push(["same", "  " + a[i]]); i++; j++; }
    else if (j < b.length && (i === a.length || lcs[i][j + 1] >= lcs[i + 1][j])) { lines.push(["added", "+ " + b[j]]); j++; }
    else { lines.push(["removed", "- " + a[i]]); i++; }
  }
  if (!lines.some(([kind]) => kind !== "same")) return h("p", { text: "The two versions are the same." });
  return h("pre", { class: "diff" }, lines.map(([kind, text]) => h("span", { class: kind, text: text + "\n" })));
}

// ---------------------------------------------------------------- the graph

// Draws a version's graph into `box`; returns the view, with `paint(tasks)` to colour it.
async function showGraph(box, workflowId, version, { onSelect, expand, plain } = {}) {
  box.replaceChildren(h("p", { class: "muted", text: "Laying out…" }));
  const q = expand && expand.size ? `?expand=${encodeURIComponent([...expand].join(","))}` : "";
  let graph;
  try {
    graph = await api("GET", `/workflows/${seg(workflowId)}/versions/${version}/graph${q}`);
  } catch (err) {
    box.replaceChildren(h("p", { class: "error", role: "alert", text: err.message }));
    return null;
  }
  return drawGraph(box, graph, onSelect, plain);
}

function edgePath(points) {
  const [x0, y0] = points[0];
  if (points.length === 2) {
    const [x1, y1] = points[1];
    const my = (y0 + y1) / 2;
    return `M${x0} ${y0}C${x0} ${my} ${x1} ${my} ${x1} ${y1}`;
  }
  return "M" + points.map(([x, y]) => `${x} ${y}`).join("L");
}

function shortLabel(text, max = 22) {
  return text.length > max ? text.slice(0, max - 1) + "…" : text;
}

// Past this many boxes only those in view (and a margin) are in the page, redrawn as the
// view moves: chromium's time per frame grows with every SVG element, and a 10,000-box
// graph in full took seconds to draw and to answer a click.
const CULL_FROM = 1500;

function drawGraph(box, graph, onSelect, plain) {
  const culled = graph.nodes.length >= CULL_FROM;
  let tasks = null; // the run document's tasks, once painted (none: a version's picture)
  let selected = null;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "graph");
  svg.setAttribute("role", "group");
  svg.setAttribute("aria-label", `Graph of ${graph.tasks} tasks: Tab through the tasks, Enter opens one; ` +
    "arrow keys pan, + and − zoom, 0 fits");
  svg.setAttribute("tabindex", "0");
  svg.dataset.boxes = String(graph.nodes.length);
  svg.innerHTML = '<defs><marker id="arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="8" ' +
    'markerHeight="8" orient="auto"><path d="M0 0L8 4L0 8z"/></marker></defs>' +
    '<g class="edges"></g><g class="nodes"></g>';
  const edgeLayer = svg.querySelector("g.edges");
  const nodeLayer = svg.querySelector("g.nodes");
  const zoomBar = h("div", { class: "zoom", role: "toolbar", "aria-label": "Zoom" },
    h("button", { type: "button", "aria-label": "Zoom in", text: "+", onclick: () => zoom(0.8) }),
    h("button", { type: "button", "aria-label": "Zoom out", text: "−", onclick: () => zoom(1.25) }),
    h("button", { type: "button", "aria-label": "Fit the graph", text: "Fit", onclick: () => fit() }),
    h("span", { class: "muted", text: ` ${graph.tasks} tasks, ${graph.nodes.length} boxes` +
      (culled ? " (drawn as they come into view)" : "") }));
  // as tall as the graph, up to most of the window
  svg.style.height = `${Math.round(Math.max(160, Math.min(graph.height + 16, window.innerHeight * 0.62)))}px`;
  box.replaceChildren(zoomBar, svg);

  let nodes = new Map(); // id → its element, for the boxes in the page
  const byId = new Map(graph.nodes.map((n) => [n.id, n]));

  // What a box shows: [data-state, the state line, its accessible name].
  function look(n) {
    const name = n.group ? `group of ${n.members.length} tasks like ${n.members[0]}` : `task ${n.id}`;
    if (!tasks) return plain ? ["none", n.group ? `${n.members.length} tasks` : "", name, null] :
      ["pending", `${STATES.pending} pending`, name, null];
    if (!n.group) {
      const st = (tasks[n.id] || {}).status || "pending";
      return [st, `${STATES[st] || "·"} ${st}`, name, null];
    }
    const counts = {};
    for (const m of n.members) {
      const st = (tasks[m] || {}).status || "pending";
      counts[st] = (counts[st] || 0) + 1;
    }
    const shown = GROUP_PRIORITY.find((st) => counts[st]) || "pending";
    const text = GROUP_PRIORITY.filter((st) => counts[st]).map((st) => `${STATES[st]}${counts[st]}`).join(" ");
    return [shown, text, name, counts];
  }

  function markup(n) {
    const [st, text, name, counts] = look(n);
    const label = n.group ? `${n.members[0]} +${n.members.length - 1}` : n.id;
    return `<g class="node${n.group ? " group" : ""}${n.id === selected ? " selected" : ""}" ` +
      `data-id="${esc(n.id)}" data-state="${st}" data-text="${esc(text)}" ` +
      (counts ? `data-counts="${esc(JSON.stringify(counts))}" ` : "") +
      `tabindex="0" role="button" aria-label="${esc(text ? `${name}: ${text}` : name)}" ` +
      `transform="translate(${n.x - n.width / 2} ${n.y})">` +
      `<title>${esc(name)}</title>` +
      `<rect width="${n.width}" height="${n.height}" rx="6"/>` +
      `<text class="label" x="10" y="16">${esc(shortLabel(label))}</text>` +
      `<text class="state" x="10" y="32">${esc(text)}</text></g>`;
  }

  // Puts the boxes (all, or those near the view) and their edges in the page.
  function draw() {
    const near = (x0, y0, x1, y1) => !culled || (x1 >= view.x - 300 && x0 <= view.x + view.w + 300 &&
      y1 >= view.y - 300 && y0 <= view.y + view.h + 300);
    const focused = document.activeElement && document.activeElement.closest &&
      document.activeElement.closest("g.node");
    const focusedId = focused && svg.contains(focused) ? focused.dataset.id : null;
    const edges = [];
    for (const e of graph.edges) {
      const xs = e.points.map((p) => p[0]);
      const ys = e.points.map((p) => p[1]);
      if (near(Math.min(...xs), Math.min(...ys), Math.max(...xs), Math.max(...ys))) {
        edges.push(`<path d="${edgePath(e.points)}" marker-end="url(#arrow)"/>`);
      }
    }
    const boxes = [];
    for (const n of graph.nodes) {
      if (near(n.x - n.width / 2, n.y, n.x + n.width / 2, n.y + n.height)) boxes.push(markup(n));
    }
    edgeLayer.innerHTML = edges.join("");
    nodeLayer.innerHTML = boxes.join("");
    nodes = new Map();
    for (const el of nodeLayer.children) nodes.set(el.dataset.id, el);
    if (focusedId && nodes.has(focusedId)) nodes.get(focusedId).focus({ preventScroll: true });
  }
  let drawPending = false;
  function redraw() {
    if (!culled || drawPending) return;
    drawPending = true;
    requestAnimationFrame(() => { drawPending = false; draw(); });
  }

  // pan and zoom by moving the viewBox
  const full = { x: 0, y: 0, w: Math.max(graph.width, 1), h: Math.max(graph.height, 1) };
  let view = { ...full };
  const apply = () => {
    svg.setAttribute("viewBox", `${view.x} ${view.y} ${view.w} ${view.h}`);
    redraw();
  };
  function fit() {
    // The whole graph if it fits at 1:4 or larger, never magnified past 1:1; a bigger one
    // starts at its top, readable, and is panned and zoomed from there.
    const rect = svg.getBoundingClientRect();
    const pxW = rect.width || 1000;
    const pxH = rect.height || 560;
    const scale = Math.max(Math.min(pxW / full.w, pxH / full.h, 1), 0.25);
    view = { w: pxW / scale, h: pxH / scale, x: 0, y: 0 };
    view.x = (full.w - view.w) / 2;
    view.y = full.h > view.h ? 0 : (full.h - view.h) / 2;
    apply();
  }
  function zoom(factor, cx, cy) {
    const px = cx ?? view.x + view.w / 2;
    const py = cy ?? view.y + view.h / 2;
    view = { x: px - (px - view.x) * factor, y: py - (py - view.y) * factor, w: view.w * factor, h: view.h * factor };
    apply();
  }
  function toGraph(ev) {
    const rect = svg.getBoundingClientRect();
    return [view.x + ((ev.clientX - rect.left) / rect.width) * view.w,
      view.y + ((ev.clientY - rect.top) / rect.height) * view.h];
  }
  svg.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const [cx, cy] = toGraph(ev);
    zoom(ev.deltaY > 0 ? 1.15 : 1 / 1.15, cx, cy);
  }, { passive: false });
  let drag = null;
  svg.addEventListener("pointerdown", (ev) => {
    if (ev.target.closest("g.node")) return;
    drag = { x: ev.clientX, y: ev.clientY, view: { ...view } };
    svg.setPointerCapture(ev.pointerId);
  });
  svg.addEventListener("pointermove", (ev) => {
    if (!drag) return;
    const rect = svg.getBoundingClientRect();
    view = { ...drag.view,
      x: drag.view.x - ((ev.clientX - drag.x) / rect.width) * view.w,
      y: drag.view.y - ((ev.clientY - drag.y) / rect.height) * view.h };
    apply();
  });
  svg.addEventListener("pointerup", () => { drag = null; });
  svg.addEventListener("keydown", (ev) => {
    const node = ev.target.closest && ev.target.closest("g.node");
    if (node && (ev.key === "Enter" || ev.key === " ")) {
      ev.preventDefault();
      if (onSelect) onSelect(node.dataset.id, byId.get(node.dataset.id));
      return;
    }
    const step = { ArrowLeft: [-0.1, 0], ArrowRight: [0.1, 0], ArrowUp: [0, -0.1], ArrowDown: [0, 0.1] }[ev.key];
    if (step) {
      ev.preventDefault();
      view.x += step[0] * view.w;
      view.y += step[1] * view.h;
      apply();
    } else if (ev.key === "+" || ev.key === "=") zoom(0.8);
    else if (ev.key === "-") zoom(1.25);
    else if (ev.key === "0") fit();
  });
  svg.addEventListener("focusin", (ev) => {
    // keep the focused task on screen
    const node = ev.target.closest && ev.target.closest("g.node");
    if (!node) return;
    const n = byId.get(node.dataset.id);
    if (n.x < view.x || n.x > view.x + view.w || n.y < view.y || n.y > view.y + view.h) {
      view.x = n.x - view.w / 2;
      view.y = n.y - view.h / 2;
      apply();
    }
  });
  svg.addEventListener("click", (ev) => {
    const node = ev.target.closest("g.node");
    if (node && onSelect) onSelect(node.dataset.id, byId.get(node.dataset.id));
  });
  fit();
  draw();
  // Until the user pans or zooms, the graph is refitted when its box changes size (the
  // task panel opening beside it).
  let moved = false;
  for (const kind of ["wheel", "pointerdown", "keydown"]) {
    svg.addEventListener(kind, (ev) => { if (!(ev.target.closest && ev.target.closest("g.node"))) moved = true; });
  }
  for (const b of zoomBar.querySelectorAll("button")) b.addEventListener("click", () => { moved = true; });
  new ResizeObserver(() => { if (!moved) fit(); }).observe(svg);

  return {
    graph,
    // Colours the boxes in the page from the run document's tasks, in place (no redraw).
    paint(runTasks) {
      tasks = runTasks;
      for (const [id, el] of nodes) {
        const [st, text, name, counts] = look(byId.get(id));
        if (el.dataset.state === st && el.dataset.text === text) continue;
        el.dataset.state = st;
        el.dataset.text = text;
        el.lastChild.textContent = text;
        el.setAttribute("aria-label", `${name}: ${text}`);
        if (counts) el.dataset.counts = JSON.stringify(counts);
      }
    },
    // Marks the box of task (or group) `id`, brought into view if it is out of it.
    select(id) {
      if (id && !byId.has(id)) {
        const group = graph.nodes.find((n) => n.group && n.members.includes(id));
        id = group ? group.id : id;
      }
      selected = id;
      for (const el of nodeLayer.querySelectorAll("g.node.selected")) el.classList.remove("selected");
      const n = id && byId.get(id);
      if (n && (n.x < view.x || n.x > view.x + view.w || n.y < view.y || n.y + n.height > view.y + view.h)) {
        view.x = n.x - view.w / 2;
        view.y = n.y - view.h / 3;
        moved = true;
        apply();
      }
      const el = id && nodes.get(id);
      if (el) el.classList.add("selected");
    },
  };
}

// ---------------------------------------------------------------- a run

function runPage(runId, taskId) {
  const state = { stopped: false, doc: null, view: null, poll: null, logPoll: null,
    task: taskId, expand: new Set(), rowsShown: TABLE_ROWS };
  page(runId, h("h1", { text: `Run ${runId}` }), h("p", { class: "muted", text: "Loading…" }));
  start();
  return {
    key: `run:${runId}`,
    stop,
    openTask(id) { state.task = id; showTask(); },
  };

  function stop() {
    state.stopped = true;
    if (state.poll) state.poll.stop();
    if (state.logPoll) state.logPoll.stop();
  }

  async function start() {
    try {
      state.doc = await api("GET", `/runs/${seg(runId)}`);
    } catch (err) {
      if (!state.stopped) failure(err, `Run ${runId}`);
      return;
    }
    if (state.stopped) return;
    const d = state.doc;
    const els = state.els = {
      status: h("span", { id: "run-status" }),
      meta: h("p", { id: "run-meta" }),
      answer: h("p", { id: "action-answer", role: "status", class: "answer" }),
      cancel: h("button", { type: "button", id: "cancel", text: "Cancel run", onclick: cancel }),
      retry: h("button", { type: "button", id: "retry", text: "Retry (rerun from failure)", onclick: retry }),
      graph: h("div", { class: "graph-box", id: "run-graph" }),
      gantt: h("div", { class: "gantt", id: "gantt" }),
      tableBody: h("tbody", {}),
      tableNote: h("p", { class: "muted" }),
      filter: h("input", { id: "task-filter", type: "search", placeholder: "task id or state",
        oninput: () => renderTable() }),
      panel: h("aside", { id: "task-panel", class: "card", "aria-label": "Task", hidden: true }),
      comp: h("div", { id: "compensations" }),
    };
    page(runId,
      h("p", { class: "crumbs" }, h("a", { href: "#/", text: "Workflows" }), " / ",
        h("a", { href: `#/workflows/${seg(d.workflow_id)}`, text: d.workflow_id }), " / "),
      h("h1", {}, `Run ${runId} `, els.status),
      els.meta,
      h("p", { class: "actions" }, els.cancel, " ", els.retry),
      els.answer,
      h("div", { class: "run-body" },
        h("section", { class: "graph-col", "aria-label": "Graph" }, els.graph),
        els.panel),
      h("h2", { text: "Timeline" }), els.gantt,
      h("h2", { text: "Tasks" }),
      h("p", {}, h("label", { for: "task-filter", text: "Filter " }), els.filter),
      h("table", { class: "list", id: "tasks" },
        h("thead", {}, h("tr", {}, ["Task", "Status", "Attempts", "Exit code", "Started", "Finished", "Took"].map((t) => h("th", { scope: "col", text: t })))),
        els.tableBody),
      els.tableNote,
      els.comp);
    await drawRunGraph();
    render();
    showTask();
    follow();
  }

  async function drawRunGraph() {
    const d = state.doc;
    state.view = await showGraph(state.els.graph, d.workflow_id, d.version, {
      expand: state.expand,
      onSelect: (id, node) => {
        if (node && node.group) return showGroup(node);
        location.hash = `#/runs/${seg(runId)}/tasks/${seg(id)}`;
      },
    });
    if (state.view) {
      state.view.paint(state.doc.tasks);
      // Ready once the browser has painted it (the frame after next): what bench/console.py
      // reads as the page's first render.
      requestAnimationFrame(() => setTimeout(() => {
        performance.mark("stratoflow:graph-ready");
        state.els.graph.dataset.ready = "true";
      }, 0));
    }
  }

  function follow() {
    if (state.poll) state.poll.stop();
    if (FINAL_RUN.has(state.doc.status)) return;
    state.poll = poller(async () => {
      const doc = await api("GET", `/runs/${seg(runId)}`);
      if (state.stopped) return false;
      state.doc = doc;
      render();
      if (state.task) refreshTaskFacts();
      return !FINAL_RUN.has(doc.status);
    });
  }

  function render() {
    const d = state.doc;
    const els = state.els;
    els.status.replaceChildren(stateBadge(d.status));
    els.status.dataset.state = d.status;
    const counts = {};
    for (const t of Object.values(d.tasks)) counts[t.status] = (counts[t.status] || 0) + 1;
    els.meta.replaceChildren(
      `Version ${d.version} · ${d.trigger} · started ${when(d.started_at)}`,
      d.finished_at ? ` · finished ${when(d.finished_at)} (${duration(d.started_at, d.finished_at)})` : "",
      d.redrives ? ` · retried ${d.redrives}×` : "",
      Object.keys(d.params || {}).length ? ` · params ${Object.entries(d.params).map(([k, v]) => `${k}=${v}`).join(", ")}` : "",
      h("br"),
      Object.entries(counts).map(([s, n]) => `${STATES[s] || ""} ${n} ${s}`).join(" · "));
    els.cancel.disabled = FINAL_RUN.has(d.status);
    els.retry.disabled = !(d.status === "failed" || d.status === "cancelled");
    if (state.view) state.view.paint(d.tasks);
    renderTable();
    renderGantt();
    renderCompensations();
  }

  function renderTable() {
    const d = state.doc;
    const els = state.els;
    const wanted = els.filter.value.trim().toLowerCase();
    const ids = Object.keys(d.tasks).filter((id) => !wanted || id.toLowerCase().includes(wanted) ||
      d.tasks[id].status.includes(wanted));
    const shown = ids.slice(0, state.rowsShown);
    els.tableBody.replaceChildren(...shown.map((id) => {
      const t = d.tasks[id];
      return h("tr", { "data-task": id, "data-state": t.status },
        h("th", { scope: "row" }, h("a", { href: `#/runs/${seg(runId)}/tasks/${seg(id)}`, text: id })),
        h("td", {}, stateBadge(t.status)), h("td", { text: t.attempts }),
        h("td", { text: t.exit_code ?? "—" }), h("td", { text: when(t.started_at) }),
        h("td", { text: when(t.finished_at) }), h("td", { text: duration(t.started_at, t.finished_at) }));
    }));
    els.tableNote.replaceChildren(ids.length > shown.length ? h("span", {},
      `Showing ${shown.length} of ${ids.length} tasks. `,
      h("button", { type: "button", text: "Show more", onclick: () => { state.rowsShown += TABLE_ROWS; renderTable(); } })) : "");
  }

  // The timeline of the tasks' latest attempts (the run document keeps one per task).
  function renderGantt() {
    const d = state.doc;
    const started = Object.entries(d.tasks).filter(([, t]) => t.started_at)
      .sort((a, b) => a[1].started_at.localeCompare(b[1].started_at) || a[0].localeCompare(b[0]));
    if (!started.length) {
      state.els.gantt.replaceChildren(h("p", { class: "muted", text: "No attempt has started yet." }));
      return;
    }
    const t0 = new Date(started[0][1].started_at).getTime();
    const now = Date.now();
    const end = Math.max(...started.map(([, t]) => (t.finished_at ? new Date(t.finished_at).getTime() : now)), t0 + 1);
    const span = end - t0;
    const rows = started.slice(0, GANTT_ROWS).map(([id, t]) => {
      const a = new Date(t.started_at).getTime() - t0;
      const b = (t.finished_at ? new Date(t.finished_at).getTime() : now) - t0;
      return h("div", { class: "gantt-row" },
        h("a", { class: "gantt-label", href: `#/runs/${seg(runId)}/tasks/${seg(id)}`, text: id }),
        h("div", { class: "gantt-track" },
          h("div", { class: "gantt-bar", "data-state": t.status,
            style: `left:${(100 * a) / span}%;width:${Math.max((100 * (b - a)) / span, 0.3)}%`,
            title: `${id}: ${t.status}, attempt ${t.attempts}, ${duration(t.started_at, t.finished_at)}` })));
    });
    state.els.gantt.replaceChildren(
      h("p", { class: "muted", text: `${duration(new Date(t0).toISOString(), new Date(end).toISOString())} from the first start` +
        (started.length > GANTT_ROWS ? `; the first ${GANTT_ROWS} of ${started.length} started tasks` : "") }),
      ...rows);
  }

  function renderCompensations() {
    const comps = state.doc.compensations || [];
    state.els.comp.replaceChildren(...(comps.length ? [
      h("h2", { text: "Compensations" }),
      h("table", { class: "list" },
        h("thead", {}, h("tr", {}, ["Task", "Status", "Exit code", "Started", "Finished", "Output"].map((t) => h("th", { scope: "col", text: t })))),
        h("tbody", {}, comps.map((c) => h("tr", {},
          h("th", { scope: "row", text: c.task_id }), h("td", {}, stateBadge(c.status)),
          h("td", { text: c.exit_code ?? "—" }), h("td", { text: when(c.started_at) }),
          h("td", { text: when(c.finished_at) }), h("td", {}, h("pre", { class: "inline", text: c.output_tail }))))))] : []));
  }

  async function act(what, path, confirmText) {
    if (!window.confirm(confirmText)) return;
    const els = state.els;
    els.answer.className = "answer";
    els.answer.textContent = `${what}…`;
    try {
      const doc = await api("POST", path);
      if (what === "Cancel") {
        els.answer.textContent = doc.changed ? `Cancelled: the run is ${doc.status}.` :
          `Nothing to cancel: the run is ${doc.status}.`;
        state.doc = await api("GET", `/runs/${seg(runId)}`);
      } else {
        els.answer.textContent = `Retried: the run is ${doc.status} again (drive ${doc.redrives}).`;
        state.doc = doc;
      }
      render();
      follow();
    } catch (err) {
      els.answer.className = "answer error";
      els.answer.textContent = `${what} refused: ${err.message}`;
    }
  }

  function cancel() {
    act("Cancel", `/runs/${seg(runId)}/cancel`,
      `Cancel run ${runId}? Nothing new starts and running tasks are stopped.`);
  }

  function retry() {
    act("Retry", `/runs/${seg(runId)}/retry`,
      `Retry run ${runId}? The tasks that did not succeed run again; the others are kept.`);
  }

  function showGroup(node) {
    const d = state.doc;
    const panel = state.els.panel;
    panel.hidden = false;
    state.task = null;
    panel.replaceChildren(
      h("h2", { text: `${node.members.length} tasks like ${node.members[0]}` }),
      h("p", { class: "muted", text: "Siblings with the same parents and children, drawn as one box." }),
      h("p", {}, h("button", { type: "button", id: "expand-group", text: "Expand in the graph", onclick: async () => {
        state.expand.add(node.id);
        await drawRunGraph();
      } })),
      h("ul", { class: "members" }, node.members.slice(0, 500).map((m) => h("li", {},
        h("a", { href: `#/runs/${seg(runId)}/tasks/${seg(m)}`, text: m }), " ",
        stateBadge((d.tasks[m] || {}).status || "pending")))),
      node.members.length > 500 ? h("p", { class: "muted", text: `and ${node.members.length - 500} more (see the task table)` }) : "");
    if (state.view) state.view.select(node.id);
  }

  // ------------------------------------------------------------ the task panel

  function showTask() {
    if (state.logPoll) { state.logPoll.stop(); state.logPoll = null; }
    const panel = state.els && state.els.panel;
    if (!panel) return;
    const id = state.task;
    if (state.view) state.view.select(id);
    if (!id) { panel.hidden = true; return; }
    const t = state.doc.tasks[id];
    if (!t) {
      panel.hidden = false;
      panel.replaceChildren(h("p", { class: "error", role: "alert", text: `Run ${runId} has no task ${id}.` }));
      return;
    }
    state.els.facts = h("dl", { class: "facts", id: "task-facts" });
    state.els.tail = h("pre", { id: "output-tail", class: "log" });
    state.els.attempts = h("p", { id: "attempts", role: "group", "aria-label": "Attempts" });
    state.els.log = h("pre", { id: "log", class: "log", tabindex: "0", "aria-label": "Log" });
    state.els.logNote = h("p", { id: "log-note", class: "muted", role: "status" });
    panel.hidden = false;
    panel.replaceChildren(
      h("p", {}, h("a", { href: `#/runs/${seg(runId)}`, text: "Close", "aria-label": "Close the task" })),
      h("h2", { id: "task-title", text: id }),
      state.els.facts,
      h("h3", { text: "Output (tail)" }), state.els.tail,
      h("h3", { text: "Attempts" }), state.els.attempts,
      h("h3", { text: "Log" }), state.els.logNote, state.els.log);
    refreshTaskFacts();
    const last = Math.max(t.attempts, 1);
    openLog(last);
    panel.querySelector("h2").focus?.();
  }

  function refreshTaskFacts() {
    const id = state.task;
    const t = state.doc.tasks[id];
    if (!t || !state.els.facts) return;
    const fact = (k, v) => [h("dt", { text: k }), h("dd", {}, v)];
    state.els.facts.replaceChildren(
      ...fact("Status", stateBadge(t.status)),
      ...fact("Attempts", String(t.attempts)),
      ...fact("Exit code", t.exit_code === null ? "—" : String(t.exit_code)),
      ...fact("Timed out", t.timed_out ? "yes" : "no"),
      ...fact("Started", when(t.started_at)),
      ...fact("Finished", `${when(t.finished_at)} ${t.finished_at ? `(${duration(t.started_at, t.finished_at)})` : ""}`));
    state.els.tail.textContent = t.output_tail || "(no output)";
    const current = Number(state.els.attempts.dataset.current || 0);
    const have = state.els.attempts.children.length;
    if (have !== t.attempts) {
      state.els.attempts.replaceChildren(...Array.from({ length: t.attempts }, (_, i) => h("button", {
        type: "button", "data-attempt": i + 1, "aria-pressed": String(i + 1 === current),
        text: `Attempt ${i + 1}`, onclick: () => openLog(i + 1) })));
      if (t.attempts > have && current === have && have > 0) openLog(t.attempts); // follow the newest
    }
  }

  function openLog(attempt) {
    if (state.logPoll) { state.logPoll.stop(); state.logPoll = null; }
    const id = state.task;
    const els = state.els;
    els.attempts.dataset.current = attempt;
    for (const b of els.attempts.querySelectorAll("button")) {
      b.setAttribute("aria-pressed", String(Number(b.dataset.attempt) === attempt));
    }
    const t = state.doc.tasks[id];
    if (!t || t.attempts === 0) {
      els.logNote.textContent = "No attempt has started yet.";
      els.log.textContent = "";
      // the task may start while the panel is open
      state.logPoll = poller(async () => {
        if (state.doc.tasks[id] && state.doc.tasks[id].attempts > 0) { openLog(state.doc.tasks[id].attempts); return false; }
        return !FINAL_RUN.has(state.doc.status);
      });
      return;
    }
    // The end of the log first (LOG_PAGE characters), then what comes after, appended.
    const base = `/runs/${seg(runId)}/tasks/${seg(id)}/logs`;
    let next = null;
    let skipped = 0;
    const load = async () => {
      const where = next === null ? `offset=-${LOG_PAGE}` : `offset=${next}`;
      const doc = await api("GET", `${base}/page?attempt=${attempt}&${where}&limit=${LOG_PAGE}`);
      if (state.task !== id || Number(els.attempts.dataset.current) !== attempt) return false;
      const atEnd = els.log.scrollTop + els.log.clientHeight >= els.log.scrollHeight - 4;
      if (next === null) {
        skipped = doc.offset;
        els.log.textContent = doc.found ? doc.text : "(no log was kept for this attempt: its tail)\n" + doc.text;
      } else if (doc.text) {
        els.log.append(doc.text);
        if (els.log.textContent.length > 4 * LOG_PAGE) { // keep the page light
          const text = els.log.textContent;
          skipped += text.length - 2 * LOG_PAGE;
          els.log.textContent = text.slice(text.length - 2 * LOG_PAGE);
        }
      }
      next = doc.next_offset;
      if (atEnd) els.log.scrollTop = els.log.scrollHeight;
      const done = doc.complete && doc.next_offset >= doc.size;
      els.log.dataset.complete = String(done);
      els.logNote.replaceChildren(`Attempt ${attempt} of ${doc.attempts}` +
        (done ? "" : " · running: the log follows live") +
        (skipped ? ` · the first ${skipped.toLocaleString()} characters are not shown ` : ""),
      skipped ? h("button", { type: "button", text: "Download the whole log", onclick: () => download() }) : "");
      return !done;
    };
    const download = async () => {
      const doc = await api("GET", `${base}?attempt=${attempt}`);
      const link = h("a", { href: URL.createObjectURL(new Blob([doc.text], { type: "text/plain" })),
        download: `${runId}-${id}-${attempt}.log` });
      link.click();
      URL.revokeObjectURL(link.href);
    };
    els.logNote.textContent = "Loading…";
    load().then((more) => {
      if (more && !state.stopped) state.logPoll = poller(load);
    }, (err) => { els.logNote.textContent = err.message; });
  }
}

// ---------------------------------------------------------------- start

// The token `local up` printed has set its cookie by now: keep it out of the address bar
// (and of bookmarks and shared links).
if (new URLSearchParams(location.search).has("token")) {
  history.replaceState(null, "", location.pathname + location.hash);
}
document.getElementById("skip").addEventListener("click", (ev) => {
  ev.preventDefault();
  main().focus();
});
window.addEventListener("hashchange", route);
route();
