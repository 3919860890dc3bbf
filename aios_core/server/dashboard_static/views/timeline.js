// Timeline: a Gantt chart per agent of its syscalls' phases; wheel zooms, drag pans, "Live" follows now.

import { PHASES, gantt } from "../charts.js";
import { clear, debounced, h } from "../dom.js";

const WINDOWS = [[60, "1 min"], [120, "2 min"], [300, "5 min"], [900, "15 min"], [3600, "1 h"]];
const MAX_ROWS = 120;

/** Rows per agent from the endpoint's columnar answer; times become epoch seconds. */
export function toRows(data, rowKey = "agent") {
  const idx = Object.fromEntries(data.columns.map((c, i) => [c, i]));
  const byKey = new Map();
  const add = (r) => {
    const key = r[idx[rowKey]];
    if (!byKey.has(key)) byKey.set(key, []);
    byKey.get(key).push({
      agent: r[idx.agent], program: r[idx.program], syscall: r[idx.syscall], phase: r[idx.phase],
      start: data.now + r[idx.start], end: r[idx.end] === null ? null : data.now + r[idx.end],
      core: r[idx.core], tokens: r[idx.tokens], outcome: r[idx.outcome],
    });
  };
  data.rows.forEach(add);
  data.open.forEach(add);
  return [...byKey.entries()]
    .map(([label, segments]) => ({ label, segments, first: Math.min(...segments.map((x) => x.start)) }))
    .sort((a, b) => a.label.localeCompare(b.label, undefined, { numeric: true }));
}

/** The live view: the window, narrowed to where there are segments (at least 5 s), ending now. */
export function fitView(data, windowSec) {
  const idx = data.columns.indexOf("start");
  let earliest = 0;
  for (const r of data.rows) earliest = Math.min(earliest, r[idx]);
  for (const r of data.open) earliest = Math.min(earliest, r[idx]);
  const span = Math.min(windowSec, Math.max(5, -earliest * 1.03));
  return { start: data.now - span, end: data.now };
}

export function legend() {
  return h("div.legend", null, PHASES.map((p) => h("span.key", null, h(`span.swatch.phase-${p}`), p)),
    h("span.key", null, h("span.swatch.preempt-swatch"), "preemption"));
}

/** Wheel zoom around the cursor and drag to pan on a Gantt chart; calls onChange({start, end}). */
export function zoomPan(host, getView, onChange) {
  let drag = null;
  host.addEventListener("wheel", (ev) => {
    const svg = host.querySelector("svg.gantt");
    if (!svg) return;
    ev.preventDefault();
    const { plotLeft, plotWidth } = host._geometry || { plotLeft: 170, plotWidth: 600 };
    const rect = svg.getBoundingClientRect();
    const frac = Math.min(1, Math.max(0, (ev.clientX - rect.left - plotLeft) / plotWidth));
    const v = getView();
    const span = v.end - v.start;
    const factor = ev.deltaY > 0 ? 1.25 : 0.8;
    const newSpan = Math.min(3600, Math.max(0.05, span * factor));
    const at = v.start + frac * span;
    onChange({ start: at - frac * newSpan, end: at + (1 - frac) * newSpan });
  }, { passive: false });
  host.addEventListener("pointerdown", (ev) => { drag = { x: ev.clientX, view: getView() }; host.setPointerCapture(ev.pointerId); });
  host.addEventListener("pointermove", (ev) => {
    if (!drag) return;
    const { plotWidth } = host._geometry || { plotWidth: 600 };
    const span = drag.view.end - drag.view.start;
    const dt = ((ev.clientX - drag.x) / plotWidth) * span;
    if (Math.abs(ev.clientX - drag.x) > 2) onChange({ start: drag.view.start - dt, end: drag.view.end - dt });
  });
  const stop = () => { drag = null; };
  host.addEventListener("pointerup", stop);
  host.addEventListener("pointercancel", stop);
}

export function create(root, { reconnect }) {
  let windowSec = 120;
  let agentFilter = "";
  let live = true;
  let view = null;
  let data = null;
  const select = h("select#timeline-window", { "aria-label": "window" }, WINDOWS.map(([v, label]) => h("option", { value: v }, label)));
  select.value = String(windowSec);
  const filter = h("input#timeline-agent", { type: "search", placeholder: "agent name contains", "aria-label": "filter agents" });
  const liveBox = h("input#timeline-live", { type: "checkbox", checked: true });
  const status = h("p.summary#timeline-status");
  const chart = h("div.chart-host#timeline-chart");
  root.append(
    h("div.toolbar", null, h("label", null, "last ", select), filter, h("label", null, liveBox, " live (follow now)"),
      h("button#timeline-reset", { type: "button", onclick: () => { live = true; liveBox.checked = true; view = null; render(); } }, "Reset zoom")),
    legend(), status, chart,
    h("p.hint", null, "Scroll on the chart to zoom, drag to pan. Each row is an agent; hover a bar for its syscall."),
  );
  select.addEventListener("change", () => { windowSec = Number(select.value); view = null; live = true; liveBox.checked = true; reconnect(); });
  filter.addEventListener("input", debounced(() => { agentFilter = filter.value.trim().toLowerCase(); render(); }, 150));
  liveBox.addEventListener("change", () => { live = liveBox.checked; if (live) view = null; render(); });
  zoomPan(chart, () => currentView(), (v) => { live = false; liveBox.checked = false; view = v; render(); });

  function currentView() {
    if (!data) return { start: 0, end: 1 };
    if (live || !view) return fitView(data, windowSec);
    return view;
  }

  function render() {
    if (!data) return;
    let rows = toRows(data).filter((r) => !agentFilter || r.label.toLowerCase().includes(agentFilter));
    const hidden = Math.max(0, rows.length - MAX_ROWS);
    rows = rows.slice(0, MAX_ROWS);
    const v = currentView();
    const width = Math.max(640, chart.clientWidth || root.clientWidth || 900);
    const drawn = gantt({ rows, view: v, now: data.now, width });
    chart._geometry = drawn;
    clear(chart).append(drawn.svg);
    status.textContent = `${rows.length} agents, ${drawn.shown} segments in view, ${drawn.preemptions} preemptions` +
      (hidden ? `; ${hidden} more agents not drawn (filter by name)` : "") +
      (data.truncated ? `; only the newest ${data.rows.length} segments were sent` : "");
    status.dataset.preemptions = String(drawn.preemptions);
    status.dataset.segments = String(drawn.shown);
  }

  return {
    // another window opens another stream (the app closes this one first, so no older answer arrives after it)
    source: () => ({ path: "/v1/dashboard/stream/timeline", params: { window: windowSec } }),
    update(answer) {
      data = answer;
      render();
    },
    destroy() {},
  };
}
