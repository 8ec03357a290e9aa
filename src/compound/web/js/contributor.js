// Contributor page: start/stop this machine's agent and watch it work.
//
// Everything shown comes from the agent's typed events (src/compound/protocol/events.py),
// relayed by the desktop app over WS /local/api/events: the app replays the recent ones,
// then streams new ones. The page never parses human log lines. Served by a coordinator
// (no /local/api), the page says contributing needs the desktop app and stays idle.
// In the desktop app the page also shows, and lets the user change, the coordinator URL
// (app.json via /local/api/settings); a running agent keeps its URL until it restarts.
// The running agent's lending controls (pause, resume, drain, settings) are in lending.js.

import {
  backoffMs, getLocalSettings, isCoordinatorUrl, saveLocalSettings, setCoordinatorBase,
} from "./api.js";
import { formatBytes, formatDuration } from "./format.js";
import { LendingPanel } from "./lending.js";
import { AgentEventType, Stream } from "./wire.js";

const MAX_LOG_LINES = 500;
const LOCAL_API = "/local/api";

const $ = (id) => document.getElementById(id);
const ui = {
  toggle: $("agent-toggle"),
  note: $("desktop-note"),
  error: $("error"),
  dot: $("connection-dot"),
  connection: $("connection-status"),
  connectionSub: $("connection-sub"),
  nodeId: $("node-id"),
  runtime: $("runtime"),
  contributorId: $("contributor-id"),
  cpu: $("cpu-usage"),
  ramFree: $("ram-free"),
  ramTotal: $("ram-total"),
  banner: $("job-banner"),
  jobTitle: $("job-title"),
  jobId: $("job-id"),
  jobElapsed: $("job-elapsed"),
  log: $("agent-log"),
};
const coord = {
  section: $("coordinator"),
  view: $("coordinator-view"),
  url: $("coordinator-url"),
  edit: $("coordinator-edit"),
  form: $("coordinator-form"),
  input: $("coordinator-input"),
  save: $("coordinator-save"),
  cancel: $("coordinator-cancel"),
  message: $("coordinator-message"),
};

// ------------------------------------------------------------------ state (pure)
// What the sandbox runtimes are called on the page.
const RUNTIMES = { runsc: "gVisor (runsc)", runc: "runc (Docker's default)" };

// The agent logs its own human lines ("connected to …", "job … started", "job … succeeded",
// "disconnected …"); the page adds a system note only for what the agent cannot say itself
// (which coordinator it was started for, that its process exited).

/** Connection states and the text, dot tone and sub-line each shows. */
const CONNECTION = {
  stopped: { text: "Stopped", dot: "", sub: "Not contributing" },
  connecting: { text: "Connecting…", dot: "dot--connecting", sub: "Reaching the coordinator" },
  connected: { text: "Connected", dot: "dot--online dot--pulse", sub: "Waiting for jobs" },
  disconnected: { text: "Disconnected", dot: "dot--offline", sub: "Lost the coordinator" },
};

export function initialView() {
  return {
    running: false, connection: "stopped", retryInS: null, nodeId: null, contributorId: null, name: null, runtime: null,
    cpuPercent: null, ramFreeBytes: null, ramTotalBytes: null, job: null, agentCoordinatorUrl: null,
    // {state, reason, frozenJobs} from the agent's latest `lending` event; null before one.
    lending: null,
  };
}

/** The view after one event; returns [view, logLine | null]. Unknown events change nothing. */
export function reduce(view, event) {
  const at = event.received_at || Date.now() / 1000;
  switch (event.type) {
    case AgentEventType.STARTING:
      return [{ ...view, running: true, connection: "connecting", nodeId: event.node_id || view.nodeId, name: event.name,
        agentCoordinatorUrl: event.coordinator_url || view.agentCoordinatorUrl },
        note(`Agent starting for ${event.coordinator_url}`)];
    case AgentEventType.CONNECTING:
      return [{ ...view, running: true, connection: "connecting" }, null];
    case AgentEventType.CONNECTED:
      return [{ ...view, running: true, connection: "connected", nodeId: event.node_id, contributorId: event.contributor_id, runtime: event.runtime || null }, null];
    case AgentEventType.DISCONNECTED:
      return [{ ...view, connection: "disconnected", retryInS: event.retry_in_s }, null];
    case AgentEventType.STATS:
      return [{ ...view, cpuPercent: event.cpu_percent, ramFreeBytes: event.ram_free_bytes, ramTotalBytes: event.ram_total_bytes }, null];
    case AgentEventType.JOB_STARTED:
      return [{ ...view, job: { id: event.job_id, startedAt: at } }, null];
    case AgentEventType.JOB_FINISHED:
      return [{ ...view, job: view.job && view.job.id === event.job_id ? null : view.job }, null];
    case AgentEventType.LENDING:
      return [{ ...view, lending: { state: event.lending, reason: event.reason || null, frozenJobs: event.frozen_jobs || [] } }, null];
    case AgentEventType.LOG:
      return [view, { stream: event.level === "info" ? Stream.STDOUT : Stream.STDERR, text: event.message }];
    case AgentEventType.STOPPED:
      return [{ ...view, connection: "stopped", job: null, lending: null }, note(`Agent stopped${event.reason ? `: ${event.reason}` : ""}`)];
    // The desktop app's own event (desktop/sidecar.py), not the agent's.
    case "agent_exited":
      return [{ ...view, running: false, connection: "stopped", job: null, lending: null }, note(`Agent exited (code ${event.code})`)];
    default:
      return [view, null];
  }
}

