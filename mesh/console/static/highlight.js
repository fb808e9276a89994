// Python highlighting, by a small tokenizer of this page's own: each token becomes a span
// made with textContent, so highlighted code is as inert as plain text.

import { TEXT_KEPT, TEXT_SHOWN, clear, fmtInt, h, textBlock } from "./dom.js";

const CODE_HIGHLIGHTED = 20000; // longer code is shown plain

// ---------------------------------------------------------------------------------------------
// Python highlighting: a small tokenizer; every token becomes a span with textContent

const PY_KEYWORDS = new Set(
  ("False None True and as assert async await break class continue def del elif else except " +
    "finally for from global if import in is lambda nonlocal not or pass raise return try while " +
    "with yield match case").split(" "),
);
const PY_BUILTINS = new Set(
  ("print len range int str float list dict set tuple bool sum min max abs sorted enumerate zip " +
    "map filter isinstance open any all repr round type final_answer").split(" "),
);
// comment | string (with prefix; triple-quoted may run to the end) | number | name | other
const PY_TOKEN =
  /(#[^\n]*)|((?:[rRbBuUfF]{1,2})?(?:"""[\s\S]*?(?:"""|$)|'''[\s\S]*?(?:'''|$)|"(?:[^"\\\n]|\\.)*"?|'(?:[^'\\\n]|\\.)*'?))|(\d[\d_]*(?:\.[\d_]*)?(?:[eE][+-]?\d+)?j?|\.\d+)|([A-Za-z_][A-Za-z0-9_]*)|(\s+|[^\s\w"'#]+|.)/gy;

function pythonTokens(source) {
  const tokens = [];
  let previous = "";
  PY_TOKEN.lastIndex = 0;
  let match;
  while (PY_TOKEN.lastIndex < source.length && (match = PY_TOKEN.exec(source))) {
    let cls = null;
    const [text, comment, string, number, name] = match;
    if (comment) cls = "tok-com";
    else if (string) cls = "tok-str";
    else if (number) cls = "tok-num";
    else if (name) {
      if (PY_KEYWORDS.has(name)) cls = "tok-kw";
      else if (previous === "def" || previous === "class") cls = "tok-def";
      else if (PY_BUILTINS.has(name)) cls = "tok-builtin";
      previous = name;
    }
    if (!/^\s+$/.test(text) && !name) previous = "";
    tokens.push([cls, text]);
  }
  return tokens;
}

function highlightInto(el, source) {
  if (source.length > CODE_HIGHLIGHTED) {
    el.textContent = source;
    return el;
  }
  const fragment = document.createDocumentFragment();
  let plain = "";
  for (const [cls, text] of pythonTokens(source)) {
    if (!cls) {
      plain += text;
      continue;
    }
    if (plain) fragment.append(plain);
    plain = "";
    fragment.append(h("span", { class: cls, text }));
  }
  if (plain) fragment.append(plain);
  el.append(fragment);
  return el;
}

export function codeBlock(source, cls = "code") {
  const code = String(source ?? "");
  const kept = code.length > TEXT_KEPT ? code.slice(0, TEXT_KEPT) : code;
  const body = h("code");
  const el = h("pre", { class: cls }, body);
  const lines = kept.split("\n");
  if (lines.length <= 80 && kept.length <= TEXT_SHOWN * 3) return highlightInto(body, kept) && el;
  highlightInto(body, lines.slice(0, 60).join("\n").slice(0, TEXT_SHOWN * 3));
  const more = h("button", {
    type: "button",
    class: "more",
    text: `… show all ${fmtInt(lines.length)} lines`,
    on: {
      click: () => {
        clear(body);
        highlightInto(body, kept);
        more.remove();
      },
    },
  });
  el.append(more);
  return el;
}

// Model text with its fenced code blocks highlighted (class model-code: hidden once the step's
// code_action shows the code that ran).
const FENCE = /```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n([\s\S]*?)(?:```|$)/g;

export function modelText(text, cls) {
  const value = String(text ?? "");
  if (value.length > TEXT_SHOWN * 5 || !value.includes("```")) return textBlock(value, cls);
  const el = h("div", { class: cls });
  let last = 0;
  for (const match of value.matchAll(FENCE)) {
    const before = value.slice(last, match.index).trim();
    if (before) el.append(h("pre", { class: "model-text", text: before }));
    el.append(codeBlock(match[2], "model-code"));
    last = match.index + match[0].length;
  }
  const after = value.slice(last).trim();
  if (after) el.append(h("pre", { class: "model-text", text: after }));
  return el;
}
