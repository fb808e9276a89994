// The smolmesh web console: agents, runs, and the live tree of a run.
//
// Safety: everything shown comes from models, tools and web pages, so it is untrusted. The
// page builds its DOM with createElement and textContent only (`h` in dom.js); no innerHTML,
// insertAdjacentHTML or document.write anywhere, and links are checked before use. The
// server's CSP (default-src 'self') backs this up.
//
// Performance: a run's events are queued and applied in batches, a few milliseconds per
// animation frame; long texts show their first characters (the rest on demand, up to a cap),
// and long lists (a node's steps, a step's items) show their tail, older entries on demand,
// the oldest dropped beyond a cap: a run of thousands of events keeps the page responsive
// and its memory bounded (run_tree.js).
//
//   dom.js        elements, capped texts and lists, formatting
//   highlight.js  Python highlighting
//   run_tree.js   a run's live tree, from its events
//   console.js    this: the API, the router, the views, the panels

import {
  $,
  TailList,
  answerText,
  badge,
  clear,
  errorText,
  fmtCost,
  fmtDuration,
  fmtInt,
  fmtTime,
  fmtTokens,
  h,
  shorten,
  textBlock,
} from "./dom.js";
import { EventPump, RunTree, sumUsage, traceUrl } from "./run_tree.js";

const REFRESH_MS = 5000; // agents and runs lists refresh while shown

// ---------------------------------------------------------------------------------------------
// The server's API

const api = {
  session: null,

  async get(path) {
    const response = await fetch(path, { headers: { Accept: "application/json" } });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
    return body;
  },

  async post(path, payload) {
    const response = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": api.session ? api.session.csrf : "" },
      body: JSON.stringify(payload || {}),
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
    return body;
  },

  runPath(agent, runId) {
    return `/api/runs/${encodeURIComponent(agent)}/${encodeURIComponent(runId)}`;
  },
};

function runHash(agent, runId) {
  return `#/run/${encodeURIComponent(agent)}/${encodeURIComponent(runId)}`;
}

function setStatus(text, isError = false) {
  const line = $("#status-line");
  line.textContent = text || "";
  line.classList.toggle("error-text", isError);
}

// ---------------------------------------------------------------------------------------------
// Router: #/agents, #/runs, #/run/<agent>/<run_id>

let current = null; // the view shown: {name, leave()}

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  if (current && current.leave) current.leave();
  current = null;
  setStatus("");
  closePanel();
  for (const section of document.querySelectorAll(".view")) section.hidden = true;
  let name = parts[0];
  if (name === "run" && parts[1] && parts[2]) current = showRun(parts[1], parts.slice(2).join("/"));
  else if (name === "agents") current = showAgents();
  else {
    name = "runs";
    current = showRuns();
  }
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === name);
  }
}

// Runs a refresh now and every REFRESH_MS while the view is shown (not while the tab is hidden).
function repeating(refresh) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    if (stopped) return;
    if (!document.hidden) await refresh().catch((err) => setStatus(err.message, true));
    if (!stopped) timer = setTimeout(tick, REFRESH_MS);
  };
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

// ---------------------------------------------------------------------------------------------
// Agents

function showAgents() {
  $("#view-agents").hidden = false;
  let shown = "";
  const stop = repeating(async () => {
    const { agents } = await api.get("/api/agents");
    const key = JSON.stringify(agents);
    if (key === shown) return;
    shown = key;
    const grid = $("#agents");
    clear(grid);
    for (const agent of agents) grid.append(agentCard(agent));
    setStatus("");
  });
  return { leave: stop };
}