function note(text, stream = Stream.SYSTEM) {
  return { stream, text };
}

// ------------------------------------------------------------------ rendering

let view = initialView();
let busy = false;
let panel = null; // the lending controls, in the desktop app only

function render() {
  const c = CONNECTION[view.connection] || CONNECTION.stopped;
  ui.connection.textContent = c.text;
  ui.dot.className = `dot ${c.dot}`.trim();
  let sub = c.sub;
  if (view.connection === "disconnected" && view.retryInS !== null) {
    sub = `Retrying in ${Math.max(1, Math.round(view.retryInS))} s`;
  } else if (view.connection === "connected" && view.job) {
    sub = "Running a job";
  }
  ui.connectionSub.textContent = sub;
  ui.nodeId.textContent = view.nodeId || "—";
  ui.nodeId.title = view.nodeId || "";
  // The coordinator may know this node under another id; else show the name it goes by.
  ui.contributorId.textContent = view.contributorId && view.contributorId !== view.nodeId
    ? `contributor ${view.contributorId}` : view.name ? `named ${view.name}` : "";
  ui.runtime.textContent = view.runtime ? `jobs run under ${RUNTIMES[view.runtime] || view.runtime}` : "";
  const live = view.running && view.cpuPercent !== null;
  ui.cpu.textContent = live ? `${view.cpuPercent.toFixed(0)}%` : "—";
  ui.ramFree.textContent = live ? formatBytes(view.ramFreeBytes) : "—";
  ui.ramTotal.textContent = live ? `of ${formatBytes(view.ramTotalBytes)}` : "\u00a0";
  ui.toggle.textContent = view.running ? "Stop contributing" : "Start contributing";
  ui.toggle.classList.toggle("btn--primary", !view.running);
  ui.toggle.setAttribute("aria-pressed", String(view.running));
  renderJob();
  if (panel) panel.render(view);
}

function renderJob() {
  ui.banner.hidden = !view.job;
  if (!view.job) return;
  const frozen = Boolean(view.lending && view.lending.frozenJobs.includes(view.job.id));
  ui.jobTitle.textContent = frozen ? "Job frozen (paused)" : "Running a job";
  ui.jobId.textContent = view.job.id;
  ui.jobElapsed.textContent = formatDuration(Math.max(0, Date.now() / 1000 - view.job.startedAt));
}

/** The agent log: the last MAX_LOG_LINES lines, auto-scroll paused while the user reads. */
class AgentLog {
  constructor(element) {
    this.el = element;
    this.follow = true;
    this.el.addEventListener("scroll", () => {
      this.follow = this.el.scrollHeight - this.el.scrollTop - this.el.clientHeight < 32;
    }, { passive: true });
    this.empty = document.createElement("div");
    this.empty.className = "log-empty";
    this.empty.textContent = "The agent's messages appear here once it starts.";
    this.el.append(this.empty);
  }

  clear() {
    this.el.replaceChildren(this.empty);
  }

  add({ stream, text }) {
    this.empty.remove();
    const line = document.createElement("div");
    line.className = stream === Stream.STDOUT ? "log-line" : `log-line log-line--${stream}`;
    line.textContent = text;
    this.el.append(line);
    while (this.el.childElementCount > MAX_LOG_LINES) this.el.firstElementChild.remove();
    if (this.follow) this.el.scrollTop = this.el.scrollHeight;
  }
}

const log = new AgentLog(ui.log);
const JOB_EVENTS = new Set([AgentEventType.JOB_STARTED, AgentEventType.JOB_FINISHED, AgentEventType.LENDING]);

function apply(event) {
  const [next, line] = reduce(view, event);
  view = next;
  if (line) log.add(line);
  if (event.type === "starting") showError(null);
  if (event.type === "agent_exited" && event.code !== 0 && !busy) {
    showError(`The agent stopped unexpectedly (exit code ${event.code}). Its last messages are in the log below.`);
  }
  render();
  // The agent's status says which jobs run and which are frozen: ask again when that moves.
  if (panel && JOB_EVENTS.has(event.type)) panel.refresh();
}

function showError(message) {
  ui.error.textContent = message || "";
  ui.error.hidden = !message;
}

// ------------------------------------------------------------------ local API

