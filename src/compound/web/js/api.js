// The one module that knows the coordinator's URLs and how to call them (docs/api.md).
// Statuses, message types, close codes and limits come from wire.js, generated from
// src/compound/protocol/ by scripts/gen-wire-js: never copy them here by hand.

import {
  BEARER_SUBPROTOCOL_PREFIX, CLOSE_FORBIDDEN, CLOSE_NORMAL, CLOSE_UNAUTHORIZED, CLOSE_UNKNOWN_JOB,
  FollowMessageType, JOB_LIST_DEFAULT, JobStatus, LOG_PAGE_RECORDS_DEFAULT, SUBPROTOCOL,
  TERMINAL_STATUSES,
} from "./wire.js";

const TERMINAL = new Set(TERMINAL_STATUSES);

export function isTerminal(status) {
  return TERMINAL.has(status);
}

/** The badge text and tone for a job: "Queued (#2)", "Failed (exit 3)", ... */
export function statusLabel(job) {
  if (!job) return { text: "Idle", tone: "idle" };
  switch (job.status) {
    case JobStatus.QUEUED:
      return { text: job.queue_position ? `Queued (#${job.queue_position})` : "Queued", tone: "queued" };
    case JobStatus.RUNNING:
      return { text: "Running", tone: "running" };
    case JobStatus.SUCCEEDED:
      return { text: "Complete ✓", tone: "success" };
    case JobStatus.FAILED:
      return {
        text: job.exit_code === null || job.exit_code === undefined ? "Failed" : `Failed (exit ${job.exit_code})`,
        tone: "failed",
      };
    case JobStatus.CANCELLED:
      return { text: "Cancelled", tone: "cancelled" };
    case JobStatus.TIMED_OUT:
      return { text: "Timed out", tone: "failed" };
    default:
      return { text: String(job.status), tone: "idle" };
  }
}

// ------------------------------------------------------------------ where requests go
//
// The pages call their own origin only, never a server named in a link: in a browser that
// is the coordinator that served them; in the desktop app it is the app's local server,
// which forwards the API and the sockets to the coordinator in its settings (changed on the
// contributor page, by the user) and adds the stored token itself. The pages' CSP
// (connect-src 'self') holds them to it as well. To use another coordinator, open the pages
// it serves, or point the desktop app at it.

let endpointPromise = null;

function cleanBase(url) {
  // The desktop app's setting may name several coordinators (A,B,...): each cleaned.
  if (typeof url === "string" && url.includes(",")) {
    const each = url.split(",").map((one) => cleanBase(one.trim()));
    return each.every(Boolean) ? each.join(",") : null;
  }
  try {
    const u = new URL(url, window.location.href);
    return u.origin + u.pathname.replace(/\/+$/, "");
  } catch {
    return null;
  }
}

/**
 * Resolved once per page: {base, coordinator, desktop, hasToken}. `base` is where requests
 * go (always this page's origin), `coordinator` the coordinator's URL (shown to the user,
 * and the key of its token).
 */
function endpoint() {
  if (!endpointPromise) {
    endpointPromise = (async () => {
      const base = window.location.origin;
      const local = await getLocalSettings();
      if (local) {
        return { base, coordinator: cleanBase(local.coordinator_url), desktop: true, hasToken: Boolean(local.has_token) };
      }
      return { base, coordinator: base, desktop: false, hasToken: false };
    })();
  }
  return endpointPromise;
}

/** The coordinator's base URL (no trailing slash), resolved once per page. */
export async function coordinatorBase() {
  return (await endpoint()).coordinator;
}

/** True when the pages run in the desktop app (and reach the coordinator through it). */
export async function inDesktopApp() {
  return (await endpoint()).desktop;
}

/**
 * The desktop app's coordinator is now `url` (the user saved it on the contributor page):
 * its token, if the app holds one, is whatever the saved settings say. Requests still go to
 * this page's origin, which forwards them. Does nothing outside the desktop app.
 */
export function setCoordinatorBase(url, settings = null) {
  const base = cleanBase(url);
  if (!base) return;
  endpointPromise = (async () => {
    const previous = await endpoint();
    if (!previous.desktop) return previous;
    return { ...previous, coordinator: base, hasToken: Boolean(settings && settings.has_token) };
  })();
  auth.dismissed = false;
  changed();
}

async function wsUrl(path) {
  const url = new URL((await endpoint()).base + path);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.toString();
}