function agentCard(agent) {
  const healthy = agent.healthy ? "healthy" : "unhealthy";
  const card = h(
    "article",
    { class: "card agent-card", id: `agent-${agent.name}`, data: { agent: agent.name, healthy: agent.healthy } },
    h(
      "div",
      { class: "agent-head" },
      h("h2", { class: "agent-name", text: agent.name }),
      h("span", { class: `health ${healthy}`, text: healthy }),
    ),
    h("p", { class: "agent-description", text: agent.description || "" }),
  );
  const facts = h("dl", { class: "facts" });
  const fact = (label, value, cls) => facts.append(h("dt", { text: label }), h("dd", { class: cls, text: value }));
  fact("kind", agent.kind || "?", "agent-kind");
  fact("model", agent.model || "?", "agent-model");
  fact("replicas", `${agent.replicas ?? (agent.addresses || []).length}`, "agent-replicas");
  fact("runs in flight", `${agent.in_flight ?? "?"}`, "agent-in-flight");
  fact("addresses", (agent.addresses || []).join(", "), "agent-addresses");
  if (agent.version) fact("version", agent.version, "agent-version");
  card.append(facts);
  if (agent.error) card.append(h("p", { class: "error-text agent-error", text: agent.error }));

  if ((agent.managed_agents || []).length) {
    const list = h("ul", { class: "managed-agents" });
    for (const name of agent.managed_agents) {
      list.append(h("li", {}, h("a", { href: `#/agents`, text: name, on: { click: (e) => jumpToAgent(e, name) } })));
    }
    card.append(h("h3", { text: "Managed agents" }), list);
  }
  const tools = agent.tools || [];
  card.append(h("h3", { text: `Tools (${tools.length})` }));
  for (const tool of tools) card.append(toolView(tool));
  card.append(
    h("div", { class: "form-row" },
      h("button", { type: "button", class: "start-here", text: "Start a task here", on: { click: () => startOn(agent.name) } }),
      h("a", { href: `#/runs`, class: "secondary-link", text: "Its runs", on: { click: () => (runsFilterAgent = agent.name) } }),
    ),
  );
  return card;
}

function jumpToAgent(event, name) {
  event.preventDefault();
  const target = document.getElementById(`agent-${name}`);
  if (target) target.scrollIntoView({ behavior: "smooth", block: "start" });
}

function toolView(tool) {
  const details = h(
    "details",
    { class: "tool", data: { tool: tool.name } },
    h("summary", {}, h("code", { class: "tool-name", text: tool.name }), " → ", h("span", { class: "muted", text: tool.output_type || "any" })),
    h("p", { class: "tool-description", text: tool.description || "" }),
  );
  const inputs = Object.entries(tool.inputs || {});
  if (inputs.length) {
    const table = h("table", { class: "schema" }, h("tr", {}, h("th", { text: "input" }), h("th", { text: "type" }), h("th", { text: "description" })));
    for (const [name, spec] of inputs) {
      const type = [spec.type || "any", spec.nullable ? "nullable" : ""].filter(Boolean).join(", ");
      const extra = spec.enum ? ` (one of ${spec.enum.map((v) => JSON.stringify(v)).join(", ")})` : "";
      table.append(h("tr", {}, h("td", {}, h("code", { text: name })), h("td", { text: type }), h("td", { text: (spec.description || "") + extra })));
    }
    details.append(table);
  }
  return details;
}

// ---------------------------------------------------------------------------------------------
// Runs: the list, its filters, starting a task, opening a run by id

let runsFilterAgent = null; // set by an agent card's "Its runs"
let startAgent = null; // set by an agent card's "Start a task here"

function startOn(agent) {
  startAgent = agent;
  location.hash = "#/runs";
}

function fillAgentSelect(select, names, keepFirst) {
  const value = select.value;
  while (select.options.length > (keepFirst ? 1 : 0)) select.remove(select.options.length - 1);
  for (const name of names) select.append(h("option", { value: name, text: name }));
  if ([...select.options].some((o) => o.value === value)) select.value = value;
}

