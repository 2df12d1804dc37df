// The public REST API, with the login token as "Authorization: Bearer". Requests never carry
// ambient credentials (credentials: "omit": no cookie, no cached Basic password), so another site
// cannot make this browser act on the API, and a 401 never pops up the browser's password dialog.
import { settings } from "./settings.js";

const TOKEN_KEY = "rport-dashboard-token";

export class ApiError extends Error {
  constructor(status, errors) {
    const list = errors && errors.length ? errors : [{ code: "", title: `HTTP ${status}`, detail: "" }];
    super(list.map(describe).join("; "));
    this.status = status;
    this.errors = list;
    this.code = list[0].code || "";
  }
}

export function describe(item) {
  return item.detail ? `${item.title}: ${item.detail}` : item.title;
}

export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  },
  set token(value) {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  },
};

let onUnauthorized = () => {};
// Tokens the API has refused: never sent again (each refusal counts as a failed login of this
// address, and enough of them get it banned).
const refused = new Set();
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

export function apiUrl(path, query) {
  const url = new URL(settings.api + path, location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (value === undefined || value === null || value === "") continue;
    url.searchParams.set(key, String(value));
  }
  return url;
}

// The raw response of a request that succeeded (the caller reads the body), or an ApiError.
export async function send(method, path, { query, body, signal, accept = "application/json", token, retry = false } = {}) {
  const bearer = token === undefined ? session.token : token;
  if (bearer && refused.has(bearer)) {
    throw new ApiError(401, [{ code: "ERR_CODE_UNAUTHORIZED", title: "unauthorized", detail: "the session has ended" }]);
  }
  const headers = { Accept: accept };
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  let payload;
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(apiUrl(path, query), {
      method, headers, body: payload, signal, credentials: "omit", cache: "no-store",
      redirect: "error", referrerPolicy: "no-referrer",
    });
  } catch (exc) {
    if (exc.name === "AbortError") throw exc;
    throw new ApiError(0, [{ code: "", title: "cannot reach the server", detail: exc.message }]);
  }
  if (resp.ok) return resp;
  let errors = null;
  try {
    errors = (await resp.json()).errors;
  } catch {
    errors = null;
  }
  const error = new ApiError(resp.status, errors);
  // (retry: a 401 that does not end the token: a wrong code at the second login step)
  if (resp.status === 401 && bearer && !retry && !refused.has(bearer)) {
    refused.add(bearer);
    if (bearer === session.token) onUnauthorized(error);
  }
  throw error;
}

// JSON answers: {data, meta} for 200s, {} for 204s.
export async function request(method, path, options = {}) {
  const resp = await send(method, path, options);
  if (resp.status === 204) return {};
  return resp.json();
}

export const api = {
  get: (path, query, options = {}) => request("GET", path, { ...options, query }),
  post: (path, body, options = {}) => request("POST", path, { ...options, body }),
  put: (path, body, options = {}) => request("PUT", path, { ...options, body }),
  del: (path, query, options = {}) => request("DELETE", path, { ...options, query }),
};

export const enc = encodeURIComponent;
