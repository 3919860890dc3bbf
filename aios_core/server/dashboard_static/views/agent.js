// One agent: its accounting, its programs, its recent syscalls per program and its audit records.

import { gantt } from "../charts.js";
import { clear, fmtInt, fmtSeconds, fmtTime, h } from "../dom.js";
import { agentState } from "./agents.js";
import { auditTable } from "./audit.js";
import { fitView, legend, toRows } from "./timeline.js";

export function create(root, { param }) {
  const name = param;
  const head = h("div.agent-head", null, h("a", { href: "#agents" }, "\u2190 all agents"), h("h2#agent-name", null, name));
  const facts = h("dl.facts");
  const programs = h("div");
  const chart = h("div.chart-host#agent-chart");
  const audit = h("div");
  root.append(head, facts, h("h3", null, "Programs"), programs, h("h3", null, "Recent syscalls (up to 10 minutes), per program"), legend(), chart,
    h("h3", null, "Newest audit records"), audit);

  function fact(label, value) {
    return [h("dt", null, label), h("dd", null, value)];
  }

  return {
    source: () => ({ path: `/v1/dashboard/stream/agents/${encodeURIComponent(name)}` }),
    update(data) {
      const a = data.agent;
      clear(facts).append(
        ...fact("state", h(`span.state.state-${agentState(a)}`, null, agentState(a))),
        ...fact("framework", a.framework), ...fact("group", a.group), ...fact("default program", a.program), ...fact("priority", a.priority),
        ...fact("syscalls", `${fmtInt(a.syscalls)} (${fmtInt(a.failed)} failed, ${fmtInt(a.in_flight)} in flight)`),
        ...fact("by kind", Object.entries(a.by_kind || {}).map(([k, v]) => `${k} ${v}`).join(", ") || "-"),
        ...fact("tokens in / out", `${fmtInt(a.prompt_tokens)} / ${fmtInt(a.completion_tokens)}`),
        ...fact("waiting / service", `${fmtSeconds(a.waiting_time)} / ${fmtSeconds(a.service_time)}`),
        ...fact("preemptions", fmtInt(a.preemptions)),
      );
      clear(programs).append(h("ul", null, (a.programs || []).map((p) => h("li", null, `${p.program}: `, h(`span.state.state-${p.state}`, null, p.state),
        Object.keys(p.states || {}).length ? ` (${Object.entries(p.states).map(([k, v]) => `${v} ${k}`).join(", ")})` : ""))));
      const rows = toRows(data.timeline, "program");
      const width = Math.max(640, chart.clientWidth || 900);
      const drawn = gantt({ rows, view: fitView(data.timeline, data.timeline.window), now: data.timeline.now, width });
      clear(chart).append(rows.length ? drawn.svg : h("p.hint", null, "no syscalls in the last 10 minutes"));
      clear(audit).append(data.audit.length ? auditTable(data.audit) : h("p.hint", null, "no audit records for this agent"));
      head.dataset.updated = fmtTime(data.timeline.now);
    },
    destroy() {},
  };
}
