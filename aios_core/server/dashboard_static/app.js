// The dashboard shell: login with the admin token, a view per hash route, one refresh loop.
// Only the view on screen is read (plus the engine counters for its charts), and nothing is
// read while the tab is hidden.

import { AuthError, POLL_MS, clearToken, getJSON, getToken, setToken } from "./api.js";
import { clear, h } from "./dom.js";
import * as agent from "./views/agent.js";
import * as agents from "./views/agents.js";
import * as audit from "./views/audit.js";
import * as engineView from "./views/engine.js";
import * as plugins from "./views/plugins.js";
import * as timeline from "./views/timeline.js";

const ROUTES = { agents, agent, timeline, engine: engineView, audit, plugins };
const NAV = [["agents", "Agents"], ["timeline", "Timeline"], ["engine", "Engine"], ["audit", "Audit"], ["plugins", "Plugins & config"]];

/** Engine readings shared by the views: the Engine view draws its charts from them. */
const engine = {
  history: [],
  spanSeconds: 600,
  pollSeconds: POLL_MS / 1000,
  listeners: new Set(),
  subscribe(fn) { this.listeners.add(fn); return () => this.listeners.delete(fn); },
  add(sample) {
    this.history.push(sample);
    while (this.history.length && sample.now - this.history[0].now > this.spanSeconds) this.history.shift();
    for (const fn of this.listeners) fn();
  },
  reset() { this.history = []; },
};

const el = {
  login: document.getElementById("login"),
  loginForm: document.getElementById("login-form"),
  tokenInput: document.getElementById("token"),
  loginError: document.getElementById("login-error"),
  app: document.getElementById("app"),
  nav: document.getElementById("nav"),
  main: document.getElementById("view"),
  banner: document.getElementById("banner"),
  logout: document.getElementById("logout"),
  kernel: document.getElementById("kernel-state"),
};

let current = null;
let timer = null;
let running = false;

function showLogin(message) {
  stop();
  if (current) current.view.destroy();
  current = null;
  engine.reset();
  clear(el.main);
  el.app.hidden = true;
  el.login.hidden = false;
  el.loginError.textContent = message || "";
  el.loginError.hidden = !message;
  el.tokenInput.value = "";
  el.tokenInput.focus();
}

function showApp() {
  el.login.hidden = true;
  el.app.hidden = false;
  route();
}

async function checkToken() {
  const who = await getJSON("/v1/whoami");
  if (!who.admin) throw new AuthError(`this token belongs to agent ${who.agent}; the dashboard needs the admin token`);
}

el.loginForm.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const token = el.tokenInput.value.trim();
  if (!token) return;
  setToken(token);
  try {
    await checkToken();
  } catch (err) {
    clearToken();
    showLogin(err instanceof AuthError ? `not signed in: ${err.message}` : `cannot reach the kernel: ${err.message}`);
    return;
  }
  showApp();
});

el.logout.addEventListener("click", () => { clearToken(); showLogin("signed out"); });

function parseHash() {
  const raw = window.location.hash.replace(/^#/, "");
  const [name, ...rest] = raw.split("/");
  if (!ROUTES[name]) return { name: "agents", param: null };
  return { name, param: rest.length ? decodeURIComponent(rest.join("/")) : null };
}

function route() {
  if (el.app.hidden) return;
  const { name, param } = parseHash();
  if (current) current.view.destroy();
  clear(el.main);
  clear(el.nav).append(...NAV.map(([key, label]) => h("a", {
    href: `#${key}`, class: key === name || (key === "agents" && name === "agent") ? "active" : null, dataset: { view: key },
  }, label)));
  const root = h("div", { class: `view view-${name}`, dataset: { view: name } });
  el.main.append(root);
  current = { name, view: ROUTES[name].create(root, { param, engine }) };
  restart();
}

function stop() {
  clearTimeout(timer);
  timer = null;
}

function restart() {
  stop();
  tick();
}

async function tick() {
  if (running || el.app.hidden) return;
  if (document.hidden) return; // visibilitychange restarts the loop
  running = true;
  const view = current;
  try {
    const sample = await getJSON("/v1/dashboard/engine");
    engine.add(sample);
    el.kernel.textContent = `kernel ${sample.state}`;
    if (view === current) await view.view.refresh();
    el.banner.hidden = true;
  } catch (err) {
    running = false;
    if (err instanceof AuthError) {
      clearToken();
      showLogin(`the kernel refused the token (${err.message}); sign in again`);
      return;
    }
    el.banner.textContent = err.message;
    el.banner.hidden = false;
  }
  running = false;
  stop();
  timer = setTimeout(tick, POLL_MS);
}

window.addEventListener("hashchange", route);
document.addEventListener("visibilitychange", () => { if (!document.hidden && !el.app.hidden) restart(); });

(async () => {
  if (!getToken()) return showLogin("");
  try {
    await checkToken();
    showApp();
  } catch (err) {
    clearToken();
    showLogin(err instanceof AuthError ? `not signed in: ${err.message}` : err.message);
  }
})();