function showRuns() {
  $("#view-runs").hidden = false;
  if (startAgent) {
    $("#start-agent").value = startAgent;
    $("#start-task").focus();
    startAgent = null;
  }
  if (runsFilterAgent !== null) {
    $("#filter-agent").value = runsFilterAgent;
    runsFilterAgent = null;
  }
  let shown = "";
  let latest = 0; // answers to earlier refreshes (other filters) that arrive late are dropped
  const refresh = async () => {
    const mine = ++latest;
    const query = new URLSearchParams({ limit: "50" });
    if ($("#filter-agent").value) query.set("agent", $("#filter-agent").value);
    if ($("#filter-state").value) query.set("state", $("#filter-state").value);
    if ($("#filter-since").value) query.set("since", String(Date.now() / 1000 - Number($("#filter-since").value)));
    const { runs, errors } = await api.get(`/api/runs?${query}`);
    if (mine !== latest) return;
    const unanswered = Object.entries(errors || {}).map(([name, why]) => `${name}: ${why}`);
    setStatus(unanswered.length ? `Runs not listed: ${shorten(unanswered.join("; "), 300)}` : "", unanswered.length > 0);
    const key = JSON.stringify(runs);
    if (key === shown) return;
    shown = key;
    const body = $("#runs-body");
    clear(body);
    for (const run of runs) body.append(runRow(run));
    $("#runs-empty").hidden = runs.length > 0;
  };
  const stop = repeating(refresh);
  const onFilter = () => refresh().catch((err) => setStatus(err.message, true));
  const controls = ["#filter-agent", "#filter-state", "#filter-since"].map((s) => $(s));
  for (const control of controls) control.addEventListener("change", onFilter);
  $("#runs-refresh").addEventListener("click", onFilter);
  return {
    leave() {
      stop();
      for (const control of controls) control.removeEventListener("change", onFilter);
      $("#runs-refresh").removeEventListener("click", onFilter);
    },
  };
}

function runRow(run) {
  const usage = run.usage || {};
  const open = () => (location.hash = runHash(run.agent, run.run_id));
  return h(
    "tr",
    { class: "run-row", data: { runId: run.run_id, agent: run.agent, status: run.status }, on: { click: open } },
    h("td", { class: "nowrap", text: fmtTime(run.created) }),
    h("td", {}, run.parent_run_id ? h("span", { class: "muted", title: `delegated by run ${run.parent_run_id}`, text: "↳ " }) : null, run.agent),
    h("td", {}, h("a", { href: runHash(run.agent, run.run_id), class: "run-id", title: run.run_id, text: shorten(run.run_id, 14) })),
    h("td", {}, badge(run.status)),
    h("td", { class: "task-cell", title: shorten(run.task, 2000), text: shorten(run.task, 120) }),
    h("td", { class: "num", text: String(run.steps ?? "") }),
    h("td", { class: "num nowrap", text: fmtTokens(usage.input_tokens, usage.output_tokens) }),
    h("td", { class: "num", text: run.status === "running" || run.status === "queued" ? "" : fmtCost(run.cost_usd) }),
    h("td", { class: "muted", text: shorten(run.session_id || "", 16) }),
  );
}

async function startTask(event) {
  event.preventDefault();
  const error = $("#start-error");
  error.textContent = "";
  const payload = { agent: $("#start-agent").value, task: $("#start-task").value.trim() };
  const session = $("#start-session").value.trim();
  if (session) payload.session_id = session;
  if (!payload.task) {
    error.textContent = "Write a task first.";
    return;
  }
  $("#start").disabled = true;
  try {
    const started = await api.post("/api/runs", payload);
    location.hash = runHash(started.agent, started.run_id);
  } catch (err) {
    error.textContent = err.message;
  } finally {
    $("#start").disabled = false;
  }
}

async function openRun(event) {
  event.preventDefault();
  const error = $("#open-error");
  error.textContent = "";
  const runId = $("#open-run-id").value.trim();
  if (!runId) return;
  const agents = $("#open-agent").value ? [$("#open-agent").value] : api.session.agents;
  // A recent run is in the listing (one request); an older one is asked of each agent.
  const chosen = $("#open-agent").value ? `&agent=${encodeURIComponent(agents[0])}` : "";
  const recent = await api.get(`/api/runs?limit=200${chosen}`).catch(() => ({ runs: [] }));
  const found = recent.runs.find((run) => run.run_id === runId);
  if (found) {
    location.hash = runHash(found.agent, runId);
    return;
  }
  for (const agent of agents) {
    try {
      await api.get(api.runPath(agent, runId));
      location.hash = runHash(agent, runId);
      return;
    } catch (err) {
      // not this agent's run: try the next
    }
  }
  error.textContent = `No run '${runId}' on ${agents.length === 1 ? agents[0] : "any agent"}.`;
}

