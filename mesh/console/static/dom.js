// The page's building blocks: elements (made with createElement and textContent only: the
// only way this page makes elements), capped texts, capped lists, and formatting.

export const TEXT_SHOWN = 2000; // characters of a text shown before "show all"
export const TEXT_KEPT = 100000; // characters of a text kept at all

// ---------------------------------------------------------------------------------------------
// DOM helpers: the only way this page makes elements

function safeHref(url) {
  const text = String(url);
  if (text.startsWith("#")) return text;
  try {
    const parsed = new URL(text, location.href);
    if (parsed.protocol === "http:" || parsed.protocol === "https:") return parsed.href;
  } catch (err) {
    // not a URL: fall through
  }
  return "#";
}

// h("div", {class: "x", text: "...", data: {runId: "r"}, on: {click: fn}}, ...children)
export function h(tag, opts, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(opts || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = String(value);
    else if (key === "data") for (const [k, v] of Object.entries(value)) el.dataset[k] = String(v);
    else if (key === "on") for (const [k, fn] of Object.entries(value)) el.addEventListener(k, fn);
    else if (key === "href") el.href = safeHref(value);
    else if (/^on/i.test(key) || key === "style" || key === "srcdoc") throw new Error(`h(): ${key}`);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) el.append(child);
  }
  return el;
}

export const $ = (selector, root = document) => root.querySelector(selector);

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
}

// A text, capped: its first TEXT_SHOWN characters, the rest (up to TEXT_KEPT) on demand.
export function textBlock(value, cls, tag = "pre") {
  const text = typeof value === "string" ? value : JSON.stringify(value, null, 2) ?? String(value);
  const kept = text.length > TEXT_KEPT ? text.slice(0, TEXT_KEPT) : text;
  const el = h(tag, { class: cls });
  if (kept.length <= TEXT_SHOWN) {
    el.textContent = kept;
    return el;
  }
  el.textContent = kept.slice(0, TEXT_SHOWN);
  const more = h("button", {
    type: "button",
    class: "more",
    text: `… show all ${fmtInt(text.length)} characters`,
    on: {
      click: () => {
        el.textContent = kept;
        if (text.length > kept.length) el.append(h("span", { class: "note", text: `\n[cut at ${fmtInt(kept.length)} characters]` }));
      },
    },
  });
  el.append(" ", more);
  return el;
}

// A list that shows its first `pinned` elements (a step's model output and code) and its
// latest `shown` ones; those between come back on demand, and beyond `kept` the oldest of them
// are dropped (counted), so that a long run's page and memory stay bounded. Appends wait for
// `flush()` (once per frame: `flushLists()`), so that a burst of a thousand items puts only
// the last `shown` of them in the page, once.
const pendingLists = new Set();

export function flushLists() {
  for (const list of pendingLists) list.flush();
  pendingLists.clear();
}

export class TailList {
  constructor(container, shown, kept, noun, pinned = 0) {
    Object.assign(this, { container, shown, kept, noun, pinned });
    this.pending = [];
    this.pinnedEls = [];
    this.visible = [];
    this.hidden = [];
    this.dropped = 0;
    this.button = null;
  }

  append(el) {
    this.pending.push(el);
    pendingLists.add(this);
  }

  // `el` takes the place of `old` (a live piece of text replaced by the whole), wherever it is.
  replace(old, el) {
    for (const list of [this.pending, this.pinnedEls, this.visible, this.hidden]) {
      const at = list.indexOf(old);
      if (at < 0) continue;
      list[at] = el;
      if (old.parentNode) old.replaceWith(el);
      return true;
    }
    return false;
  }

  remove(el) {
    for (const list of [this.pending, this.pinnedEls, this.visible, this.hidden]) {
      const at = list.indexOf(el);
      if (at >= 0) list.splice(at, 1);
    }
    el.remove();
  }

  flush() {
    if (!this.pending.length) return;
    const incoming = this.pending;
    this.pending = [];
    while (this.pinnedEls.length < this.pinned && incoming.length) {
      const el = incoming.shift();
      this.container.insertBefore(el, this.button || this.visible[0] || null);
      this.pinnedEls.push(el);
    }
    const show = incoming.slice(-this.shown);
    const overflow = this.visible.length + show.length - this.shown;
    if (overflow > 0) {
      const older = this.visible.splice(0, overflow);
      for (const el of older) el.remove();
      this.hidden.push(...older);
    }
    this.hidden.push(...incoming.slice(0, incoming.length - show.length));
    if (this.hidden.length > this.kept) this.dropped += this.hidden.splice(0, this.hidden.length - this.kept).length;
    this.container.append(...show);
    this.visible.push(...show);
    this.updateButton();
  }

  showEarlier() {
    const batch = this.hidden.splice(Math.max(0, this.hidden.length - 50));
    const first = this.visible[0] || null;
    for (const el of batch) this.container.insertBefore(el, first);
    this.visible.unshift(...batch);
    this.shown += batch.length;
    this.updateButton();
  }

  updateButton() {
    if (!this.hidden.length && !this.dropped) {
      if (this.button) this.button.remove();
      this.button = null;
      return;
    }
    if (!this.button) {
      this.button = h("button", { type: "button", class: "earlier", on: { click: () => this.showEarlier() } });
    }
    const parts = [];
    if (this.hidden.length) parts.push(`show ${Math.min(50, this.hidden.length)} of ${fmtInt(this.hidden.length)} earlier ${this.noun}`);
    if (this.dropped) parts.push(`${fmtInt(this.dropped)} older ${this.noun} not kept (see the audit records)`);
    this.button.textContent = parts.join(" · ");
    this.button.disabled = !this.hidden.length;
    const next = this.visible[0] || null;
    if (this.button.nextSibling !== next || !this.button.parentNode) this.container.insertBefore(this.button, next);
  }
}

// ---------------------------------------------------------------------------------------------
// Formatting

const INTEGERS = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

export function fmtInt(n) {
  return INTEGERS.format(Number(n || 0));
}

export function fmtTokens(input, output) {
  return `${fmtInt(input)} in · ${fmtInt(output)} out`;
}

export function fmtCost(cost) {
  if (cost === null || cost === undefined) return "price unknown";
  return `$${cost < 0.01 ? cost.toFixed(5) : cost.toFixed(4)}`;
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "";
  if (seconds < 10) return `${seconds.toFixed(2)} s`;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const m = Math.floor(seconds / 60);
  return `${m} m ${String(Math.floor(seconds - m * 60)).padStart(2, "0")} s`;
}

export function fmtTime(unix) {
  if (!unix) return "";
  const d = new Date(unix * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function shorten(text, n) {
  const s = String(text ?? "");
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}

export function answerText(answer) {
  return typeof answer === "string" ? answer : JSON.stringify(answer, null, 2);
}

export function errorText(error) {
  return error ? `${error.reason}: ${error.message}` : "";
}

export function badge(state) {
  return h("span", { class: `badge state-${state}`, text: state });
}
