// Audit: the access manager's log, newest first, with filters and the log's tamper check.

import { getJSON } from "../api.js";
import { clear, debounced, fmtTime, h } from "../dom.js";

export function auditTable(records) {
  return h("table.data#audit-table", null,
    h("thead", null, h("tr", null, ["time", "agent", "group", "action", "resource", "decision", "irreversible", "reason"].map((c) => h("th", null, c)))),
    h("tbody", null, records.map((r) => h(`tr.row-${r.decision}`, { dataset: { id: r.id } },
      h("td", null, fmtTime(r.time)), h("td", null, r.agent), h("td", null, r.group), h("td", null, r.action),
      h("td.resource", null, r.resource), h(`td`, null, h(`span.decision.decision-${r.decision}`, null, r.decision)),
      h("td", null, r.irreversible ? "\u26a0 yes" : ""), h("td.reason", null, r.reason)))));
}

/** A verifier's answer in a line: its scalar fields, long hashes shortened ("records 30, head 7eca2c4ea953..."). */
export function describe(result) {
  if (!result || typeof result !== "object") return String(result ?? "");
  return Object.entries(result)
    .filter(([k, v]) => k !== "path" && k !== "ok" && v !== null && typeof v !== "object")
    .map(([k, v]) => `${k.replaceAll("_", " ")} ${typeof v === "string" && v.length > 16 ? v.slice(0, 12) + "\u2026" : v}`)
    .join(", ");
}

export function create(root, { reconnect, fail }) {
  const f = { agent: "", decision: "", action: "", resource: "", irreversible: false };
  const agent = h("input#audit-agent", { type: "search", placeholder: "agent (exact)", "aria-label": "agent" });
  const decision = h("select#audit-decision", { "aria-label": "decision" }, h("option", { value: "" }, "any decision"), h("option", { value: "allow" }, "allow"), h("option", { value: "deny" }, "deny"));
  const action = h("input#audit-action", { type: "search", placeholder: "action prefix (tool, storage...)", "aria-label": "action" });
  const resource = h("input#audit-resource", { type: "search", placeholder: "resource contains", "aria-label": "resource" });
  const irreversible = h("input#audit-irreversible", { type: "checkbox" });
  const verify = h("div.verify#audit-verify", null, "tamper check: not run yet");
  const summary = h("p.summary#audit-summary");
  const tableHost = h("div");
  let lastVerify = 0;
  const changed = () => {
    Object.assign(f, { agent: agent.value.trim(), decision: decision.value, action: action.value.trim(), resource: resource.value.trim(), irreversible: irreversible.checked });
    reconnect(); // the filters are the stream's parameters: the app closes this stream and opens one with them
  };
  const typed = debounced(changed, 250);
  for (const input of [agent, action, resource]) input.addEventListener("input", typed);
  decision.addEventListener("change", changed);
  irreversible.addEventListener("change", changed);
  root.append(
    h("div.toolbar", null, agent, decision, action, resource, h("label", null, irreversible, " irreversible only"),
      h("button#audit-verify-button", { type: "button", onclick: () => runVerify().catch(fail) }, "Check the log")),
    verify, summary, tableHost,
  );

  async function runVerify() {
    lastVerify = Date.now();
    verify.textContent = "tamper check: running...";
    const v = await getJSON("/v1/dashboard/audit/verify");
    verify.className = "verify " + (!v.available ? "verify-none" : v.ok ? "verify-ok" : v.ok === false ? "verify-bad" : "verify-none");
    const detail = v.message || describe(v.result);
    verify.textContent = !v.available ? `tamper check: ${v.message}` : v.ok ? `tamper check: intact (${detail})` : `tamper check: FAILED: ${detail}`;
    verify.dataset.ok = String(v.ok ?? "none");
  }

  let asked = { ...f };
  function update(data) {
    const filters = asked;
    const filtered = Object.entries(filters).filter(([, v]) => v).map(([k, v]) => (v === true ? k : `${k} ${v}`));
    summary.textContent = `${data.records.length} records, newest first` + (filtered.length ? ` (filtered: ${filtered.join(", ")})` : "") +
      (data.exists ? "" : " \u2014 no audit log yet");
    summary.dataset.count = String(data.records.length);
    clear(tableHost).append(data.records.length ? auditTable(data.records) : h("p.hint", null, "no records match"));
    if (!lastVerify) runVerify().catch(fail);
  }

  return {
    source() {
      asked = { ...f }; // what this stream's events answer, for the summary
      return { path: "/v1/dashboard/stream/audit", params: { ...asked, limit: 200 } };
    },
    update,
    destroy() {},
  };
}