/** A link to another page of the UI, with query parameters (e.g. {job: id}). */
export function pageUrl(page, params = {}) {
  const url = new URL(page, window.location.href);
  for (const [key, value] of Object.entries(params)) url.searchParams.set(key, value);
  return url.pathname.split("/").pop() + url.search;
}

// ------------------------------------------------------------------ access tokens
//
// A coordinator with tokens answers 401 (HTTP) or closes CLOSE_UNAUTHORIZED (sockets) without
// a valid one. Then the page asks for a token (tokenprompt.js), checks it, remembers it per coordinator
// and retries. A browser keeps it in localStorage under the coordinator's URL and sends it
// itself (Authorization header; the subprotocol pair on sockets, as browsers cannot set
// socket headers). The desktop app keeps it in its settings file; its local server adds it.

const TOKEN_KEY_PREFIX = "compound.token:";
// RFC 7230 token characters: what a header value and a WebSocket subprotocol can carry.
const TOKEN_CHARS = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,512}$/;

const auth = {
  generation: 0,     // bumped whenever the token in use changes
  pending: null,     // the open prompt's promise, shared by every request waiting on it
  dismissed: false,  // the user closed the prompt: stop asking until they open it again
  needed: false,     // this coordinator asked for a token
};

/** Fired on window as "compound:auth" when the stored token or the need for one changes. */
function changed() {
  window.dispatchEvent(new CustomEvent("compound:auth"));
}

export function isTokenShaped(text) {
  return TOKEN_CHARS.test(String(text));
}

function browserToken(ep) {
  if (ep.desktop) return null;
  try { return localStorage.getItem(TOKEN_KEY_PREFIX + ep.coordinator); } catch { return null; }
}

/** {coordinator, stored, needed, desktop}: what the title bar's token control shows. */
export async function tokenStatus() {
  const ep = await endpoint();
  return {
    coordinator: ep.coordinator, desktop: ep.desktop, needed: auth.needed,
    stored: ep.desktop ? ep.hasToken : Boolean(browserToken(ep)),
  };
}

async function rememberToken(token) {
  const ep = await endpoint();
  if (ep.desktop) {
    const saved = await localCall("PUT", "/token", { token });
    endpointPromise = Promise.resolve({ ...ep, hasToken: Boolean(saved.has_token) });
  } else {
    try {
      localStorage.setItem(TOKEN_KEY_PREFIX + ep.coordinator, token);
    } catch {
      throw new ApiError("This browser won't store the token (storage is off). Allow site data, then try again.");
    }
  }
  auth.generation += 1;
  auth.dismissed = false;
  changed();
}

/** Forget this coordinator's token (the next request that needs one asks again). */
export async function forgetToken() {
  const ep = await endpoint();
  if (ep.desktop) {
    await localCall("DELETE", "/token");
    endpointPromise = Promise.resolve({ ...ep, hasToken: false });
  } else {
    try { localStorage.removeItem(TOKEN_KEY_PREFIX + ep.coordinator); } catch { /* storage off */ }
  }
  auth.generation += 1;
  changed();
}

/**
 * Check `token` against the coordinator, then remember it. Returns null when it was
 * accepted, else the sentence to show. GET /api/v1/contributors answers every role.
 */
export async function tryToken(token) {
  token = String(token).trim();
  if (!token) return "Paste your access token first.";
  if (!isTokenShaped(token)) return "That doesn't look like a Compound token. Paste it exactly as it was given to you.";
  const ep = await endpoint();
  let resp;
  try {
    resp = await fetch(ep.base + "/api/v1/contributors", { headers: { Authorization: `Bearer ${token}` }, cache: "no-store" });
  } catch {
    return unreachable(ep);
  }
  if (resp.status === 401) return "The coordinator didn't accept that token. Check it and try again.";
  if (!resp.ok && resp.status !== 403) return errorSentence(resp.status, await detailOf(resp), ep);
  try {
    await rememberToken(token);
  } catch (err) {
    return err.message;
  }
  return null;
}

/**
 * Wait for a working token after a 401 that happened while `generation` was in use.
 * Resolves true to retry, false when the user declined (the caller then fails).
 */
async function awaitToken(generation) {
  if (auth.generation !== generation) return true; // someone already fixed it: just retry
  auth.needed = true;
  changed();
  if (auth.dismissed) return false;
  if (!auth.pending) {
    auth.pending = (async () => {
      const { openTokenPrompt } = await import("./tokenprompt.js");
      const ep = await endpoint();
      const rejected = ep.desktop ? ep.hasToken : Boolean(browserToken(ep));
      const outcome = await openTokenPrompt({
        coordinator: ep.coordinator, desktop: ep.desktop, reason: rejected ? "rejected" : "needed",
        stored: rejected, tryToken, forgetToken,
      });
      if (outcome !== "saved") auth.dismissed = true;
      return outcome === "saved";
    })().finally(() => { auth.pending = null; });
  }
  return auth.pending;
}