async function localAgent() {
  try {
    const resp = await fetch(`${LOCAL_API}/agent`, { cache: "no-store" });
    if (resp.status !== 200) return null;
    const body = await resp.json();
    return body && typeof body.running === "boolean" ? body : null;
  } catch {
    return null;
  }
}

async function toggleAgent() {
  if (busy) return;
  busy = true;
  ui.toggle.disabled = true;
  const action = view.running ? "stop" : "start";
  if (action === "stop") ui.connection.textContent = "Stopping…";
  try {
    const resp = await fetch(`${LOCAL_API}/agent/${action}`, { method: "POST", cache: "no-store" });
    const body = await resp.json().catch(() => null);
    if (!resp.ok) throw new Error((body && body.detail) || `The agent could not ${action}.`);
    showError(null);
    if (action === "start" && body.running && !view.running) apply({ type: "connecting" });
  } catch (err) {
    showError(err.message || `The agent could not ${action}.`);
  } finally {
    busy = false;
    ui.toggle.disabled = false;
    render();
  }
}

function streamEvents() {
  let attempt = 0;
  const connect = () => {
    const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${LOCAL_API}/events`);
    ws.onmessage = (message) => {
      let event;
      try { event = JSON.parse(message.data); } catch { return; }
      attempt = 0;
      apply(event);
    };
    // Every (re)connect replays the kept events: start from a clean view and log.
    ws.onopen = () => {
      view = { ...initialView(), running: view.running, agentCoordinatorUrl: view.agentCoordinatorUrl };
      log.clear();
    };
    ws.onclose = () => setTimeout(connect, backoffMs(attempt++));
  };
  connect();
}

// ------------------------------------------------------------------ coordinator setting

const INVALID_URL = "Enter a URL that starts with http:// or https://, such as http://127.0.0.1:8000.";
let savingCoordinator = false;

function sayCoordinator(text, tone = null) {
  coord.message.textContent = text;
  coord.message.classList.toggle("is-ok", tone === "ok");
  coord.message.classList.toggle("is-error", tone === "error");
}

function showCoordinatorUrl(url) {
  coord.url.textContent = url;
  coord.url.title = url;
}

function editCoordinator(editing) {
  coord.view.hidden = editing;
  coord.form.hidden = !editing;
  coord.input.removeAttribute("aria-invalid");
  if (editing) {
    sayCoordinator("");
    coord.input.value = coord.url.textContent;
    coord.input.focus();
    coord.input.select();
  } else {
    coord.edit.focus();
  }
}

function refuseCoordinator(message) {
  coord.input.setAttribute("aria-invalid", "true");
  sayCoordinator(message, "error");
  coord.input.focus();
}

async function saveCoordinator(event) {
  event.preventDefault();
  if (savingCoordinator) return;
  const value = coord.input.value.trim();
  if (!isCoordinatorUrl(value)) {
    refuseCoordinator(INVALID_URL);
    return;
  }
  savingCoordinator = true;
  coord.save.disabled = true;
  try {
    const saved = await saveLocalSettings({ coordinator_url: value });
    setCoordinatorBase(saved.coordinator_url, saved);
    showCoordinatorUrl(saved.coordinator_url);
    editCoordinator(false);
    // The agent got its URL on the command line: it keeps it until it is started again.
    const pending = view.running && view.agentCoordinatorUrl !== saved.coordinator_url;
    sayCoordinator(pending
      ? "Saved. The running agent stays on its current coordinator; this one applies the next time you start contributing."
      : "Saved.", "ok");
  } catch (err) {
    refuseCoordinator(err.message || "The app could not save the coordinator URL.");
  } finally {
    savingCoordinator = false;
    coord.save.disabled = false;
  }
}

async function setupCoordinatorSetting() {
  const settings = await getLocalSettings();
  if (!settings) return; // not the desktop app: nothing to change here
  showCoordinatorUrl(settings.coordinator_url);
  coord.section.hidden = false;
  coord.edit.addEventListener("click", () => editCoordinator(true));
  coord.cancel.addEventListener("click", () => { editCoordinator(false); sayCoordinator(""); });
  coord.form.addEventListener("submit", saveCoordinator);
  coord.form.addEventListener("keydown", (event) => {
    if (event.key === "Escape") { event.preventDefault(); editCoordinator(false); sayCoordinator(""); }
  });
}

async function main() {
  const agent = await localAgent();
  if (!agent) {
    ui.note.hidden = false;
    ui.toggle.disabled = true;
    ui.toggle.title = "Contributing needs the desktop app (compound app).";
    render();
    return;
  }
  view = {
    ...view, running: agent.running, connection: agent.running ? "connecting" : "stopped",
    agentCoordinatorUrl: agent.coordinator_url || null,
  };
  panel = new LendingPanel();
  render();
  setupCoordinatorSetting();
  ui.toggle.disabled = false;
  ui.toggle.addEventListener("click", toggleAgent);
  streamEvents();
  setInterval(renderJob, 1000);
}

main();
