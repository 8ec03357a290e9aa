// Jobs page: the recent jobs, refreshed every few seconds; a row opens the job's full log.

import { health, listContributors, listJobs, pageUrl, statusLabel } from "./api.js";
import { h, missing } from "./dom.js";
import { formatAgo, formatDuration, jobDuration } from "./format.js";
import { autoRefresh } from "./refresh.js";

const body = document.getElementById("jobs-body");
const error = document.getElementById("error");
const refreshed = document.getElementById("refreshed");

function row(job, names) {
  const { text, tone } = statusLabel(job);
  const href = pageUrl("submitter.html", { job: job.id });
  const contributor = job.contributor_id ? names.get(job.contributor_id) || job.contributor_id : missing();
  const exit = job.exit_code === null || job.exit_code === undefined ? missing() : job.exit_code;
  return h("tr", { class: "is-link", dataset: { jobId: job.id, href } },
    h("td", {},
      h("a", { class: "row-link", href }, job.name || "Untitled script"),
      h("span", { class: "sub mono" }, job.id)),
    h("td", {}, h("span", { class: `badge badge--sm badge--${tone}`, "data-testid": "job-status" }, text)),
    h("td", { class: "num mono" }, exit),
    h("td", { class: "num" }, formatDuration(jobDuration(job))),
    h("td", {}, contributor),
    h("td", { class: "muted", title: new Date(job.created_at * 1000).toLocaleString() }, formatAgo(job.created_at)));
}

function emptyRow() {
  return h("tr", {},
    h("td", { colspan: 6, class: "table-empty" },
      "No jobs yet. ", h("a", { href: pageUrl("submitter.html") }, "Submit the first one"), "."));
}

async function loadHealth() {
  const dot = document.getElementById("stat-dot");
  try {
    const h = await health();
    document.getElementById("stat-running").textContent = h.running;
    document.getElementById("stat-queued").textContent = h.queued;
    document.getElementById("stat-online").textContent = h.contributors_online;
    document.getElementById("stat-health").textContent = "Healthy";
    document.getElementById("stat-version").textContent = h.version ? `v${h.version}` : "";
    dot.className = "dot dot--online dot--pulse";
  } catch {
    document.getElementById("stat-health").textContent = "Unreachable";
    dot.className = "dot dot--offline";
  }
}

async function load() {
  loadHealth();
  let jobs;
  try {
    jobs = await listJobs(50);
  } catch (err) {
    error.textContent = err.message;
    error.hidden = false;
    return;
  }
  let contributors = [];
  try { contributors = await listContributors(); } catch { contributors = []; }
  const names = new Map(contributors.map((c) => [c.id, c.name]));
  error.hidden = true;

  const focused = document.activeElement && document.activeElement.closest("tr[data-job-id]");
  const focusedId = focused ? focused.dataset.jobId : null;
  body.replaceChildren(...(jobs.length ? jobs.map((job) => row(job, names)) : [emptyRow()]));
  if (focusedId) {
    const again = body.querySelector(`tr[data-job-id="${CSS.escape(focusedId)}"] a`);
    if (again) again.focus();
  }
  refreshed.textContent = `Updated ${new Date().toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" })}`;
}

body.addEventListener("click", (event) => {
  const tr = event.target.closest("tr[data-href]");
  if (!tr || event.target.closest("a")) return;
  window.location.href = tr.dataset.href;
});

autoRefresh(load, 3000);