/** Let the user enter, change or forget the token (the title bar's control). */
export async function manageToken() {
  auth.dismissed = false;
  if (auth.pending) return auth.pending;
  const { openTokenPrompt } = await import("./tokenprompt.js");
  const status = await tokenStatus();
  auth.pending = openTokenPrompt({
    coordinator: status.coordinator, desktop: status.desktop, reason: "manage",
    stored: status.stored, tryToken, forgetToken,
  }).finally(() => { auth.pending = null; });
  return auth.pending;
}

const NEEDS_TOKEN = "This coordinator needs an access token. Choose “Token” at the top of the page to enter one.";

// ------------------------------------------------------------------ REST

/** An error with a sentence fit to show the user; `status` is the HTTP status or 0. */
export class ApiError extends Error {
  constructor(message, status = 0, detail = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.detail = detail;
  }
}

function unreachable(ep) {
  return `Can't reach the coordinator at ${ep.coordinator}. Check that it is running, then try again.`;
}

async function detailOf(resp) {
  try {
    const data = await resp.json();
    return data && typeof data.detail === "string" ? data.detail : null;
  } catch {
    return null;
  }
}

/**
 * One API call; `raw` returns the answer's bytes as a Blob instead of parsed JSON. A Blob
 * `body` is sent as it is (application/octet-stream, with `headers`), anything else as JSON.
 */
async function request(method, path, body, { raw = false, headers: extra = {}, what = "script" } = {}) {
  const blob = body instanceof Blob;
  for (;;) {
    const ep = await endpoint();
    const generation = auth.generation;
    const headers = { ...extra };
    if (body !== undefined) headers["Content-Type"] = blob ? "application/octet-stream" : "application/json";
    const token = browserToken(ep);
    if (token) headers.Authorization = `Bearer ${token}`;
    let resp;
    try {
      resp = await fetch(ep.base + path, {
        method, headers, cache: "no-store",
        body: body === undefined || blob ? body : JSON.stringify(body),
      });
    } catch {
      throw new ApiError(unreachable(ep));
    }
    if (resp.status === 401) {
      if (await awaitToken(generation)) continue;
      throw new ApiError(NEEDS_TOKEN, 401);
    }
    if (raw && resp.ok) return resp.blob();
    let data = null;
    try { data = await resp.json(); } catch { data = null; }
    if (!resp.ok) {
      const detail = data && typeof data.detail === "string" ? data.detail : null;
      throw new ApiError(errorSentence(resp.status, detail, ep, what), resp.status, detail);
    }
    return data;
  }
}

function sentence(text) {
  const trimmed = text.trim();
  const capital = trimmed.charAt(0).toUpperCase() + trimmed.slice(1);
  return /[.!?]$/.test(capital) ? capital : `${capital}.`;
}

function errorSentence(status, detail, ep, what = "script") {
  if (status === 413) {
    const why = detail ? ` (${detail.replace(/\.$/, "")})` : "";
    return what === "inputs" ? `The input files are too big to send${why}.` : `That script is too big to submit${why}.`;
  }
  if (status === 403) return detail ? `Not allowed: ${detail.replace(/\.$/, "")}.` : "Your token isn't allowed to do that.";
  // The desktop app's proxy says so when it can't reach the coordinator.
  if ((status === 502 || status === 504) && ep && ep.desktop) return detail ? sentence(detail) : unreachable(ep);
  if (status >= 500) return "The coordinator hit a problem. Try again in a moment.";
  if (detail) return sentence(detail);
  if (status === 404) return "The coordinator doesn't know that job.";
  return `The coordinator refused the request (HTTP ${status}).`;
}

/** POST /api/v1/jobs → JobView; `inputs` is what uploadInputs answered, or null. */
export function submitJob(
  script, { args = [], name = null, env = {}, timeoutS = null, requirements = [], inputs = null } = {},
) {
  const body = { script, args, env, timeout_s: timeoutS, name };
  if (requirements.length) body.requirements = requirements;
  if (inputs) body.inputs = inputs;
  return request("POST", "/api/v1/jobs", body);
}

