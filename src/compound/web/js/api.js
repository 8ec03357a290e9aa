// The one module that knows the coordinator's URLs and message shapes.
// Mirror of src/compound/protocol/ (status.py, messages.py) and docs/api.md; keep in step.

export const JobStatus = Object.freeze({
  QUEUED: "queued",
  RUNNING: "running",
  SUCCEEDED: "succeeded",
  FAILED: "failed",
  CANCELLED: "cancelled",
  TIMED_OUT: "timed_out",
});

export const TERMINAL_STATUSES = new Set([
  JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.TIMED_OUT,
]);

export const Stream = Object.freeze({ STDOUT: "stdout", STDERR: "stderr", SYSTEM: "system" });
export const ContributorState = Object.freeze({ ONLINE: "online", OFFLINE: "offline" });

/** Close code of a follow socket for an unknown job (protocol/messages.py CLOSE_UNKNOWN_JOB). */
export const CLOSE_UNKNOWN_JOB = 4404;

export function isTerminal(status) {
  return TERMINAL_STATUSES.has(status);
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

// ------------------------------------------------------------------ base URL resolution

const STORAGE_KEY = "compound.coordinator";
let basePromise = null;

function cleanBase(url) {
  try {
    const u = new URL(url, window.location.href);
    return u.origin + u.pathname.replace(/\/+$/, "");
  } catch {
    return null;
  }
}

function storedBase() {
  const fromQuery = new URLSearchParams(window.location.search).get("coordinator");
  if (fromQuery && cleanBase(fromQuery)) {
    // Per tab, so it survives navigation between pages and reloads without pinning it forever.
    try { sessionStorage.setItem(STORAGE_KEY, fromQuery); } catch { /* storage off */ }
    return cleanBase(fromQuery);
  }
  for (const store of [() => sessionStorage, () => localStorage]) {
    try {
      const value = store().getItem(STORAGE_KEY);
      if (value && cleanBase(value)) return cleanBase(value);
    } catch { /* storage off */ }
  }
  return null;
}

async function desktopBase() {
  // The desktop app serves these pages from its own origin and says where the coordinator is.
  const body = await getLocalSettings();
  return body && body.coordinator_url ? cleanBase(body.coordinator_url) : null;
}

/** The coordinator's base URL (no trailing slash), resolved once per page. */
export function coordinatorBase() {
  if (!basePromise) {
    basePromise = (async () => {
      if (window.location.protocol === "file:") return storedBase() || "http://127.0.0.1:8000";
      return storedBase() || (await desktopBase()) || window.location.origin;
    })();
  }
  return basePromise;
}

/**
 * Point this page's coordinator calls at `url` from now on (after the desktop app saved it).
 * A per-tab ?coordinator= override is dropped: the saved setting is what the user just chose.
 */
export function setCoordinatorBase(url) {
  const base = cleanBase(url);
  if (!base) return;
  try { sessionStorage.removeItem(STORAGE_KEY); } catch { /* storage off */ }
  basePromise = Promise.resolve(base);
}

async function httpUrl(path) {
  return (await coordinatorBase()) + path;
}

async function wsUrl(path) {
  const url = new URL(await httpUrl(path));
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.toString();
}

/** A page URL that carries the ?coordinator= override along. */
export function pageUrl(page, params = {}) {
  const url = new URL(page, window.location.href);
  const coordinator = new URLSearchParams(window.location.search).get("coordinator");
  if (coordinator) url.searchParams.set("coordinator", coordinator);
  for (const [key, value] of Object.entries(params)) url.searchParams.set(key, value);
  return url.pathname.split("/").pop() + url.search;
}

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

async function request(method, path, body) {
  const base = await coordinatorBase();
  let resp;
  try {
    resp = await fetch(base + path, {
      method,
      headers: body === undefined ? {} : { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch {
    throw new ApiError(`Can't reach the coordinator at ${base}. Check that it is running, then try again.`);
  }
  let data = null;
  try { data = await resp.json(); } catch { data = null; }
  if (!resp.ok) {
    const detail = data && typeof data.detail === "string" ? data.detail : null;
    throw new ApiError(errorSentence(resp.status, detail), resp.status, detail);
  }
  return data;
}

function sentence(text) {
  const trimmed = text.trim();
  const capital = trimmed.charAt(0).toUpperCase() + trimmed.slice(1);
  return /[.!?]$/.test(capital) ? capital : `${capital}.`;
}

function errorSentence(status, detail) {
  if (status === 413) return `That script is too big to submit${detail ? ` (${detail.replace(/\.$/, "")})` : ""}.`;
  if (status >= 500) return "The coordinator hit a problem. Try again in a moment.";
  if (detail) return sentence(detail);
  if (status === 404) return "The coordinator doesn't know that job.";
  return `The coordinator refused the request (HTTP ${status}).`;
}

/** POST /api/v1/jobs → JobView. */
export function submitJob(script, { args = [], name = null, env = {}, timeoutS = null } = {}) {
  return request("POST", "/api/v1/jobs", { script, args, env, timeout_s: timeoutS, name });
}

export function getJob(id) {
  return request("GET", `/api/v1/jobs/${encodeURIComponent(id)}`);
}

export async function listJobs(limit = 50) {
  return (await request("GET", `/api/v1/jobs?limit=${limit}`)).jobs;
}

/** GET /api/v1/jobs/{id}/logs → {records, last_seq, complete, job}. */
export function getLogs(id, after = -1, limit = 5000) {
  return request("GET", `/api/v1/jobs/${encodeURIComponent(id)}/logs?after=${after}&limit=${limit}`);
}

export function cancelJob(id) {
  return request("POST", `/api/v1/jobs/${encodeURIComponent(id)}/cancel`);
}

export async function listContributors() {
  return (await request("GET", "/api/v1/contributors")).contributors;
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
  if (window.location.protocol === "file:") return null;
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
export async function saveLocalSettings(changes) {
  let resp;
  try {
    resp = await fetch(LOCAL_SETTINGS, {
      method: "PUT",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(changes),
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
 * it are dropped. Callbacks: onRecords(records), onStatus(job), onEnd(job),
 * onConnection(state) with state in "connecting" | "open" | "retrying" | "closed",
 * onError(ApiError) for an unknown job. Returns {stop(), lastSeq()}.
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
    if (message.type === "records") {
      const fresh = [];
      for (const record of message.records || []) {
        if (record.seq > lastSeq) {
          fresh.push(record);
          lastSeq = record.seq;
        }
      }
      if (fresh.length && onRecords) onRecords(fresh);
    } else if (message.type === "status") {
      if (onStatus) onStatus(message.job);
    } else if (message.type === "end") {
      ended = true;
      if (onEnd) onEnd(message.job);
    }
  }

  async function connect() {
    if (stopped) return;
    connection(attempt === 0 ? "connecting" : "retrying");
    let ws;
    try {
      ws = new WebSocket(await wsUrl(`/api/v1/jobs/${encodeURIComponent(id)}/follow?after=${lastSeq}`));
    } catch {
      return retry();
    }
    if (stopped) { ws.close(1000); return; }
    socket = ws;
    ws.onopen = () => connection("open");
    ws.onmessage = (event) => {
      let message;
      try { message = JSON.parse(event.data); } catch { return; }
      attempt = 0; // the coordinator is talking: the next drop starts the backoff afresh
      handle(message);
    };
    ws.onclose = (event) => {
      socket = null;
      if (stopped || ended) { connection("closed"); return; }
      if (event.code === CLOSE_UNKNOWN_JOB) {
        stopped = true;
        connection("closed");
        if (onError) onError(new ApiError("The coordinator doesn't know that job.", 404));
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
      if (socket) socket.close(1000);
    },
    lastSeq: () => lastSeq,
  };
}