// ---------------------------------------------------------------------------------------------
// One run: its summary, its live tree, its event stream

function showRun(agent, runId) {
  $("#view-run").hidden = false;
  const summary = $("#run-summary");
  const container = $("#tree");
  clear(summary);
  clear(container);
  container.dataset.events = "0";
  container.dataset.stream = "connecting";
  const state = { run: null, source: null, stopped: false, rootTotals: null, summaryRun: null, summaryKey: "" };

  const tree = new RunTree(container, {
    agents: api.session.agents,
    jaegerUrl: api.session.jaeger_url,
    onTrace: showTrace,
    onAudit: showAudit,
    onRootChange(root, totals) {
      state.rootTotals = totals;
      if (state.run) drawSummary(state.run, tree, state);
    },
  });
  const pump = new EventPump(tree);
  const clock = setInterval(() => {
    if (document.hidden) return;
    tree.tick();
    if (state.run) drawSummary(state.run, tree, state);
  }, 500);

  api.get(api.runPath(agent, runId)).then(
    (run) => {
      if (state.stopped) return;
      state.run = run;
      drawSummary(run, tree, state);
      connect();
    },
    (err) => {
      container.dataset.stream = "error";
      summary.append(h("h1", { text: `Run ${runId}` }), h("p", { class: "error-text", text: err.message }));
    },
  );

  function connect() {
    const source = new EventSource(`${api.runPath(agent, runId)}/events?from=0`);
    state.source = source;
    source.onopen = () => {
      container.dataset.stream = "live";
      setStatus("");
    };
    // Parsed later, within the pump's time budget: a replay's thousands of messages can
    // arrive in one network read, and are dispatched together.
    source.onmessage = (message) => pump.push(message.data);
    source.addEventListener("end", (message) => {
      source.close();
      let run = null;
      try {
        run = JSON.parse(message.data);
      } catch (err) {
        run = null;
      }
      pump.push(() => {
        if (run) {
          state.run = run;
          tree.finish(run);
        }
        container.dataset.stream = "ended";
        drawSummary(state.run, tree, state);
      });
    });
    source.onerror = () => {
      if (state.stopped || container.dataset.stream === "ended") return;
      if (source.readyState === EventSource.CLOSED) {
        container.dataset.stream = "error";
        setStatus("The run's event stream failed.", true);
      } else {
        container.dataset.stream = "reconnecting";
        setStatus("Reconnecting to the run's events…");
      }
    };
  }

  return {
    leave() {
      state.stopped = true;
      pump.stopped = true;
      clearInterval(clock);
      if (state.source) state.source.close();
    },
  };
}

// The run's summary: built again when its record or state changes, its figures updated in place
// (so that its buttons stay the same elements while the run goes on).
function drawSummary(run, tree, state) {
  const live = run.status === "running" || run.status === "queued";
  const root = tree.root;
  const status = live && root && root.state !== "running" ? root.state : run.status;
  const key = [run.run_id, run.status, status, root ? root.traceId : ""].join("|");
  if (state.summaryRun !== run || state.summaryKey !== key) {
    state.summaryRun = run;
    state.summaryKey = key;
    buildSummary(run, status, root);
  }
  const tokens = $("#run-tokens");
  const totals = state.rootTotals;
  if (tokens && live && totals) tokens.textContent = `${fmtTokens(totals.input, totals.output)} so far, all agents`;
  const duration = $("#run-duration");
  const seconds = run.ended && run.started ? run.ended - run.started : root && root.duration ? root.duration : run.started ? Date.now() / 1000 - run.started : null;
  if (duration) duration.textContent = fmtDuration(seconds);
}

