// Plugins and config: what is loaded and from where, what failed, and the effective configuration.

import { clear, h } from "../dom.js";

export function create(root) {
  const host = h("div");
  root.append(host);
  let shown = null;
  return {
    source: () => ({ path: "/v1/dashboard/stream/plugins" }),
    update(data) {
      const text = JSON.stringify(data);
      if (text === shown) return; // the same as before a reconnection: keep the reader's scroll position and selection
      shown = text;
      clear(host).append(
        h("section.card", null, h("h3", null, `Plugins (${data.plugins.length})`),
          h("table.data#plugins-table", null,
            h("thead", null, h("tr", null, ["plugin", "origin", "module", "contributes"].map((c) => h("th", null, c)))),
            h("tbody", null, data.plugins.map((p) => h("tr", null, h("td", null, p.name), h("td", null, p.origin), h("td", null, p.module || ""),
              h("td", null, Object.entries(p.contributes || {}).map(([k, v]) => `${k}: ${v.join(", ")}`).join("; ") || "-")))))),
        h("section.card", null, h("h3", null, `Failures (${data.errors.length})`),
          data.errors.length
            ? h("ul.errors#plugin-errors", null, data.errors.map((e) => h("li", null, h("strong", null, e.plugin), ` (${e.origin}): ${e.message}`)))
            : h("p.hint#plugin-errors", null, "no plugin failed")),
        h("section.card", null, h("h3", null, "Schedulers and cores"),
          h("ul", null, Object.entries(data.schedulers).map(([m, s]) => h("li", null, `model ${m}: scheduler `, h("code", null, s))),
            Object.entries(data.cores).map(([n, c]) => h("li", null, `core ${n}: ${c.kind}, model ${c.model}`)))),
        h("section.card", null, h("h3", null, "Effective kernel configuration"), h("pre#config-json", null, JSON.stringify(data.config, null, 2))),
        h("section.card", null, h("h3", null, "Server settings"), h("pre", null, JSON.stringify(data.server_settings, null, 2))),
      );
    },
    destroy() {},
  };
}
