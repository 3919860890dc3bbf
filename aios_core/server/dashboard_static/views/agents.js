// Agents: one sortable row per agent (the rows `aios ps` prints); a click opens the agent.

import { clear, debounced, fmtInt, fmtSeconds, h } from "../dom.js";

const STATE_ORDER = ["running", "preempted", "queued", "held", "idle"];

export function agentState(row) {
  for (const name of STATE_ORDER.slice(0, -1)) {
    if ((row.programs || []).some((p) => p.state === name)) return name;
  }
  return row.in_flight ? "running" : "idle";
}

const COLUMNS = [
  { key: "name", label: "agent", get: (r) => r.name },
  { key: "framework", label: "framework", get: (r) => r.framework },
  { key: "group", label: "group", get: (r) => r.group },
  { key: "program", label: "program", get: (r) => r.program },
  { key: "state", label: "state", get: (r) => agentState(r), sort: (r) => STATE_ORDER.indexOf(agentState(r)) },
  { key: "syscalls", label: "syscalls", get: (r) => r.syscalls, num: true, fmt: fmtInt },
  { key: "prompt_tokens", label: "tokens in", get: (r) => r.prompt_tokens, num: true, fmt: fmtInt },
  { key: "completion_tokens", label: "tokens out", get: (r) => r.completion_tokens, num: true, fmt: fmtInt },
  { key: "waiting_time", label: "waiting", get: (r) => r.waiting_time, num: true, fmt: fmtSeconds },
  { key: "service_time", label: "service", get: (r) => r.service_time, num: true, fmt: fmtSeconds },
  { key: "wait_share", label: "wait share", get: (r) => share(r), num: true, fmt: (v) => (v === null ? "-" : `${Math.round(100 * v)} %`) },
  { key: "preemptions", label: "preemptions", get: (r) => r.preemptions, num: true, fmt: fmtInt },
];

function share(r) {
  const total = r.waiting_time + r.service_time;
  return total > 0 ? r.waiting_time / total : null;
}

export function create(root) {
  let rows = [];
  let sortKey = "state";
  let ascending = true;
  let filter = "";
  const summary = h("p.summary");
  const table = h("table.data#agents-table");
  const search = h("input#agent-filter", { type: "search", placeholder: "filter by name, group, framework, program", "aria-label": "filter agents" });
  search.addEventListener("input", debounced(() => { filter = search.value.trim().toLowerCase(); render(); }, 150));
  root.append(h("div.toolbar", null, search), summary, table);

  function render() {
    const col = COLUMNS.find((c) => c.key === sortKey) || COLUMNS[0];
    const keyOf = col.sort || col.get;
    const shown = rows
      .filter((r) => !filter || [r.name, r.group, r.framework, r.program].some((v) => String(v).toLowerCase().includes(filter)))
      .sort((a, b) => {
        const ka = keyOf(a) ?? -1;
        const kb = keyOf(b) ?? -1;
        const c = typeof ka === "number" && typeof kb === "number" ? ka - kb : String(ka).localeCompare(String(kb));
        return (ascending ? c : -c) || a.name.localeCompare(b.name);
      });
    const counts = {};
    for (const r of rows) counts[agentState(r)] = (counts[agentState(r)] || 0) + 1;
    summary.textContent = `${rows.length} agents` + (rows.length ? ": " + STATE_ORDER.filter((s) => counts[s]).map((s) => `${counts[s]} ${s}`).join(", ") : "");
    summary.dataset.count = String(rows.length);
    clear(table);
    const head = h("tr", null, COLUMNS.map((c) => h(`th${c.num ? ".num" : ""}`, {
      role: "button", tabindex: 0, "aria-sort": c.key === sortKey ? (ascending ? "ascending" : "descending") : "none",
      dataset: { key: c.key },
      onclick: () => { ascending = c.key === sortKey ? !ascending : !c.num; sortKey = c.key; render(); },
    }, c.label, c.key === sortKey ? (ascending ? " \u25b2" : " \u25bc") : "")));
    table.append(h("thead", null, head));
    const body = h("tbody");
    for (const r of shown) {
      const tr = h("tr.clickable", {
        dataset: { agent: r.name },
        onclick: () => { window.location.hash = `#agent/${encodeURIComponent(r.name)}`; },
      }, COLUMNS.map((c) => {
        const v = c.get(r);
        if (c.key === "state") return h("td", null, h(`span.state.state-${v}`, null, v));
        return h(`td${c.num ? ".num" : ""}`, null, c.fmt ? c.fmt(v) : v);
      }));
      body.append(tr);
    }
    if (!shown.length) body.append(h("tr", null, h("td.empty", { colspan: COLUMNS.length }, rows.length ? "no agent matches the filter" : "no agents registered yet")));
    table.append(body);
  }

  return {
    source: () => ({ path: "/v1/dashboard/stream/agents" }),
    update(data) {
      rows = data.agents;
      render();
    },
    destroy() {},
  };
}
