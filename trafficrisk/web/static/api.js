// The REST API as the page uses it: JSON in and out, and the session's CSRF token in
// the X-CSRF-Token header on every change (the server refuses changes without it).

const CSRF_TOKEN = document.querySelector('meta[name="csrf-token"]')?.content ?? "";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export async function request(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = CSRF_TOKEN;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) {
    // The session ended (restart, logout elsewhere): back to the login, then here.
    window.location.assign(`/login?next=${encodeURIComponent(window.location.pathname)}`);
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    throw new ApiError(response.status, data?.error ?? `${method} ${path}: HTTP ${response.status}`);
  }
  return data;
}

export const getJson = (path) => request("GET", path);

// Ids may hold characters with a meaning in URLs (alert ids have colons).
export const cameraPath = (id) => `/api/cameras/${encodeURIComponent(id)}`;
export const alertPath = (id) => `/api/alerts/${encodeURIComponent(id)}`;

export function query(params) {
  const kept = Object.entries(params).filter(([, value]) => value !== "" && value != null);
  return kept.length ? `?${new URLSearchParams(kept)}` : "";
}
