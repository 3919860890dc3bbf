// The dashboard's only way to the kernel: the admin token's endpoints, read once (getJSON) or live (openStream).
// The token lives in this tab's sessionStorage (gone when the tab closes) and travels
// as an Authorization header, never in a URL; that is why streams are read with fetch:
// EventSource cannot send a header.

/** At most how often the server pushes a live view (aios_core/server/dashboard.py UI_POLL_SECONDS says the same). */
export const LIVE_MS = 2000;

const KEY = "aios.dashboard.token";

export class AuthError extends Error {}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function getToken() {
  return sessionStorage.getItem(KEY);
}

export function setToken(token) {
  sessionStorage.setItem(KEY, token);
}

export function clearToken() {
  sessionStorage.removeItem(KEY);
}

function endpoint(path, params) {
  const url = new URL(path, window.location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "" && v !== false) url.searchParams.set(k, String(v));
  }
  return url;
}

async function request(path, params, options = {}) {
  const token = getToken();
  if (!token) throw new AuthError("no token");
  const { headers, ...rest } = options;
  try {
    return await fetch(endpoint(path, params), { headers: { Authorization: `Bearer ${token}`, ...headers }, cache: "no-store", ...rest });
  } catch (err) {
    if (options.signal?.aborted) throw err;
    throw new ApiError(0, `cannot reach the kernel: ${err.message}`);
  }
}

/** GET a JSON endpoint; a 401/403 is an AuthError (back to the login form), any other failure an ApiError. */
export async function getJSON(path, params) {
  return checked(await request(path, params));
}

/** The JSON body of an answer, or its error as an AuthError (401/403) or ApiError. */
async function checked(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (response.status === 401 || response.status === 403) {
    throw new AuthError(body?.error?.message || `HTTP ${response.status}`);
  }
  if (!response.ok) {
    throw new ApiError(response.status, body?.error?.message || `HTTP ${response.status}`);
  }
  return body;
}

/**
 * Read a live view: GET `path` as server-sent events, calling onEvent(name, data) for each event
 * (data parsed from JSON). Resolves when the server ends the stream; rejects with an AuthError
 * (401/403), an ApiError (other refusals, a dropped connection) or the AbortError of `signal`.
 */
export async function openStream(path, params, { onEvent, signal }) {
  const response = await request(path, params, { headers: { Accept: "text/event-stream" }, signal });
  if (!response.ok) await checked(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  const parse = sseParser(onEvent);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      parse(value);
    }
  } catch (err) {
    if (signal?.aborted) throw err;
    throw new ApiError(0, `the live connection to the kernel dropped: ${err.message}`);
  } finally {
    reader.cancel().catch(() => {}); // however the loop ends, the connection closes with it
  }
}

/** An incremental parser of the event-stream format: feed it text as it arrives; comments (heartbeats) are skipped. */
export function sseParser(onEvent) {
  let buffer = "";
  let event = "message";
  let data = [];
  return (text) => {
    buffer += text;
    const lines = buffer.split(/\r\n|\r|\n/);
    buffer = lines.pop();
    for (const line of lines) {
      if (line === "") {
        if (data.length) onEvent(event, JSON.parse(data.join("\n")));
        event = "message";
        data = [];
      } else if (line.startsWith(":")) {
        continue;
      } else {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event = value;
        else if (field === "data") data.push(value);
      }
    }
  };
}
