// Contributors page: every contributor the coordinator knows, refreshed every few seconds.

import { listContributors, pageUrl } from "./api.js";
import { h, missing } from "./dom.js";
import { formatBytes } from "./format.js";
import { autoRefresh } from "./refresh.js";
import { ContributorState } from "./wire.js";

const body = document.getElementById("contributors-body");
const error = document.getElementById("error");
const refreshed = document.getElementById("refreshed");

function cpuCell(c) {
  if (c.cpu_percent === null || c.cpu_percent === undefined) return missing();
  const percent = Number(c.cpu_percent);
  const fill = h("span");
  // A CSSOM property, not a style attribute: the pages' CSP allows the one, not the other.
  fill.style.width = `${Math.min(100, Math.max(0, percent)).toFixed(0)}%`;
  return [h("span", { class: "meter", "aria-hidden": "true" }, fill), `${percent.toFixed(0)}%`];
}

function ramCell(c) {
  if (!c.ram_free_bytes) return missing();
  return [formatBytes(c.ram_free_bytes), h("span", { class: "sub" }, `of ${formatBytes(c.ram_total_bytes || c.memory_bytes)}`)];
}

function jobCell(c) {
  // Admins see ids and the job in hand; other tokens see only whether the machine is busy.
  if (c.current_job_id) {
    return h("a", { class: "mono", href: pageUrl("submitter.html", { job: c.current_job_id }) }, c.current_job_id);
  }
  if (c.busy) return h("span", { class: "badge badge--sm badge--running" }, "Busy");
  return missing("Idle");
}

// The badge of each state: its words and its tone.
const STATES = {
  [ContributorState.IDLE]: ["Idle", "online"],
  [ContributorState.BUSY]: ["Busy", "running"],
  [ContributorState.PAUSED]: ["Paused", "paused"],
  [ContributorState.DRAINING]: ["Draining", "paused"],
  [ContributorState.OFFLINE]: ["Offline", "offline"],
};

const isOnline = (c) => c.state !== ContributorState.OFFLINE;

function stateCell(c) {
  const [text, tone] = STATES[c.state] || [String(c.state), "offline"];
  const badge = h("span", { class: `badge badge--sm badge--${tone}`, "data-testid": "contributor-state" }, text);
  // Why it is paused or draining; an offline one keeps what it was doing when it left.
  const was = c.last_state ? `was ${c.last_state}` : null;
  const why = [was, c.reason].filter(Boolean).join(": ");
  return why ? [badge, " ", h("span", { class: "sub", "data-testid": "contributor-reason" }, why)] : badge;
}

function row(c) {
  const online = isOnline(c);
  const details = [
    c.id ? h("span", { class: "mono" }, c.id) : null,
    c.runtime ? String(c.runtime) : null,
    c.version && !c.id ? `v${c.version}` : null,
  ].filter(Boolean);
  const sub = details.flatMap((detail, i) => (i ? [" · ", detail] : [detail]));
  return h("tr", { dataset: { contributorName: c.name || "", ...(c.id ? { contributorId: c.id } : {}) } },
    h("td", {},
      h("span", { class: "strong" }, c.name || c.id || "Unnamed"),
      sub.length ? [" ", h("span", { class: "sub" }, sub)] : null),
    h("td", {}, stateCell(c)),
    h("td", { class: "num", "data-testid": "contributor-cpu" }, online ? cpuCell(c) : missing()),
    h("td", { class: "num", "data-testid": "contributor-ram" }, online ? ramCell(c) : missing()),
    h("td", { class: "num" }, c.cores || "—"),
    h("td", { "data-testid": "contributor-job" }, jobCell(c)));
}

function emptyRow() {
  return h("tr", {},
    h("td", { colspan: 6, class: "table-empty" },
      "No contributors yet. Open ", h("a", { href: pageUrl("contributor.html") }, "Contribute Compute"),
      " on a machine with Docker to add one."));
}

async function load() {
  let contributors;
  try {
    contributors = await listContributors();
  } catch (err) {
    error.textContent = err.message;
    error.hidden = false;
    return;
  }
  error.hidden = true;
  const online = contributors.filter(isOnline);
  document.getElementById("stat-online").textContent = online.length;
  document.getElementById("stat-offline").textContent = contributors.length - online.length;
  document.getElementById("stat-cores").textContent = online.reduce((sum, c) => sum + (c.cores || 0), 0);
  document.getElementById("stat-ram").textContent = online.length
    ? formatBytes(online.reduce((sum, c) => sum + (c.ram_free_bytes || 0), 0))
    : "—";
  // Online first, then by name.
  contributors.sort((a, b) => (isOnline(a) === isOnline(b) ? String(a.name).localeCompare(String(b.name)) : isOnline(a) ? -1 : 1));
  body.replaceChildren(...(contributors.length ? contributors.map(row) : [emptyRow()]));
  refreshed.textContent = `Updated ${new Date().toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" })}`;
}

autoRefresh(load, 3000);
