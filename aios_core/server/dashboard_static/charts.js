// SVG charts drawn by hand: a Gantt chart of syscall phases and a small line chart.
// Colours come from the stylesheet (classes phase-<name>), so the legend and the bars agree.

import { s, fmtSeconds } from "./dom.js";

export const PHASES = ["queued", "generating", "preempted", "tool", "memory", "storage"];

const LABEL_W = 170;
const ROW_H = 18;
const AXIS_H = 22;

function niceStep(span, target) {
  const raw = span / target;
  const mag = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * mag >= raw) return m * mag;
  return 10 * mag;
}

/**
 * A Gantt chart: one row per label, a bar per segment, a red mark where a run was preempted.
 * rows: [{label, segments: [{start, end, phase, outcome, syscall, core, tokens}]}] with times in epoch seconds.
 * view: {start, end} epoch seconds of the visible range; now: epoch seconds for bars still running.
 */
export function gantt({ rows, view, now, width }) {
  const plotW = Math.max(200, width - LABEL_W - 10);
  const height = AXIS_H + rows.length * ROW_H + 4;
  const span = Math.max(1e-3, view.end - view.start);
  const x = (t) => LABEL_W + ((t - view.start) / span) * plotW;
  const svg = s("svg", { class: "gantt", width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "syscall timeline" });
  // time axis: seconds before now
  const axis = s("g", { class: "axis" });
  const step = niceStep(span, 8);
  const first = Math.ceil((view.start - now) / step) * step;
  for (let rel = first; now + rel <= view.end + 1e-9; rel += step) {
    const px = x(now + rel);
    axis.append(s("line", { x1: px, x2: px, y1: AXIS_H - 4, y2: height, class: "grid" }));
    axis.append(s("text", { x: px, y: AXIS_H - 8, "text-anchor": "middle" }, rel === 0 ? "now" : `${fmtSeconds(-rel)} ago`));
  }
  svg.append(axis);
  let preemptions = 0;
  let shown = 0;
  const clip = s("clipPath", { id: "plot-clip" }, s("rect", { x: LABEL_W, y: 0, width: plotW, height }));
  svg.append(s("defs", null, clip));
  const plot = s("g", { "clip-path": "url(#plot-clip)" });
  rows.forEach((row, i) => {
    const y = AXIS_H + i * ROW_H;
    svg.append(s("text", { x: LABEL_W - 6, y: y + ROW_H - 5, "text-anchor": "end", class: "row-label" }, row.label));
    if (i % 2 === 1) plot.append(s("rect", { x: LABEL_W, y, width: plotW, height: ROW_H, class: "row-band" }));
    for (const seg of row.segments) {
      const end = seg.end ?? now;
      if (end < view.start || seg.start > view.end) continue;
      const x0 = x(Math.max(seg.start, view.start - span));
      const x1 = x(Math.min(end, view.end + span));
      const classes = ["seg", `phase-${seg.phase}`];
      if (seg.end === null) classes.push("open");
      const title = `${seg.phase} ${fmtSeconds(end - seg.start)}` +
        (seg.core ? ` on ${seg.core}` : "") + (seg.tokens ? `, ${seg.tokens} tokens` : "") +
        (seg.outcome ? ` (${seg.outcome})` : "") + ` \u2014 syscall ${seg.syscall.slice(0, 12)}`;
      plot.append(s("rect", {
        x: x0, y: y + 3, width: Math.max(1, x1 - x0), height: ROW_H - 6, class: classes.join(" "),
        "data-phase": seg.phase, "data-syscall": seg.syscall,
      }, s("title", null, title)));
      shown += 1;
      if (seg.phase === "generating" && seg.outcome === "preempted") {
        preemptions += 1;
        plot.append(s("path", { d: `M ${x1} ${y + 1} l 4 -0 l -4 ${ROW_H - 2} z`, class: "preempt-mark" }, s("title", null, `preempted (syscall ${seg.syscall.slice(0, 12)})`)));
      }
    }
  });
  svg.append(plot);
  return { svg, preemptions, shown, plotLeft: LABEL_W, plotWidth: plotW };
}

/**
 * A line chart of one or more series over time: series = [{name, points: [[t, v], ...]}].
 */
export function lineChart({ series, width = 420, height = 140, title, unit = "", tStart, tEnd }) {
  const pad = { l: 44, r: 8, t: 18, b: 18 };
  const svg = s("svg", { class: "line-chart", width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title || "chart" });
  const all = series.flatMap((se) => se.points);
  const t0 = tStart ?? (all.length ? Math.min(...all.map((p) => p[0])) : 0);
  const t1 = tEnd ?? (all.length ? Math.max(...all.map((p) => p[0])) : 1);
  const vmax = Math.max(1e-9, ...all.map((p) => p[1])) * 1.1;
  const x = (t) => pad.l + ((t - t0) / Math.max(1e-9, t1 - t0)) * (width - pad.l - pad.r);
  const y = (v) => height - pad.b - (v / vmax) * (height - pad.t - pad.b);
  if (title) svg.append(s("text", { x: pad.l, y: 12, class: "chart-title" }, title));
  for (const frac of [0, 0.5, 1]) {
    const v = vmax * frac / 1.1;
    svg.append(s("line", { x1: pad.l, x2: width - pad.r, y1: y(v), y2: y(v), class: "grid" }));
    svg.append(s("text", { x: pad.l - 4, y: y(v) + 4, "text-anchor": "end", class: "tick" }, `${v >= 100 ? v.toFixed(0) : v.toFixed(1)}${unit}`));
  }
  svg.append(s("text", { x: width - pad.r, y: height - 4, "text-anchor": "end", class: "tick" }, "now"));
  svg.append(s("text", { x: pad.l, y: height - 4, class: "tick" }, `${fmtSeconds(t1 - t0)} ago`));
  series.forEach((se, i) => {
    if (!se.points.length) return;
    const d = se.points.map((p, j) => `${j ? "L" : "M"} ${x(p[0]).toFixed(1)} ${y(p[1]).toFixed(1)}`).join(" ");
    svg.append(s("path", { d, class: `series series-${i}` }, s("title", null, se.name)));
    const [lt, lv] = se.points[se.points.length - 1];
    svg.append(s("circle", { cx: x(lt), cy: y(lv), r: 2.5, class: `dot series-${i}` }));
  });
  if (!all.length) svg.append(s("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "tick" }, "collecting samples..."));
  return svg;
}

/** Horizontal stacked bars: items = [{label, parts: [{value, cls, title}]}]. */
export function barList(items, { width = 320, max } = {}) {
  const rowH = 20;
  const labelW = 90;
  const top = Math.max(1, max ?? Math.max(0, ...items.map((it) => it.parts.reduce((a, p) => a + p.value, 0))));
  const svg = s("svg", { class: "bars", width, height: items.length * rowH + 4, viewBox: `0 0 ${width} ${items.length * rowH + 4}` });
  items.forEach((it, i) => {
    const y = i * rowH + 2;
    svg.append(s("text", { x: labelW - 6, y: y + 14, "text-anchor": "end", class: "row-label" }, it.label));
    let at = labelW;
    let total = 0;
    for (const p of it.parts) {
      const w = (p.value / top) * (width - labelW - 40);
      if (w > 0) svg.append(s("rect", { x: at, y: y + 3, width: w, height: rowH - 6, class: p.cls }, s("title", null, p.title || `${p.value}`)));
      at += w;
      total += p.value;
    }
    svg.append(s("text", { x: at + 4, y: y + 14, class: "tick" }, String(total)));
  });
  return svg;
}
