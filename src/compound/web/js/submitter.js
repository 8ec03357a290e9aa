// Submitter page: pick a .py file (and optionally input files, arguments and a timeout),
// submit it, follow its status and log, then offer the files it wrote for download.
//
// The current job id lives in the URL (?job=ID), so a reload, or a link from the jobs page,
// follows the job again from the start (after = -1) and shows its whole log exactly once.

import {
  cancelJob, coordinatorBase, followJob, getLogs, health, isTerminal, pageUrl, statusLabel,
  submitJob, uploadInputs,
} from "./api.js";
import { showArtifacts } from "./artifacts.js";
import { h } from "./dom.js";
import { formatBytes, formatDuration, jobDuration } from "./format.js";
import { InputsPicker } from "./inputs.js";
import { LogPanel } from "./logpanel.js";
import { JobStatus } from "./wire.js";

const $ = (id) => document.getElementById(id);
const els = {
  form: $("submit-form"),
  input: $("script-input"),
  fileName: $("file-name"),
  submit: $("submit-button"),
  cancel: $("cancel-button"),
  badge: $("status-badge"),
  error: $("error"),
  jobId: $("job-id"),
  meta: $("meta"),
  lineCount: $("line-count"),
  log: $("log-output"),
  requirements: $("requirements-input"),
  args: $("args-input"),
  timeout: $("timeout-input"),
};
// The API's bound on timeout_s: 7 days.
const MAX_TIMEOUT_S = 7 * 24 * 3600;

const IDLE_TEXT = "Choose a script and press Submit Job. Its output will appear here.";
const panel = new LogPanel(els.log, { emptyText: IDLE_TEXT, fullLog: fullLogText });
// For tests and the curious: everything received, e.g. window.compoundLog.text().
window.compoundLog = panel;

const state = {
  file: null,        // the chosen File
  job: null,         // the latest JobView of the job on screen
  follow: null,      // the followJob handle while following
  submitting: false,
  connection: "idle",
  ticker: null,
};

const inputs = new InputsPicker({
  filesInput: $("inputs-files"),
  folderInput: $("inputs-folder"),
  list: $("inputs-list"),
  summary: $("inputs-summary"),
  onChange: (problem) => showError(problem || ""),
});

// ------------------------------------------------------------------ view

function active() {
  return Boolean(state.job && !isTerminal(state.job.status));
}

function updateControls() {
  els.submit.disabled = !state.file || state.submitting || active();
  els.cancel.hidden = !active();
}

function showError(message) {
  els.error.textContent = message;
  els.error.hidden = !message;
}

function setBadge(job) {
  const { text, tone } = statusLabel(job);
  if (els.badge.textContent !== text) els.badge.textContent = text;
  els.badge.className = `badge badge--${tone}`;
}

/** Why a queued job waits and, once the coordinator knows its recent pace, when it may start. */
function waitingText(job) {
  const why = job.waiting_reason || "waiting for a contributor";
  const s = job.estimated_start_s;
  if (s === null || s === undefined) return why;
  const about = s < 90 ? `${Math.max(1, Math.round(s))} s` : s < 5400 ? `${Math.round(s / 60)} min` : `${Math.round(s / 3600)} h`;
  return `${why}; starts in about ${about}`;
}

function renderMeta() {
  const job = state.job;
  const parts = [];
  if (job) {
    if (job.name) parts.push(h("span", {}, h("b", {}, job.name)));
    if (job.contributor_id) parts.push(h("span", {}, "on ", h("b", { class: "mono" }, job.contributor_id)));
    if (job.started_at) parts.push(h("span", {}, formatDuration(jobDuration(job))));
    if (job.attempts > 1) parts.push(h("span", {}, `attempt ${job.attempts}`));
    if (job.status === JobStatus.QUEUED) parts.push(h("span", { "data-testid": "job-waiting" }, waitingText(job)));
    if (job.error && isTerminal(job.status)) parts.push(h("span", {}, job.error));
  }
  if (state.connection === "retrying") parts.push(h("span", {}, "Reconnecting to the coordinator…"));
  els.meta.replaceChildren(...parts);
  const count = panel.lineCount;
  els.lineCount.textContent = count ? `${count.toLocaleString("en")} line${count === 1 ? "" : "s"}` : "";
}

