// Calls to the API with the session cookie. The CSRF token lives in this module's memory only: it is
// read again from GET /console/session on every page load, never stored in the browser.

export class ApiError extends Error {
  constructor(status, code, message, body = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

let csrf = null;
let onSignedOut = () => {};

export function setCsrf(value) {
  csrf = value;
}

/** What to do when the API says the session is gone (expired or signed out in another tab). */
export function whenSignedOut(fn) {
  onSignedOut = fn;
}

/**
 * A JSON request to this origin. query: an object whose empty values are left out. Resolves to the
 * parsed body (null for 204); rejects with an ApiError carrying the API's error code and message.
 */
export async function api(path, {method = "GET", body, query, signal, headers = {}} = {}) {
  const url = new URL(path, location.origin);
  for (const [key, value] of Object.entries(query ?? {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, String(value));
  }
  const sent = {Accept: "application/json", ...headers};
  if (body !== undefined) sent["Content-Type"] = "application/json";
  if (method !== "GET" && csrf) sent["X-CSRF-Token"] = csrf;
  let response;
  try {
    response = await fetch(url, {method, headers: sent, credentials: "same-origin", cache: "no-store", signal,
                                 body: body === undefined ? undefined : JSON.stringify(body)});
  } catch (e) {
    if (e?.name === "AbortError") throw e;
    throw new ApiError(0, "network", "The server could not be reached. Check your connection and try again.");
  }
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = data?.error ?? {};
    const failure = new ApiError(response.status, error.code ?? `http_${response.status}`,
                                 error.message ?? `The server answered ${response.status} ${response.statusText}.`, data);
    if (response.status === 401 && url.pathname.startsWith("/v1/")) onSignedOut(failure);
    throw failure;
  }
  return data;
}

/** Every page of a listing, following next_page_token (at most `limit` items). */
export async function all(path, key, {query = {}, signal, limit = 5000} = {}) {
  const items = [];
  let token = null;
  do {
    const page = await api(path, {query: {...query, page_size: 1000, page_token: token}, signal});
    items.push(...page[key]);
    token = page.next_page_token;
  } while (token && items.length < limit);
  return items;
}

/** A readable sentence for an error, for people (the API's message says what to change). */
export function explain(error, action = "") {
  if (!(error instanceof ApiError)) return `${action ? `${action}: ` : ""}${error?.message ?? error}`;
  const lead = {
    0: "No connection",
    400: "The request was refused",
    401: "You are signed out",
    403: "Not allowed",
    404: "Not found",
    409: "Conflict",
    429: "Over budget",
    503: "The service is busy; try again",
  }[error.status] ?? `Error ${error.status}`;
  return `${action ? `${action}: ` : ""}${lead}. ${error.message}`;
}
