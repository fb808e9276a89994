// The live tree of a run: a node per agent run, nested as the delegations go, built from
// the run's events (EventJSON) as they come. EventPump applies them a few milliseconds per
// animation frame and redraws what changed once per frame, so that thousands of events
// keep the page responsive; each node's steps and each step's items are capped lists.

import {
  $,
  TEXT_KEPT,
  TEXT_SHOWN,
  TailList,
  answerText,
  badge,
  clear,
  errorText,
  flushLists,
  fmtCost,
  fmtDuration,
  fmtInt,
  fmtTokens,
  h,
  textBlock,
} from "./dom.js";
import { codeBlock, modelText } from "./highlight.js";

const STEPS_SHOWN = 25; // a node's latest steps on the page; earlier ones on demand
const STEPS_KEPT = 400; // beyond this, a node's oldest steps are dropped
const ITEMS_SHOWN = 40; // a step's latest items (tool calls, observations...) on the page
const ITEMS_KEPT = 600;
const ITEMS_PINNED = 3; // a step's first items (its plan, model output, code) stay in view
const FRAME_BUDGET_MS = 10; // time spent applying events per animation frame

// A run's trace in Jaeger (null when there is no valid Jaeger URL or trace id).
export function traceUrl(jaegerUrl, traceId) {
  if (!jaegerUrl || !/^https?:\/\//.test(jaegerUrl) || !/^[0-9a-fA-F]{16,32}$/.test(traceId || "")) return null;
  return `${jaegerUrl.replace(/\/+$/, "")}/trace/${traceId}`;
}

// A node's state from its run_finished's error (the contract's mapping).
function stateOfFinish(error) {
  if (!error) return "succeeded";
  if (error.reason === "run_cancelled" || error.reason === "deadline_exceeded") return "cancelled";
  if (error.reason === "max_steps_exceeded") return "max_steps";
  return "failed";
}

// usage_by_agent summed: tokens, and the cost (null when some agent's price is unknown).
export function sumUsage(byAgent) {
  let input = 0;
  let output = 0;
  let cost = 0;
  for (const usage of Object.values(byAgent || {})) {
    input += usage.input_tokens || 0;
    output += usage.output_tokens || 0;
    cost = cost === null || usage.cost_usd === null || usage.cost_usd === undefined ? null : cost + usage.cost_usd;
  }
  return { input, output, cost };
}

// The tree of one run: a node per agent run, built from the run's events. Options: the mesh's
// `agents` (a call to one is a delegation), `jaegerUrl`, and what the page does on `onTrace`
// (trace id), `onAudit` (run id) and `onRootChange` (root node, its totals).
export class RunTree {
  constructor(container, options) {
    this.container = container;
    this.options = { agents: [], jaegerUrl: null, onTrace() {}, onAudit() {}, onRootChange() {}, ...options };
    this.nodes = new Map();
    this.root = null;
    this.lastIndex = -1;
    this.applied = 0;
    this.dirty = new Set();
    this.calls = new Map(); // run id + call id → tool-call element waiting for its result
  }

  apply(event) {
    if (typeof event.index === "number") {
      if (event.index <= this.lastIndex) return; // seen already (a resumed stream)
      this.lastIndex = event.index;
    }
    this.applied += 1;
    if (!event.run_id) return; // unreadable: nothing to place
    const node = this.node(event);
    const handler = RunTree.handlers[event.type];
    if (handler) handler.call(this, node, event);
    this.touch(node);
  }

  // Every node whose figures changed is redrawn once per frame, its ancestors too (roll-ups).
  touch(node) {
    for (let n = node; n && !this.dirty.has(n); n = n.parent) this.dirty.add(n);
  }

  flush() {
    flushLists();
    for (const node of this.dirty) this.drawHead(node);
    this.dirty.clear();
    this.container.dataset.events = String(this.applied);
    this.container.dataset.lastIndex = String(this.lastIndex);
  }

  node(event) {
    let node = this.nodes.get(event.run_id);
    if (node) return node;
    const parent = this.nodes.get(event.parent_run_id) || null;
    node = {
      runId: event.run_id,
      agent: event.agent,
      parent,
      children: [],
      state: "running",
      task: "",
      traceId: "",
      started: event.time,
      duration: null,
      own: { input: 0, output: 0 },
      finalTotals: null, // from run_finished's usage_by_agent
      steps: new Map(),
      streams: new Map(),
      lastOutput: null, // the step and element of the latest model output (its code fences)
    };
    this.nodes.set(node.runId, node);
    this.build(node);
    if (parent) {
      parent.children.push(node);
      this.childrenBox(parent).append(node.el);
    } else if (!this.root) {
      this.root = node;
      node.el.classList.add("root");
      this.container.append(node.el);
    } else {
      this.container.append(node.el); // a second top-level run: not expected, shown anyway
    }
    return node;
  }

  build(node) {
    const head = h("div", { class: "node-head" });
    node.ui = {
      agent: h("span", { class: "node-agent", text: node.agent }),
      state: badge("running"),
      duration: h("span", { class: "node-duration" }),
      tokens: h("span", { class: "node-tokens", title: "this run's own model tokens" }),
      total: h("span", { class: "node-total-tokens", title: "with every run beneath it" }),
      cost: h("span", { class: "node-cost", title: "cost with every run beneath it" }),
      links: h("span", { class: "node-links" }),
      task: h("div", { class: "node-task" }),
      steps: h("div", { class: "node-steps" }),
      outcome: h("div", { class: "node-outcome" }),
    };
    node.ui.state.classList.add("node-state");
    const toggle = h("button", {
      type: "button",
      class: "node-toggle",
      title: "collapse or expand",
      text: "▾",
      on: { click: () => node.el.classList.toggle("collapsed") },
    });
    head.append(toggle, node.ui.agent, node.ui.state, node.ui.duration, node.ui.tokens, node.ui.total, node.ui.cost, node.ui.links);
    node.body = h("div", { class: "node-body" }, node.ui.task, node.ui.steps, node.ui.outcome);
    node.el = h("div", { class: "run-node", data: { runId: node.runId, agent: node.agent, state: "running" } }, head, node.body);
    node.stepList = new TailList(node.ui.steps, STEPS_SHOWN, STEPS_KEPT, "steps", 1);
  }

  // Where a child run's node goes: under the step of its parent that started it (after the
  // step's items, never hidden among them); children of the same step, that is parallel
  // branches, side by side.
  childrenBox(parent) {
    const step = parent.currentStep ? this.step(parent, parent.currentStep) : null;
    const owner = step || parent;
    if (!owner.childrenBox) {
      owner.childrenBox = h("div", { class: "node-children" });
      if (step) step.el.append(owner.childrenBox);
      else parent.body.insertBefore(owner.childrenBox, parent.ui.outcome);
    }
    return owner.childrenBox;
  }

  step(node, number) {
    let step = node.steps.get(number);
    if (step) return step;
    const itemsEl = h("div", { class: "step-items" });
    const el = h("div", { class: "step", data: { step: number } }, h("div", { class: "step-head", text: `step ${number}` }), itemsEl);
    step = { number, el, items: new TailList(itemsEl, ITEMS_SHOWN, ITEMS_KEPT, "items", ITEMS_PINNED), childrenBox: null };
    node.steps.set(number, step);
    if (node.steps.size > STEPS_KEPT + STEPS_SHOWN) node.steps.delete(node.steps.keys().next().value);
    node.stepList.append(el);
    node.currentStep = Math.max(node.currentStep || 0, number);
    return step;
  }

  addItem(node, event, el) {
    this.step(node, event.step || node.currentStep || 1).items.append(el);
    return el;
  }

  links(node) {
    clear(node.ui.links);
    const { jaegerUrl, onTrace, onAudit } = this.options;
    const jaeger = traceUrl(jaegerUrl, node.traceId);
    if (jaeger) {
      node.ui.links.append(h("a", { class: "trace-link", href: jaeger, target: "_blank", rel: "noopener noreferrer", text: "trace" }));
    } else if (node.traceId) {
      node.ui.links.append(h("button", { type: "button", class: "trace-button link", text: "trace", on: { click: () => onTrace(node.traceId) } }));
    }
    node.ui.links.append(h("button", { type: "button", class: "audit-button link", text: "audit", on: { click: () => onAudit(node.runId) } }));
  }

  totals(node) {
    if (node.finalTotals) return node.finalTotals;
    let input = node.own.input;
    let output = node.own.output;
    let cost = 0;
    for (const child of node.children) {
      const t = this.totals(child);
      input += t.input;
      output += t.output;
      cost = cost === null || t.cost === null ? null : cost + t.cost;
    }
    return { input, output, cost };
  }

  drawHead(node) {
    const { ui } = node;
    node.el.dataset.state = node.state;
    if (ui.state.textContent !== node.state) {
      ui.state.textContent = node.state;
      ui.state.className = `badge node-state state-${node.state}`;
    }
    this.drawDuration(node);
    ui.tokens.textContent = `own ${fmtTokens(node.own.input, node.own.output)}`;
    ui.tokens.dataset.inputTokens = node.own.input;
    ui.tokens.dataset.outputTokens = node.own.output;
    const total = this.totals(node);
    ui.total.textContent = `total ${fmtTokens(total.input, total.output)}`;
    ui.total.dataset.inputTokens = total.input;
    ui.total.dataset.outputTokens = total.output;
    ui.cost.textContent = node.finalTotals ? fmtCost(total.cost) : total.cost ? `≥ ${fmtCost(total.cost)}` : "";
    if (node === this.root) this.options.onRootChange(node, total);
  }

  drawDuration(node) {
    const seconds = node.duration ?? (node.started ? Date.now() / 1000 - node.started : null);
    node.ui.duration.textContent = fmtDuration(seconds);
  }

  tick() {
    for (const node of this.nodes.values()) if (node.state === "running") this.drawDuration(node);
  }

  // The stream ended (`end`, with the root's record): the root's state is the record's, and a
  // node that never reported its finish (its service lost) takes the root's end.
  finish(run) {
    this.unfinishedCalls(null);
    for (const node of this.nodes.values()) {
      if (node.state !== "running") continue;
      node.state = node === this.root ? run.status : run.status === "cancelled" ? "cancelled" : "failed";
      if (node.state === "running" || node.state === "queued") node.state = "failed";
      node.duration = node.duration ?? (run.ended && node.started ? run.ended - node.started : null);
      this.touch(node);
    }
    if (this.root && run.status && run.status !== "running" && run.status !== "queued") {
      this.root.state = run.status;
      if (run.usage_by_agent && Object.keys(run.usage_by_agent).length) {
        this.root.finalTotals = sumUsage(run.usage_by_agent);
      }
      this.touch(this.root);
    }
    this.flush();
  }
}

RunTree.handlers = {
  run_started(node, ev) {
    node.task = ev.task || "";
    node.traceId = ev.trace_id || "";
    node.started = ev.time;
    node.ui.task.append(textBlock(node.task, "task-text", "div"));
    this.links(node);
  },
  model_output_delta(node, ev) {
    const key = `${ev.step}:${ev.planning ? "plan" : "act"}`;
    let stream = node.streams.get(key);
    if (!stream) {
      stream = { text: "", el: h("pre", { class: "streaming" }), step: this.step(node, ev.step || node.currentStep || 1) };
      node.streams.set(key, stream);
      stream.step.items.append(stream.el);
    }
    if (stream.text.length < TEXT_KEPT) stream.text += ev.text || "";
    const text = stream.text;
    stream.el.textContent = text.length > TEXT_SHOWN * 2 ? `…${text.slice(-TEXT_SHOWN * 2)}` : text;
  },
  model_output(node, ev) {
    const meta = [ev.model_id, fmtTokens(ev.input_tokens, ev.output_tokens), fmtDuration(ev.duration_s), ev.cached ? "cached" : ""];
    const el = h("div", { class: "model-output" }, h("div", { class: "item-head", text: `model · ${meta.filter(Boolean).join(" · ")}` }));
    if (ev.text) el.append(modelText(ev.text, "model-output-text"));
    node.lastOutput = { step: ev.step, el };
    this.placeModelText(node, ev, `${ev.step}:act`, el);
    node.own.input += ev.input_tokens || 0;
    node.own.output += ev.output_tokens || 0;
  },
  planning(node, ev) {
    const el = h(
      "div",
      { class: "planning" },
      h("div", { class: "item-head", text: `${ev.initial ? "plan" : "updated plan"} · ${fmtTokens(ev.input_tokens, ev.output_tokens)}` }),
      modelText(ev.plan, "plan-text"),
    );
    this.placeModelText(node, ev, `${ev.step}:plan`, el);
    node.own.input += ev.input_tokens || 0;
    node.own.output += ev.output_tokens || 0;
  },
  code_action(node, ev) {
    if (node.lastOutput && node.lastOutput.step === ev.step) node.lastOutput.el.classList.add("has-code-action");
    this.addItem(node, ev, h("div", { class: "code-action" }, h("div", { class: "item-head", text: "code" }), codeBlock(ev.code)));
  },
  tool_call_started(node, ev) {
    const delegation = this.options.agents.includes(ev.name);
    const args = ev.arguments ?? {};
    const compact = JSON.stringify(args) ?? "";
    const inline = compact.length <= 160; // short arguments on the call's line, others below it
    const el = h(
      "div",
      { class: `tool-call${delegation ? " delegation" : ""}`, data: { callId: ev.call_id, name: ev.name, state: "running" } },
      h("div", { class: "item-head" },
        h("span", { class: "tool-name", text: ev.name }),
        inline ? h("code", { class: "tool-args inline", text: compact }) : null,
        h("span", { class: "tool-duration", text: "running…" }),
      ),
      inline ? null : textBlock(args, "tool-args"),
    );
    el.durationEl = el.querySelector(".tool-duration");
    this.calls.set(`${node.runId}/${ev.call_id}`, el);
    this.addItem(node, ev, el);
  },
  tool_call_finished(node, ev) {
    const key = `${node.runId}/${ev.call_id}`;
    let el = this.calls.get(key);
    this.calls.delete(key);
    if (!el) {
      el = h("div", { class: "tool-call", data: { callId: ev.call_id, name: ev.name } }, h("div", { class: "item-head" }, h("span", { class: "tool-name", text: ev.name }), h("span", { class: "tool-duration" })));
      this.addItem(node, ev, el);
    }
    el.dataset.state = ev.error ? "error" : "done";
    const duration = el.durationEl || $(".tool-duration", el);
    duration.textContent = fmtDuration(ev.duration_s);
    const result = ev.result ?? "";
    if (result.length <= 100 && !result.includes("\n")) {
      // a short result on the call's line: `name {arguments} → result`
      duration.before(h("span", { class: "arrow", text: "→" }), h("code", { class: "tool-result inline", text: result }));
    } else {
      el.append(textBlock(result, "tool-result"));
    }
    if (ev.error) el.append(h("div", { class: "tool-error error-text", text: errorText(ev.error) }));
  },
  observation(node, ev) {
    const text = ev.text || "";
    const el = h("details", { class: "observation", open: text.length <= 300 }, h("summary", { text: `observation · ${fmtInt(text.length)} characters` }), textBlock(text, "observation-text"));
    this.addItem(node, ev, el);
  },
  step_failed(node, ev) {
    this.addItem(node, ev, h("div", { class: "step-error error-text", text: errorText(ev.error) }));
  },
  input_requested(node, ev) {
    this.addItem(node, ev, h("div", { class: "input-requested" }, h("div", { class: "item-head", text: "asks its caller" }), textBlock(ev.question, "question")));
  },
  final_answer(node, ev) {
    node.ui.outcome.append(h("div", { class: "final-answer" }, h("div", { class: "item-head", text: "final answer" }), textBlock(answerText(ev.answer), "answer-text")));
  },
  run_finished(node, ev) {
    node.state = stateOfFinish(ev.error);
    node.duration = ev.duration_s;
    node.own = { input: ev.input_tokens || 0, output: ev.output_tokens || 0 };
    if (ev.usage_by_agent && Object.keys(ev.usage_by_agent).length) {
      node.finalTotals = sumUsage(ev.usage_by_agent);
    }
    if (ev.error) node.ui.outcome.append(h("div", { class: "node-error error-text", text: errorText(ev.error) }));
    for (const stream of node.streams.values()) stream.step.items.remove(stream.el); // cut short
    node.streams.clear();
    this.unfinishedCalls(node.runId);
  },
};

// Calls of a run that ended without their result (the run was cancelled, or its service lost)
// say so, rather than running for ever; `runId` none: every call still waiting.
RunTree.prototype.unfinishedCalls = function unfinishedCalls(runId) {
  for (const [key, el] of this.calls) {
    if (runId && !key.startsWith(`${runId}/`)) continue;
    el.dataset.state = "unfinished";
    el.durationEl.textContent = "no result";
    this.calls.delete(key);
  }
};

// A model's text replaces its live pieces, if they were shown.
RunTree.prototype.placeModelText = function placeModelText(node, ev, key, el) {
  const stream = node.streams.get(key);
  node.streams.delete(key);
  if (!stream || !stream.step.items.replace(stream.el, el)) this.addItem(node, ev, el);
};

// Applies queued events a few milliseconds per animation frame, then redraws what changed.
export class EventPump {
  constructor(tree) {
    this.tree = tree;
    this.queue = [];
    this.head = 0;
    this.scheduled = false;
    this.stopped = false;
  }

  push(item) {
    this.queue.push(item);
    this.schedule();
  }

  schedule() {
    if (this.scheduled || this.stopped) return;
    this.scheduled = true;
    const run = () => this.run();
    if (document.hidden) setTimeout(run, 50);
    else requestAnimationFrame(run);
  }

  run() {
    this.scheduled = false;
    if (this.stopped) return;
    const started = performance.now();
    while (this.head < this.queue.length && performance.now() - started < FRAME_BUDGET_MS) {
      const item = this.queue[this.head++];
      if (typeof item === "function") item();
      else this.tree.apply(parsed(item));
    }
    if (this.head > 1000 || this.head === this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    this.tree.flush();
    if (this.queue.length) this.schedule();
  }
}

// An event's JSON, parsed when it is applied (not when it arrives: see showRun).
function parsed(data) {
  try {
    return JSON.parse(data);
  } catch (err) {
    return { type: "unreadable" }; // applied as an event of no kind: counted, not shown
  }
}