function setJob(job) {
  // A job never leaves a final status; a late, stale view must not undo it.
  if (state.job && state.job.id === job.id && isTerminal(state.job.status) && !isTerminal(job.status)) return;
  state.job = job;
  els.jobId.textContent = job.id;
  setBadge(job);
  if (job.status === JobStatus.QUEUED) panel.setEmptyText(`Waiting: ${waitingText(job)}…`);
  else if (job.status === JobStatus.RUNNING) panel.setEmptyText("Running — no output yet.");
  else panel.setEmptyText("This job wrote no output.");
  clearInterval(state.ticker);
  state.ticker = job.status === JobStatus.RUNNING ? setInterval(renderMeta, 1000) : null;
  renderMeta();
  updateControls();
}

// ------------------------------------------------------------------ following

/** The job's whole stored output from the coordinator, all streams in seq order. */
async function fullLogText() {
  if (!state.job) return null;
  const parts = [];
  let after = -1;
  for (;;) {
    const page = await getLogs(state.job.id, after, 5000);
    for (const record of page.records) parts.push(record.data);
    if (!page.records.length || page.complete) return parts.join("");
    after = page.last_seq;
  }
}

function follow(job) {
  if (state.follow) state.follow.stop();
  panel.reset("Connecting…");
  panel.filename = `compound-${job.id}.log`;
  if (job.status) setJob(job);
  else els.jobId.textContent = job.id;
  state.follow = followJob(job.id, {
    after: -1,
    onRecords(records) {
      panel.append(records);
      scheduleMeta();
    },
    onStatus: setJob,
    onEnd(final) {
      panel.finish();
      state.follow = null;
      setJob(final);
      showArtifacts(final, {
        section: $("artifacts"), list: $("artifacts-list"), note: $("artifacts-note"), all: $("artifacts-all"),
      });
    },
    onConnection(connection) {
      // How often the follow stream was lost and picked up again (shown to tests as data-*).
      if (connection === "retrying" && state.connection === "open") {
        els.log.dataset.reconnects = String(Number(els.log.dataset.reconnects || 0) + 1);
      }
      state.connection = connection;
      els.log.dataset.connection = connection;
      renderMeta();
    },
    onError(err) {
      state.follow = null;
      badgeUnknown();
      showError(err.status === 404 ? `This coordinator has no job with id ${job.id}.` : err.message);
    },
  });
}

let metaQueued = false;
function scheduleMeta() {
  if (metaQueued) return;
  metaQueued = true;
  requestAnimationFrame(() => { metaQueued = false; renderMeta(); });
}

function badgeUnknown() {
  state.job = null;
  setBadge(null);
  panel.reset(IDLE_TEXT);
  updateControls();
}

// ------------------------------------------------------------------ actions

function chooseFile(file) {
  showError("");
  if (file && !file.name.toLowerCase().endsWith(".py")) {
    showError(`“${file.name}” is not a Python script. Choose a .py file.`);
    file = null;
  }
  state.file = file || null;
  if (state.file) {
    els.fileName.replaceChildren(h("span", { class: "mono" }, state.file.name), ` · ${formatBytes(state.file.size)}`);
    els.fileName.classList.add("has-file");
  } else {
    els.fileName.textContent = "No file chosen — or drop one here";
    els.fileName.classList.remove("has-file");
  }
  updateControls();
}