/** PUT /api/v1/inputs with one tar (a Blob), and its SHA-256 when known → {sha256, size}. */
export function uploadInputs(tar, sha256 = null) {
  const headers = sha256 ? { "X-Compound-SHA256": sha256 } : {};
  return request("PUT", "/api/v1/inputs", tar, { headers, what: "inputs" });
}

export function getJob(id) {
  return request("GET", `/api/v1/jobs/${encodeURIComponent(id)}`);
}

export async function listJobs(limit = JOB_LIST_DEFAULT) {
  return (await request("GET", `/api/v1/jobs?limit=${limit}`)).jobs;
}

/** GET /api/v1/jobs/{id}/logs → {records, last_seq, complete, job}. */
export function getLogs(id, after = -1, limit = LOG_PAGE_RECORDS_DEFAULT) {
  return request("GET", `/api/v1/jobs/${encodeURIComponent(id)}/logs?after=${after}&limit=${limit}`);
}

export function cancelJob(id) {
  return request("POST", `/api/v1/jobs/${encodeURIComponent(id)}/cancel`);
}

/** GET /api/v1/jobs/{id}/artifacts → [{path, size, sha256}], the job's output files. */
export async function listArtifacts(id) {
  return (await request("GET", `/api/v1/jobs/${encodeURIComponent(id)}/artifacts`)).artifacts;
}

/**
 * One output file's bytes as a Blob. Fetched with the token in a header, never in a URL:
 * the page then saves the Blob through an object URL of its own.
 */
export function downloadArtifact(id, path) {
  const encoded = path.split("/").map(encodeURIComponent).join("/");
  return request("GET", `/api/v1/jobs/${encodeURIComponent(id)}/artifacts/${encoded}`, undefined, { raw: true });
}

/**
 * GET /api/v1/contributors. Admins see every field; other tokens see no `id` and no
 * `current_job_id`, only `busy` (see docs/api.md ContributorView).
 */
export async function listContributors() {
  // A page at a time (`next` is the following page's `after`, null on the last).
  const all = [];
  let after = 0;
  for (;;) {
    const page = await request("GET", `/api/v1/contributors?after=${after}&limit=1000`);
    all.push(...page.contributors);
    if (!Number.isInteger(page.next) || page.next <= after) return all;
    after = page.next;
  }
}

export function health() {
  return request("GET", "/healthz");
}

// ------------------------------------------------------------------ desktop app settings
// Only the desktop app (`compound app`) answers /local/api, on the pages' own origin.

const LOCAL_SETTINGS = "/local/api/settings";
const LOCAL_PROBE_TIMEOUT_MS = 1500;

/** True for an absolute http:// or https:// URL with a host: what a coordinator URL must be. */
export function isCoordinatorUrl(text) {
  let url;
  try { url = new URL(String(text).trim()); } catch { return false; }
  return (url.protocol === "http:" || url.protocol === "https:") && Boolean(url.host);
}

/** GET /local/api/settings → {coordinator_url, ...}, or null when not in the desktop app. */
export async function getLocalSettings() {
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), LOCAL_PROBE_TIMEOUT_MS);
  try {
    const resp = await fetch(LOCAL_SETTINGS, { signal: ctrl.signal, cache: "no-store" });
    if (resp.status !== 200) return null;
    const body = await resp.json();
    return body && typeof body === "object" && typeof body.coordinator_url === "string" ? body : null;
  } catch {
    return null;
  } finally {
    clearTimeout(timer);
  }
}

/** PUT /local/api/settings with the keys to change → the saved settings; throws ApiError. */
export function saveLocalSettings(changes) {
  return localCall("PUT", "/settings", changes);
}

/** GET /local/api/agent/control → {message, status}: the running agent's lending state,
 * settings and jobs, from its control socket; throws ApiError (409: no agent running). */
export function agentControlStatus() {
  return localCall("GET", "/agent/control");
}

/** POST /local/api/agent/{pause|resume|drain|set} → {message, status}; throws ApiError with
 * the agent's sentence when it refuses (a bad value). `set` takes {key, value}. */
export function agentControl(command, body = {}) {
  return localCall("POST", `/agent/${command}`, body);
}

