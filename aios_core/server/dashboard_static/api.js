// The dashboard's only way to the kernel: JSON endpoints read with the admin token.
// The token lives in this tab's sessionStorage (gone when the tab closes) and travels
// as an Authorization header, never in a URL.

/** How often the view on screen is refreshed (aios_core/server/dashboard.py UI_POLL_SECONDS says the same). */
export const POLL_MS = 2000;

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

/** GET a JSON endpoint; a 401/403 is an AuthError (back to the login form), any other failure an ApiError. */
export async function getJSON(path, params) {
  const token = getToken();
  if (!token) throw new AuthError("no token");
  const url = new URL(path, window.location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "" && v !== false) url.searchParams.set(k, String(v));
  }
  let response;
  try {
    response = await fetch(url, { headers: { Authorization: `Bearer ${token}` }, cache: "no-store" });
  } catch (err) {
    throw new ApiError(0, `cannot reach the kernel: ${err.message}`);
  }
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
