// Small DOM helpers. Text always goes in through textContent: names, resources and
// reasons come from agents and are never parsed as HTML.

const SVG_NS = "http://www.w3.org/2000/svg";

/** h("tag.class#id", {attr: value, onclick: fn}, ...children) -> Element */
export function h(spec, attrs, ...children) {
  const [tag, ...rest] = spec.split(/(?=[.#])/);
  const el = document.createElement(tag || "div");
  for (const part of rest) {
    if (part.startsWith(".")) el.classList.add(part.slice(1));
    else if (part.startsWith("#")) el.id = part.slice(1);
  }
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

/** The same for SVG elements. */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "value" && "value" in el) el.value = v;
    else if (k === "checked") el.checked = Boolean(v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
}

function append(el, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function fmtSeconds(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "-";
  if (v < 1) return `${Math.round(v * 1000)} ms`;
  if (v < 120) return `${v.toFixed(1)} s`;
  return `${(v / 60).toFixed(1)} min`;
}

export function fmtInt(v) {
  return v === null || v === undefined ? "-" : Number(v).toLocaleString("en-US");
}

export function fmtPct(v) {
  return v === null || v === undefined ? "-" : `${(100 * v).toFixed(0)} %`;
}

export function fmtTime(epochSeconds) {
  const d = new Date(epochSeconds * 1000);
  return d.toLocaleString("sv-SE");
}

/** A controlled text input that calls onChange after the user pauses typing. */
export function debounced(fn, ms = 250) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}
