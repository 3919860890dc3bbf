// Engine: per pool its scheduler and queue per level; per core batch size and tokens/s over time,
// KV use, prefix-cache hits and snapshots. The history comes from the engine events the app receives.

import { barList, lineChart } from "../charts.js";
import { clear, fmtInt, fmtPct, h } from "../dom.js";

/** Per core: [[t, mean batch between reads]] and [[t, tokens/s between reads]] from cumulative counters. */
export function coreSeries(history, model, coreName) {
  const batch = [];
  const rate = [];
  let prev = null;
  for (const sample of history) {
    const core = sample.pools?.[model]?.cores?.find((c) => c.name === coreName);
    if (!core) { prev = null; continue; }
    if (prev) {
      const dt = sample.monotonic - prev.t;
      const dSteps = core.steps - prev.core.steps;
      if (dt > 0 && dSteps >= 0 && core.generated_tokens >= prev.core.generated_tokens) {
        batch.push([sample.now, dSteps > 0 ? (core.batch_size_sum - prev.core.batch_size_sum) / dSteps : 0]);
        rate.push([sample.now, (core.generated_tokens - prev.core.generated_tokens) / dt]);
      }
    }
    prev = { t: sample.monotonic, core };
  }
  return { batch, rate };
}

function stat(label, value, id) {
  return h("div.stat", id ? { "data-stat": id } : null, h("div.stat-value", null, value), h("div.stat-label", null, label));
}

export function create(root, { engine }) {
  const host = h("div");
  root.append(host);

  function render() {
    const history = engine.history;
    const last = history[history.length - 1];
    clear(host);
    if (!last) { host.append(h("p.hint", null, "waiting for the first reading...")); return; }
    const tStart = Math.max(history[0].now, last.now - engine.spanSeconds);
    for (const [model, pool] of Object.entries(last.pools)) {
      const levels = barList(pool.levels.map((l) => ({
        label: l.level,
        parts: [
          { value: l.queued, cls: "phase-queued", title: `${l.queued} queued` },
          { value: l.preempted, cls: "phase-preempted", title: `${l.preempted} preempted (snapshot held)` },
        ],
      })));
      const card = h("section.card.pool", { dataset: { model } },
        h("h3", null, `model ${model} \u2014 scheduler `, h("code", null, pool.scheduler)),
        h("div.stats", null, stat("queued", fmtInt(pool.queued), "queued"), stat("running", fmtInt(pool.running), "running"),
          stat("completed", fmtInt(pool.completed)), stat("failed", fmtInt(pool.failed))),
        h("h4", null, "waiting per scheduler level"), levels);
      for (const core of pool.cores) {
        const { batch, rate } = coreSeries(history, model, core.name);
        const kv = core.kv;
        card.append(h("div.core", { dataset: { core: core.name } },
          h("h4", null, `core ${core.name} (${core.kind})`),
          h("div.stats", null,
            stat("batch now", `${core.running} / ${core.max_batch}`, "batch"),
            stat("mean batch", core.mean_batch.toFixed(2)),
            stat("tokens/s", core.tokens_per_s.toFixed(1), "tokens_per_s"),
            stat("KV use", kv ? `${fmtPct(kv.share)} (${fmtInt(kv.used)} / ${fmtInt(kv.total)})` : "not reported", "kv"),
            stat("prefix-cache hits", fmtPct(core.prefix_hit_rate), "prefix"),
            stat("snapshots taken / restored", `${fmtInt(core.snapshots)} / ${fmtInt(core.restores)}`, "snapshots"),
            stat("generated tokens", fmtInt(core.generated_tokens))),
          h("div.charts", null,
            lineChart({ series: [{ name: "mean batch size", points: batch }], title: "batch size", tStart, tEnd: last.now }),
            lineChart({ series: [{ name: "tokens/s", points: rate }], title: "tokens/s", tStart, tEnd: last.now }))));
      }
      host.append(card);
    }
    const snaps = last.snapshots || {};
    const waiting = last.managed_waiting || {};
    host.append(h("section.card", null, h("h3", null, "Context manager and managed queues"),
      h("div.stats", null,
        stat("snapshots held", fmtInt(snaps.snapshots_held)), stat("saved", fmtInt(snaps.saved)), stat("restored", fmtInt(snaps.restored)),
        stat("spilled to disk", fmtInt(snaps.spilled)),
        ...Object.entries(waiting).map(([k, v]) => stat(`${k} waiting`, fmtInt(v))))));
    host.append(h("p.hint", null, `Charts: the last ${Math.round(engine.spanSeconds / 60)} minutes this page has been open (pushed when the counters change, at most every ${engine.liveSeconds} s).`));
  }

  const off = engine.subscribe(render);
  render();
  // the app hands every engine event to the shared history, which redraws this view through its subscription
  return { source: () => ({ path: "/v1/dashboard/stream/engine" }), update() {}, destroy() { off(); } };
}