function buildSummary(run, status, root) {
  const summary = $("#run-summary");
  clear(summary);
  const live = run.status === "running" || run.status === "queued";
  const usage = run.usage || {};
  const title = h("div", { class: "summary-head" },
    h("h1", {}, h("span", { class: "muted", text: "Run " }), h("code", { class: "run-id", text: run.run_id })),
    h("span", { id: "run-status", class: `badge state-${status}`, data: { status }, text: status }),
  );
  const actions = h("div", { class: "summary-actions" });
  if (status === "running" || status === "queued") {
    actions.append(h("button", { type: "button", id: "cancel", class: "danger", "data-testid": "cancel", text: "Cancel", on: { click: (e) => cancelRun(run, e.target) } }));
  }
  actions.append(h("button", { type: "button", id: "run-audit", class: "secondary", text: "Audit records", on: { click: () => showAudit(run.run_id) } }));
  const jaeger = root ? traceUrl(api.session.jaeger_url, root.traceId) : null;
  if (jaeger) {
    actions.append(h("a", { id: "run-trace", class: "button secondary", href: jaeger, target: "_blank", rel: "noopener noreferrer", text: "Trace in Jaeger" }));
  } else if (root && root.traceId) {
    actions.append(h("button", { type: "button", id: "run-trace", class: "secondary", text: "Trace", on: { click: () => showTrace(root.traceId) } }));
  }
  if (run.session_id && !live) {
    actions.append(h("button", { type: "button", class: "secondary", text: "Continue the conversation", on: { click: () => continueSession(run) } }));
  }
  const facts = h("dl", { class: "facts" });
  const fact = (label, value, attrs) => facts.append(h("dt", { text: label }), h("dd", attrs || {}, value));
  fact("agent", run.agent);
  fact("task", textBlock(run.task, "task-text", "div"));
  if (run.session_id) fact("session", run.session_id);
  if (run.parent_run_id) fact("parent run", run.parent_run_id);
  fact("created", fmtTime(run.created));
  fact("duration", "", { id: "run-duration" });
  if (!live) fact("steps", String(run.steps ?? ""));
  fact("tokens", `${fmtTokens(usage.input_tokens, usage.output_tokens)} own`, { id: "run-tokens" });
  if (!live && Object.keys(run.usage_by_agent || {}).length) {
    const all = sumUsage(run.usage_by_agent);
    fact("all agents", `${fmtTokens(all.input, all.output)} · ${fmtCost(run.cost_usd)}`, { id: "run-cost" });
  }
  if (run.error) fact("error", errorText(run.error), { class: "error-text", id: "run-error" });
  if (run.answer !== null && run.answer !== undefined) fact("answer", textBlock(answerText(run.answer), "answer-text", "div"), { id: "run-answer" });
  summary.append(title, actions, facts);
}

async function cancelRun(run, button) {
  button.disabled = true;
  button.textContent = "Cancelling…";
  try {
    await api.post(`${api.runPath(run.agent, run.run_id)}/cancel`);
    setStatus("Cancellation sent.");
  } catch (err) {
    setStatus(`Cancel failed: ${err.message}`, true);
    button.disabled = false;
    button.textContent = "Cancel";
  }
}

function continueSession(run) {
  startAgent = run.agent;
  location.hash = "#/runs";
  $("#start-agent").value = run.agent;
  $("#start-session").value = run.session_id;
  $("#start-task").value = "";
}

// ---------------------------------------------------------------------------------------------
// Panels: a run's audit records, a trace from the local trace files

function openPanel(title) {
  $("#panel-title").textContent = title;
  const body = $("#panel-body");
  clear(body);
  body.append(h("p", { class: "muted", text: "Loading…" }));
  $("#panel").hidden = false;
  return body;
}

function closePanel() {
  $("#panel").hidden = true;
  clear($("#panel-body"));
}

