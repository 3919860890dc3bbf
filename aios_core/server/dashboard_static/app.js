// The dashboard shell: login with the admin token, a view per hash route, one live stream.
// The server pushes the view on screen (plus the engine counters for the header and charts)
// when it changes; no stream is open while the tab is hidden, so nothing is read then.

import { AuthError, LIVE_MS, clearToken, getJSON, getToken, openStream, setToken } from "./api.js";
import { clear, h } from "./dom.js";
import * as agent from "./views/agent.js";
import * as agents from "./views/agents.js";
import * as audit from "./views/audit.js";
import * as engineView from "./views/engine.js";
import * as plugins from "./views/plugins.js";
import * as timeline from "./views/timeline.js";

/** Reconnection backoff after a stream ends or fails: 1 s, doubling to 30 s; any event resets it. */
const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 30000;

const ROUTES = { agents, agent, timeline, engine: engineView, audit, plugins };
const NAV = [["agents", "Agents"], ["timeline", "Timeline"], ["engine", "Engine"], ["audit", "Audit"], ["plugins", "Plugins & config"]];

/** Engine readings shared by the views: the Engine view draws its charts from them. */
const engine = {
  history: [],
  spanSeconds: 600,
  liveSeconds: LIVE_MS / 1000,
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
/** The one stream open (the view on screen), and the reconnection timer with its backoff. */
const live = { controller: null, retry: null, delay: 0, reason: "" };

function showBanner(message) {
  el.banner.textContent = message;
  el.banner.hidden = false;
}

function showLogin(message) {
  disconnect();
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
  current = { name, view: ROUTES[name].create(root, { param, engine, reconnect: connect, fail }) };
  connect();
}

/** A failure a view or the stream reports: a refused token goes back to the login form, anything else to the banner. */
function fail(err) {
  if (err instanceof AuthError) {
    clearToken();
    showLogin(`the kernel refused the token (${err.message}); sign in again`);
    return;
  }
  showBanner(err.message);
}

/** Close the stream (tab hidden, another view, signed out): the server stops reading the view at once. */
function disconnect() {
  clearTimeout(live.retry);
  live.retry = null;
  const controller = live.controller;
  live.controller = null;
  if (controller) controller.abort();
}

/** Open the stream of the view on screen, with the engine counters for the header and charts; replaces any other. */
function connect() {
  disconnect();
  if (!current || el.app.hidden || document.hidden) return; // visibilitychange connects again
  const view = current;
  const controller = new AbortController();
  live.controller = controller;
  live.reason = "";
  const { path, params } = view.view.source();
  openStream(path, { ...params, engine: true }, {
    signal: controller.signal,
    onEvent: (name, data) => { if (live.controller === controller) receive(view, name, data); },
  }).then(() => ended(controller, null), (err) => ended(controller, err));
}

function receive(view, name, data) {
  live.delay = 0;
  try {
    if (name === "engine") {
      engine.add(data);
      el.kernel.textContent = `kernel ${data.state}`;
    }
    if (name === "closing") {
      live.reason = data.reason;
      showBanner(`${data.reason}; reconnecting`);
    } else if (name === "error") {
      showBanner(data.error?.message || `the kernel could not read the ${data.view} view`);
    } else if (name === view.name) {
      view.view.update(data);
      el.banner.hidden = true;
    }
  } catch (err) {
    fail(err);
  }
}

/** The stream ended by itself (server closed it, connection lost, refused): sign in again, or reconnect with backoff. */
function ended(controller, err) {
  if (live.controller !== controller) return; // closed on purpose, or replaced by a newer stream
  live.controller = null;
  if (err instanceof AuthError) {
    fail(err);
    return;
  }
  live.delay = live.delay ? Math.min(RETRY_MAX_MS, live.delay * 2) : RETRY_FIRST_MS;
  const why = live.reason || (err ? err.message : "the kernel closed the live connection");
  showBanner(`${why}; reconnecting in ${Math.round(live.delay / 1000)} s`);
  live.retry = setTimeout(connect, live.delay);
}

window.addEventListener("hashchange", route);
document.addEventListener("visibilitychange", () => {
  if (document.hidden) disconnect();
  else if (!el.app.hidden) connect();
});

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