async function localCall(method, path, body) {
  let resp;
  try {
    resp = await fetch(`/local/api${path}`, {
      method,
      headers: body === undefined ? {} : { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch {
    throw new ApiError("Can't reach the desktop app. Restart it, then try again.");
  }
  let data = null;
  try { data = await resp.json(); } catch { data = null; }
  if (!resp.ok) {
    const detail = data && typeof data.detail === "string" ? data.detail : null;
    throw new ApiError(detail ? sentence(detail) : `The app refused the setting (HTTP ${resp.status}).`,
      resp.status, detail);
  }
  return data;
}

// ------------------------------------------------------------------ follow stream

/** Reconnect delay in ms for the n-th consecutive failed attempt (0-based): pure policy. */
export function backoffMs(attempt, { baseMs = 250, maxMs = 8000, jitter = Math.random() } = {}) {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 16));
  return Math.round(ceiling * (0.5 + 0.5 * jitter));
}

/**
 * Follow a job's log and status: WS /api/v1/jobs/{id}/follow?after=N.
 *
 * Each record is delivered once, in seq order: a socket that closes without an `end`
 * message is reopened (with backoff) from the last seq received, and records at or below
 * it are dropped. Callbacks: onRecords(records), onStatus(job) (live statuses only: the
 * final one comes with onEnd, after every record), onEnd(job),
 * onConnection(state) with state in "connecting" | "open" | "retrying" | "closed",
 * onError(ApiError) for an unknown job (404) or a refused token (401, 403); a
 * CLOSE_UNAUTHORIZED close first asks for a token and, given one, reconnects.
 * Returns {stop(), lastSeq()}.
 */
export function followJob(id, { after = -1, onRecords, onStatus, onEnd, onConnection, onError } = {}) {
  let lastSeq = after;
  let stopped = false;
  let ended = false;
  let attempt = 0;
  let socket = null;
  let timer = null;

  const connection = (state, detail) => onConnection && onConnection(state, detail);

  function handle(message) {
    if (message.type === FollowMessageType.RECORDS) {
      const fresh = [];
      for (const record of message.records || []) {
        if (record.seq > lastSeq) {
          fresh.push(record);
          lastSeq = record.seq;
        }
      }
      if (fresh.length && onRecords) onRecords(fresh);
    } else if (message.type === FollowMessageType.STATUS) {
      // A final status can come before the job's last records (always before the end,
      // which carries the final job too): shown at once, "Complete" would sit above output
      // still on its way.
      if (onStatus && !isTerminal(message.job && message.job.status)) onStatus(message.job);
    } else if (message.type === FollowMessageType.END) {
      ended = true;
      if (onEnd) onEnd(message.job);
    }
  }

  async function connect() {
    if (stopped) return;
    connection(attempt === 0 ? "connecting" : "retrying");
    let ws;
    const generation = auth.generation;
    try {
      const url = await wsUrl(`/api/v1/jobs/${encodeURIComponent(id)}/follow?after=${lastSeq}`);
      const token = browserToken(await endpoint());
      // Always offer "compound": the coordinator names it when it refuses a token,
      // and a browser drops a socket whose answer names a subprotocol it did not offer.
      ws = new WebSocket(url, token ? [SUBPROTOCOL, BEARER_SUBPROTOCOL_PREFIX + token] : [SUBPROTOCOL]);
    } catch {
      return retry();
    }
    if (stopped) { ws.close(CLOSE_NORMAL); return; }
    socket = ws;
    ws.onopen = () => connection("open");
    ws.onmessage = (event) => {
      let message;
      try { message = JSON.parse(event.data); } catch { return; }
      attempt = 0; // the coordinator is talking: the next drop starts the backoff afresh
      handle(message);
    };
    ws.onclose = async (event) => {
      socket = null;
      if (stopped || ended) { connection("closed"); return; }
      if (event.code === CLOSE_UNAUTHORIZED && await awaitToken(generation)) {
        attempt = 0;
        connect();
        return;
      }
      const refusal = {
        [CLOSE_UNKNOWN_JOB]: () => new ApiError("The coordinator doesn't know that job.", 404),
        [CLOSE_UNAUTHORIZED]: () => new ApiError(NEEDS_TOKEN, 401),
        [CLOSE_FORBIDDEN]: () => new ApiError("Your token isn't allowed to follow jobs.", 403),
      }[event.code];
      if (refusal) {
        stopped = true;
        connection("closed");
        if (onError) onError(refusal());
        return;
      }
      retry();
    };
  }

  function retry() {
    if (stopped) return;
    const delay = backoffMs(attempt++);
    connection("retrying", { delayMs: delay });
    timer = setTimeout(connect, delay);
  }

  connect();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
      if (socket) socket.close(CLOSE_NORMAL);
    },
    lastSeq: () => lastSeq,
  };
}