async function showAudit(runId) {
  const body = openPanel(`Audit records of run ${runId}`);
  try {
    const { records } = await api.get(`/api/audit/${encodeURIComponent(runId)}`);
    clear(body);
    if (!records.length) body.append(h("p", { class: "muted", text: "No audit records for this run." }));
    const list = h("div", { class: "audit-list" });
    const tail = new TailList(list, 200, 5000, "records");
    for (const record of records) {
      tail.append(
        h("details", { class: "audit-record", data: { event: record.event || "", agent: record.agent || "" } },
          h("summary", {},
            h("span", { class: "nowrap", text: fmtTime(record.time ?? record.ts) }), " ",
            h("strong", { text: record.event || "?" }), " ",
            h("span", { class: "muted", text: [record.agent, record.step ? `step ${record.step}` : ""].filter(Boolean).join(" · ") }),
          ),
          textBlock(JSON.stringify(record, null, 2), "json"),
        ),
      );
    }
    tail.flush();
    body.append(list);
  } catch (err) {
    clear(body);
    body.append(h("p", { class: "error-text", text: err.message }));
  }
}

async function showTrace(traceId) {
  const body = openPanel(`Trace ${traceId}`);
  try {
    const { spans } = await api.get(`/api/traces/${encodeURIComponent(traceId)}`);
    clear(body);
    body.append(traceView(spans));
  } catch (err) {
    clear(body);
    body.append(h("p", { class: "error-text", text: `No local spans for this trace: ${err.message}` }));
  }
}

// Spans as a waterfall: nested under their parents, bars placed on the trace's time line.
function traceView(spans) {
  const shown = spans.slice(0, 2000);
  const ids = new Set(shown.map((s) => s.span_id));
  const byParent = new Map();
  for (const span of shown) {
    const parent = ids.has(span.parent_id) ? span.parent_id : "";
    if (!byParent.has(parent)) byParent.set(parent, []);
    byParent.get(parent).push(span);
  }
  for (const list of byParent.values()) list.sort((a, b) => a.start_ns - b.start_ns);
  const start = Math.min(...shown.map((s) => s.start_ns));
  const end = Math.max(...shown.map((s) => s.end_ns));
  const width = Math.max(1, end - start);
  const list = h("div", { class: "trace" });
  const walk = (parent, depth) => {
    for (const span of byParent.get(parent) || []) {
      const bar = h("div", { class: `span-bar${span.error ? " error" : ""}` });
      bar.style.left = `${((span.start_ns - start) / width) * 100}%`;
      bar.style.width = `${Math.max(0.3, ((span.end_ns - span.start_ns) / width) * 100)}%`;
      const label = h("div", { class: "span-label", title: JSON.stringify(span.attributes || {}, null, 1) }, h("span", { class: "span-name", text: span.name }), " ", h("span", { class: "muted", text: `${span.service} · ${Number(span.duration_ms).toFixed(1)} ms` }));
      label.style.paddingLeft = `${depth * 14}px`;
      list.append(h("div", { class: "span", data: { spanId: span.span_id } }, label, h("div", { class: "span-track" }, bar)));
      walk(span.span_id, depth + 1);
    }
  };
  walk("", 0);
  if (spans.length > shown.length) list.append(h("p", { class: "muted", text: `${fmtInt(spans.length - shown.length)} more spans not shown` }));
  return list;
}

// ---------------------------------------------------------------------------------------------
// Start

async function boot() {
  $("#start-form").addEventListener("submit", startTask);
  $("#open-form").addEventListener("submit", openRun);
  $("#agents-refresh").addEventListener("click", () => route());
  $("#panel-close").addEventListener("click", closePanel);
  $("#panel").addEventListener("click", (e) => e.target === $("#panel") && closePanel());
  document.addEventListener("keydown", (e) => e.key === "Escape" && closePanel());
  try {
    api.session = await api.get("/api/session");
  } catch (err) {
    setStatus(`The console's server did not answer: ${err.message}`, true);
    return;
  }
  const { agents, entry, task } = api.session;
  fillAgentSelect($("#start-agent"), agents, false);
  fillAgentSelect($("#filter-agent"), agents, true);
  fillAgentSelect($("#open-agent"), agents, true);
  $("#start-agent").value = entry;
  $("#start-task").value = task || "";
  $("#mesh-entry").textContent = `entry: ${entry}`;
  document.body.dataset.ready = "true";
  window.addEventListener("hashchange", route);
  route();
}

document.addEventListener("DOMContentLoaded", boot);