async function submit(event) {
  event.preventDefault();
  if (!state.file || state.submitting || active()) return;
  showError("");
  const file = state.file;
  let script;
  try {
    script = await file.text();
  } catch {
    showError(`Couldn't read “${file.name}”. Choose the file again.`);
    return;
  }
  if (!script.trim()) {
    showError(`“${file.name}” is empty. Choose a script with some code in it.`);
    return;
  }
  const timeoutS = els.timeout.validity.badInput ? undefined : timeoutSeconds(els.timeout.value);
  if (timeoutS === undefined) {
    showError(`The timeout must be a number of seconds, above 0 and at most ${MAX_TIMEOUT_S} (7 days); leave it empty for none.`);
    return;
  }
  state.submitting = true;
  $("artifacts").hidden = true;
  updateControls();
  try {
    const inputsRef = await sendInputs();
    const job = await submitJob(script, {
      name: file.name,
      requirements: requirementLines(els.requirements.value),
      args: argumentLines(els.args.value),
      timeoutS,
      inputs: inputsRef,
    });
    window.history.replaceState(null, "", pageUrl("submitter.html", { job: job.id }));
    follow(job);
  } catch (err) {
    showError(err.message || "The job could not be submitted.");
  } finally {
    state.submitting = false;
    updateControls();
    renderMeta();
  }
}

/** Pack and upload the picked inputs (null when none), saying so under the log meanwhile. */
async function sendInputs() {
  if (!inputs.inputs.length) return null;
  els.meta.textContent = "Packing the input files…";
  const status = await health().catch(() => null);
  const packed = await inputs.pack(status ? status.max_input_bytes : undefined);
  els.meta.textContent = `Uploading the input files (${formatBytes(packed.tar.size)})…`;
  return uploadInputs(packed.tar, packed.sha256);
}

// One argument a line, exactly as typed: no shell-like splitting, so spaces and quotes are
// the argument's own. Empty lines are skipped (a trailing newline adds no argument).
function argumentLines(text) {
  return text.split(/\r?\n/).filter((line) => line !== "");
}

/** The timeout field's seconds: null when empty, undefined when not acceptable. */
function timeoutSeconds(text) {
  const trimmed = String(text).trim();
  if (!trimmed) return null;
  const value = Number(trimmed);
  return Number.isFinite(value) && value > 0 && value <= MAX_TIMEOUT_S ? value : undefined;
}

// The box reads like a requirements.txt: blank lines and # comments are skipped; the
// coordinator checks each line and answers a bad one with a sentence naming it.
function requirementLines(text) {
  return text
    .split("\n")
    .map((line) => line.replace(/(^|\s)#.*$/, "").trim())
    .filter((line) => line !== "");
}

async function cancel() {
  if (!active()) return;
  els.cancel.disabled = true;
  try {
    const job = await cancelJob(state.job.id);
    if (isTerminal(job.status)) setJob(job);
  } catch (err) {
    showError(err.message);
  } finally {
    els.cancel.disabled = false;
  }
}

// ------------------------------------------------------------------ wiring

els.input.addEventListener("change", () => chooseFile(els.input.files[0]));
els.form.addEventListener("submit", submit);
els.cancel.addEventListener("click", cancel);

for (const type of ["dragenter", "dragover"]) {
  els.form.addEventListener(type, (event) => {
    event.preventDefault();
    els.form.classList.add("is-dragover");
  });
}
els.form.addEventListener("dragleave", (event) => {
  if (!els.form.contains(event.relatedTarget)) els.form.classList.remove("is-dragover");
});
els.form.addEventListener("drop", (event) => {
  event.preventDefault();
  els.form.classList.remove("is-dragover");
  const file = event.dataTransfer && event.dataTransfer.files[0];
  if (file) chooseFile(file);
});
// A file dropped beside the bar must not make the window navigate away to it.
window.addEventListener("dragover", (event) => event.preventDefault());
window.addEventListener("drop", (event) => event.preventDefault());

// A file chosen before this module ran (a quick user on a slow load, or the browser
// restoring the form on Back) fired its change event with no one listening: take it now.
if (els.input.files.length) chooseFile(els.input.files[0]);

const initialJob = new URLSearchParams(window.location.search).get("job");
if (initialJob) follow({ id: initialJob });
else coordinatorBase(); // resolve the coordinator early so Submit is instant
updateControls();
