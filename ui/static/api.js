// The client of the gateway's JSON API. Requests are same-origin and
// carry the httpOnly session cookies, which no script can read; no token
// is ever kept by the page. A 401 is answered by one refresh (the refresh
// cookie goes to /api/auth/refresh only) and one retry; when that fails
// too, the user must sign in again.

/** An answer of the API other than 2xx; detail is the API's detail (a string, or a 422 list). */
export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : "The request was refused (" + status + ")");
    this.status = status;
    this.detail = detail;
  }
}

/** Thrown when the session is gone; the page has already been sent to sign-in. */
export class SignInRequired extends Error {
  constructor() {
    super("Sign in to continue");
  }
}

let onSignInRequired = () => {};

/** Sets what happens when the session is gone (app.js sends the user to sign-in). */
export function whenSignInRequired(f) {
  onSignInRequired = f;
}

let refreshing = null;

// refresh exchanges the refresh cookie for new cookies; concurrent
// callers share one exchange (a second one would be a reuse).
function refresh() {
  if (!refreshing) {
    refreshing = send("/api/auth/refresh", { method: "POST" })
      .then((res) => res.ok)
      .catch(() => false)
      .finally(() => {
        refreshing = null;
      });
  }
  return refreshing;
}

async function send(path, init) {
  const headers = { Accept: "application/json", ...init.headers };
  try {
    return await fetch(path, { ...init, headers, credentials: "same-origin", cache: "no-store", redirect: "error" });
  } catch {
    throw new ApiError(0, "The server could not be reached. Check your connection and try again.");
  }
}

/**
 * Calls the API: api("GET", "/api/profile"), api("PUT", "/api/profile", { json: {...} }),
 * api("POST", "/api/auth/login", { form: {...}, session: false }).
 * Returns the parsed JSON body (null for 204); throws ApiError or SignInRequired.
 * With session: false a 401 is an ordinary error (sign-in, public pages).
 * With withHeaders: true it returns { body, headers } (for X-Total-Count).
 */
export async function api(method, path, { json, form, session = true, withHeaders = false } = {}) {
  const init = { method, headers: {} };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = new URLSearchParams(form);
  }
  let res = await send(path, init);
  if (res.status === 401 && session) {
    if (await refresh()) {
      res = await send(path, init);
    }
    if (res.status === 401) {
      onSignInRequired();
      throw new SignInRequired();
    }
  }
  const body = await parse(res);
  return withHeaders ? { body, headers: res.headers } : body;
}

async function parse(res) {
  if (res.status === 204) {
    return null;
  }
  let body = null;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  if (!res.ok) {
    const detail = body && body.detail !== undefined ? body.detail : res.statusText || "Error " + res.status;
    throw new ApiError(res.status, detail);
  }
  return body;
}

/** The signed-in user (GET /api/users/me); throws SignInRequired when there is none. */
export function currentUser() {
  return api("GET", "/api/users/me");
}
