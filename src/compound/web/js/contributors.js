// Contributors page: every contributor the coordinator knows, refreshed every few seconds.

import { listContributors, pageUrl } from "./api.js";
import { escapeHtml, formatBytes } from "./format.js";
import { autoRefresh } from "./refresh.js";
import { ContributorState } from "./wire.js";

const body = document.getElementById("contributors-body");
const error = document.getElementById("error");
const refreshed = document.getElementById("refreshed");

function row(c) {
  const online = c.state === ContributorState.ONLINE;
  const cpu = online && c.cpu_percent !== null && c.cpu_percent !== undefined
    ? `<span class="meter" aria-hidden="true"><span style="width:${Math.min(100, Math.max(0, c.cpu_percent)).toFixed(0)}%"></span></span>${c.cpu_percent.toFixed(0)}%`
    : '<span class="muted">—</span>';
  const ram = online && c.ram_free_bytes
    ? `${formatBytes(c.ram_free_bytes)}<span class="sub">of ${formatBytes(c.ram_total_bytes || c.memory_bytes)}</span>`
    : '<span class="muted">—</span>';
  // Admins see ids and the job in hand; other tokens see only whether the machine is busy.
  let job = '<span class="muted">Idle</span>';
  if (c.current_job_id) {
    job = `<a class="mono" href="${escapeHtml(pageUrl("submitter.html", { job: c.current_job_id }))}">${escapeHtml(c.current_job_id)}</a>`;
  } else if (c.busy) {
    job = '<span class="badge badge--sm badge--running">Busy</span>';
  }
  const sub = [c.id ? `<span class="mono">${escapeHtml(c.id)}</span>` : "", c.runtime ? escapeHtml(c.runtime) : "",
    c.version && !c.id ? `v${escapeHtml(c.version)}` : ""].filter(Boolean).join(" · ");
  const key = c.id ? ` data-contributor-id="${escapeHtml(c.id)}"` : "";
  return `<tr${key} data-contributor-name="${escapeHtml(c.name || "")}">
    <td><span style="font-weight:500">${escapeHtml(c.name || c.id || "Unnamed")}</span>
      ${sub ? `<span class="sub">${sub}</span>` : ""}</td>
    <td><span class="badge badge--sm badge--${online ? "online" : "offline"}" data-testid="contributor-state">${online ? "Online" : "Offline"}</span></td>
    <td class="num" data-testid="contributor-cpu">${cpu}</td>
    <td class="num" data-testid="contributor-ram">${ram}</td>
    <td class="num">${c.cores || "—"}</td>
    <td data-testid="contributor-job">${job}</td>
  </tr>`;
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
  const online = contributors.filter((c) => c.state === ContributorState.ONLINE);
  document.getElementById("stat-online").textContent = online.length;
  document.getElementById("stat-offline").textContent = contributors.length - online.length;
  document.getElementById("stat-cores").textContent = online.reduce((sum, c) => sum + (c.cores || 0), 0);
  document.getElementById("stat-ram").textContent = online.length
    ? formatBytes(online.reduce((sum, c) => sum + (c.ram_free_bytes || 0), 0))
    : "—";
  // Online first, then by name.
  contributors.sort((a, b) => (a.state === b.state ? String(a.name).localeCompare(String(b.name)) : a.state === ContributorState.ONLINE ? -1 : 1));
  body.innerHTML = contributors.length
    ? contributors.map(row).join("")
    : `<tr><td colspan="6" class="table-empty">No contributors yet. Open <a href="${pageUrl("contributor.html")}">Contribute Compute</a> on a machine with Docker to add one.</td></tr>`;
  refreshed.textContent = `Updated ${new Date().toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" })}`;
}

autoRefresh(load, 3000);
