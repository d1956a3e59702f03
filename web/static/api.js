// The items API under api/ (same origin): every request the page makes, each with a time limit.
// A refusal comes back as ApiError, no answer at all as UnavailableError.

import { hooks } from "./page.js";

// Longer than nginx waits for the API (its API_READ_TIMEOUT), so nginx's JSON 504 arrives
// before the page gives up on its own.
const REQUEST_TIMEOUT_MS = 45000;
// Statuses that mean "the API is not there" rather than "the API said no".
const GATEWAY_STATUSES = new Set([502, 503, 504]);

// answered(succeeded): the API gave a real answer (not a 502/503/504); total(count): an answer
// carried the whole list's count.
const [tell, notify] = hooks(["answered", "total"]);
export { notify };

// What the API said no with. `message` is for logs; the page words its own messages, and
// `reference` (the request id) is what support can look up.
export class ApiError extends Error {
  constructor(status, message, reference) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.reference = reference;
  }
}

export class UnavailableError extends Error {
  constructor() {
    super("API unavailable");
    this.name = "UnavailableError";
  }
}

// The web tier's answer to a client writing faster than its limit: it passes by waiting.
export const TOO_MANY = 429;
export const TOO_MANY_MESSAGE = "too many changes from here in a short time. Wait a moment and try again.";

// The reference a message about a refusal ends with, if the API gave one.
export function withReference(error) {
  return error.reference ? ` (reference ${error.reference.slice(0, 8)})` : "";
}

function fetchInit(options) {
  const init = Object.assign({}, options, {
    cache: "no-store",
    headers: Object.assign({ Accept: "application/json" }, options && options.headers),
  });
  if (typeof AbortSignal !== "undefined" && typeof AbortSignal.timeout === "function") {
    init.signal = AbortSignal.timeout(REQUEST_TIMEOUT_MS);
  }
  return init;
}

// The whole list's count, which list answers carry; null without one.
function totalOf(response) {
  const header = response.headers.get("X-Total-Count");
  return header !== null && /^[0-9]+$/.test(header) ? Number(header) : null;
}

// Resolves with the parsed JSON body (null for 204); rejects with UnavailableError when the API
// cannot be reached, or ApiError carrying the API's `detail` message. `onResponse` may read the
// headers of an answer that came.
async function request(path, options, onResponse) {
  let response;
  try {
    response = await fetch(path, fetchInit(options));
  } catch (_) {
    throw new UnavailableError();
  }
  if (GATEWAY_STATUSES.has(response.status)) {
    throw new UnavailableError();
  }
  tell.answered(response.ok);
  if (response.ok) {
    const total = totalOf(response);
    if (total !== null) {
      tell.total(total);
    }
  }
  if (onResponse) {
    onResponse(response);
  }
  const body = await readJson(response);
  if (!response.ok) {
    throw new ApiError(response.status, detailMessage(body, response.status), response.headers.get("X-Request-Id") || "");
  }
  return body;
}

async function readJson(response) {
  const type = response.headers.get("Content-Type") || "";
  if (response.status === 204 || !type.includes("json")) {
    return null;
  }
  try {
    return await response.json();
  } catch (_) {
    return null;
  }
}

// The API answers {"detail": "text"}, or {"detail": [{"msg": ...}, ...]} for a malformed request.
function detailMessage(body, status) {
  const detail = body && body.detail;
  if (typeof detail === "string" && detail.trim() !== "") {
    return detail;
  }
  if (Array.isArray(detail)) {
    const messages = detail
      .map((entry) => (entry && typeof entry.msg === "string" ? entry.msg : ""))
      .filter((msg) => msg !== "");
    if (messages.length > 0) {
      return messages.join("; ");
    }
  }
  return `Request failed (HTTP ${status}).`;
}

export function firstPage(limit) {
  return request(`api/items?limit=${limit}`);
}

export function pageBefore(id, limit) {
  return request(`api/items?before=${encodeURIComponent(id)}&limit=${limit}`);
}

// Asks whether the first page changed since the copy whose ETag is `tag` (a 304 when not).
// Resolves with what the answer says; `items()` reads a changed page's body. A request that got
// no answer at all rejects with the browser's own error.
export async function checkFirstPage(limit, tag) {
  const headers = tag ? { "If-None-Match": tag } : {};
  const response = await fetch(`api/items?limit=${limit}`, fetchInit({ headers }));
  if (GATEWAY_STATUSES.has(response.status)) {
    throw new UnavailableError();
  }
  const read = response.ok || response.status === 304;
  tell.answered(read);
  return {
    changed: response.status === 200,
    total: read ? totalOf(response) : null,
    tag: response.headers.get("ETag"),
    items: () => response.json(),
  };
}

// A fresh key for one add: 128 random bits (crypto.randomUUID needs a secure context).
export function newIdempotencyKey() {
  const bytes = new Uint8Array(16);
  window.crypto.getRandomValues(bytes);
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

// POSTs an item; resolves with it and whether the API answered for an earlier try with the key.
export async function createItem(text, key) {
  let replayed = false;
  const item = await request(
    "api/items",
    {
      method: "POST",
      headers: { "Content-Type": "application/json", "Idempotency-Key": key },
      body: JSON.stringify({ text }),
    },
    (response) => {
      replayed = response.headers.get("Idempotent-Replayed") === "true";
    },
  );
  return { item, replayed };
}

export function updateItem(id, text) {
  return request(`api/items/${encodeURIComponent(id)}`, {
    method: "PATCH",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ text }),
  });
}

export function deleteItem(id) {
  return request(`api/items/${encodeURIComponent(id)}`, { method: "DELETE" });
}

// A DELETE that outlives the page (it is being left); nobody is there to hear how it went.
export function deleteItemOnLeave(id) {
  fetch(`api/items/${encodeURIComponent(id)}`, { method: "DELETE", keepalive: true }).catch(() => {});
}

// Whether the API answers its health check; never rejects.
export async function isHealthy() {
  try {
    const response = await fetch("api/healthz", fetchInit());
    return response.ok;
  } catch (_) {
    return false;
  }
}

// The longest text the API takes (its documented maxLength), or null when it cannot be read: then
// there is no counter, and the API still says no to a text that is too long.
export async function textLimit() {
  try {
    const spec = await request("api/openapi.json");
    const limit = spec.components.schemas.CreateItem.properties.text.maxLength;
    return Number.isInteger(limit) && limit > 0 ? limit : null;
  } catch (_) {
    return null;
  }
}
