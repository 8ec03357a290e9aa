// The contributor page's controls of the running agent (desktop app only): pause, resume,
// "finish and stop" (drain), and the donor's settings, each applied live through the app's
// /local/api/agent/... routes, which ask the agent over its control socket.
//
// What the agent lends and why comes from its typed `lending` event (the page's view); the
// settings and each running job's frozen state come from the agent's status, fetched after
// each change, on each event that may change them, and every few seconds while it runs.

import { agentControl, agentControlStatus } from "./api.js";
import { h } from "./dom.js";
import { Lending } from "./wire.js";

const REFRESH_MS = 3000;

/** The donor's settings: key (as `compound agent set` names it), label, input, hint. */
export const SETTINGS = [
  { key: "hours", label: "Hours", placeholder: "09:00-17:00 or always",
    hint: "Lend only inside this daily window of local time." },
  { key: "idle-cpu-percent", label: "Only when idle", placeholder: "e.g. 50, or off",
    hint: "Pause while this machine's own CPU use is over this percentage.",
    reading: machineCpuText },
  { key: "idle-resume-s", label: "Resume after calm", placeholder: "seconds, e.g. 30",
    hint: "After such a pause, lend again once the machine's own CPU use has stayed under the "
      + "percentage this many seconds (0 to 3600), or default." },
  { key: "on-battery", label: "On battery", choices: ["run", "pause"],
    hint: "Pause while the machine runs on its battery." },
  { key: "cpus", label: "CPUs per job", placeholder: "cores, or default", hint: "" },
  { key: "memory-mib", label: "Memory per job", placeholder: "MiB, or default", hint: "" },
  { key: "slots", label: "Jobs at once", placeholder: "1-16, or default", hint: "" },
];

const STATE_TEXT = {
  [Lending.ACTIVE]: "Active",
  [Lending.PAUSED]: "Paused",
  [Lending.DRAINING]: "Draining",
};

/** The words shown for a lending state and its reason (pure). */
export function lendingText(lending) {
  if (!lending) return { state: "Starting…", reason: "", tone: "" };
  const reason = lending.state === Lending.ACTIVE ? "takes jobs" : lending.reason || "";
  return { state: STATE_TEXT[lending.state] || lending.state, reason, tone: lending.state };
}

/** The machine's own CPU use (without the jobs') as the agent last read it (pure): what the
 * idle-only threshold is compared with, so a donor can choose one. */
export function machineCpuText(status) {
  const used = status.non_job_cpu_percent;
  if (typeof used !== "number" || !Number.isFinite(used)) return "";
  return `This machine's own CPU use (without the jobs') is ${Math.round(used)}% now.`;
}

/** What an input shows for a setting the agent describes ("2 (default)" → "default"). */
export function inputValue(described) {
  return String(described).endsWith(" (default)") ? "default" : String(described);
}

const $ = (id) => document.getElementById(id);

export class LendingPanel {
  constructor() {
    this.section = $("controls");
    this.stateEl = $("lending-state");
    this.reasonEl = $("lending-reason");
    this.jobsEl = $("agent-jobs");
    this.message = $("controls-message");
    this.buttons = { pause: $("agent-pause"), resume: $("agent-resume"), drain: $("agent-drain") };
    this.rows = new Map();
    this.running = false;
    this.busy = false;
    this.fetching = false;
    this.lending = null;
    for (const [command, button] of Object.entries(this.buttons)) {
      button.addEventListener("click", () => this.send(command));
    }
    const container = $("donor-settings");
    for (const setting of SETTINGS) container.append(this.row(setting));
    setInterval(() => { if (this.running) this.refresh(); }, REFRESH_MS);
  }

  row(setting) {
    const id = `donor-${setting.key}`;
    const input = setting.choices
      ? h("select", { id, class: "field", dataset: { testid: id } },
        setting.choices.map((choice) => h("option", { value: choice }, choice)))
      : h("input", {
        id, class: "field mono", type: "text", autocomplete: "off", spellcheck: "false",
        placeholder: setting.placeholder, dataset: { testid: id },
      });
    const current = h("span", { class: "donor-current", dataset: { testid: `${id}-current` } });
    const apply = h("button", { class: "btn btn--sm", type: "submit", dataset: { testid: `${id}-apply` } },
      "Apply");
    const reading = setting.reading
      ? h("span", { class: "donor-reading", dataset: { testid: `${id}-reading` } })
      : null;
    const form = h("form", { class: "donor-row", novalidate: true, title: setting.hint || null },
      h("label", { class: "setting-label", for: id }, setting.label), input, apply, current, reading);
    const row = { setting, input, current, reading, apply, dirty: false };
    input.addEventListener("input", () => { row.dirty = true; });
    input.addEventListener("change", () => { row.dirty = true; });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.send("set", { key: setting.key, value: input.value.trim() }, row);
    });
    this.rows.set(setting.key, row);
    return form;
  }

  /** Show the panel for a running agent and its lending state (from the page's view). */
  render(view) {
    const wasRunning = this.running;
    this.running = view.running;
    this.section.hidden = !view.running;
    this.lending = view.lending;
    const text = lendingText(view.lending);
    this.stateEl.textContent = text.state;
    this.stateEl.className = `badge badge--sm${text.tone ? ` badge--${text.tone}` : ""}`;
    this.reasonEl.textContent = text.reason;
    this.enable();
    if (view.running && !wasRunning) this.refresh();
    if (!view.running) {
      this.jobsEl.replaceChildren();
      this.say("");
    }
  }

  enable() {
    const draining = this.lending && this.lending.state === Lending.DRAINING;
    const off = this.busy || !this.running || draining;
    for (const button of Object.values(this.buttons)) button.disabled = off;
    for (const row of this.rows.values()) row.apply.disabled = off;
  }

  say(text, tone = null) {
    this.message.textContent = text;
    this.message.classList.toggle("is-ok", tone === "ok");
    this.message.classList.toggle("is-error", tone === "error");
  }

  async send(command, body = {}, row = null) {
    if (this.busy) return;
    this.busy = true;
    this.enable();
    try {
      const answer = await agentControl(command, body);
      if (row) row.dirty = false;
      if (row) row.input.removeAttribute("aria-invalid");
      this.say(answer.message, "ok");
      if (answer.status) this.show(answer.status);
    } catch (err) {
      if (row) row.input.setAttribute("aria-invalid", "true");
      this.say(err.message || "The agent did not take it.", "error");
    } finally {
      this.busy = false;
      this.enable();
    }
  }

  /** Ask the agent for its settings and jobs; quiet when it is not (yet) answering. */
  async refresh() {
    if (this.fetching || !this.running) return;
    this.fetching = true;
    try {
      const answer = await agentControlStatus();
      if (this.running && answer && answer.status) this.show(answer.status);
    } catch {
      // Starting (no control socket yet) or stopping: the next round asks again.
    } finally {
      this.fetching = false;
    }
  }

  show(status) {
    const jobs = Array.isArray(status.jobs) ? status.jobs : [];
    this.jobsEl.replaceChildren(...jobs.map((job) => h("li",
      { dataset: { testid: "agent-job", frozen: String(Boolean(job.frozen)) } },
      h("span", { class: "mono" }, String(job.job_id)),
      h("span", { class: `badge badge--sm ${job.frozen ? "badge--paused" : "badge--running"}` },
        job.frozen ? "frozen" : "running"))));
    const settings = status.settings || {};
    for (const [key, row] of this.rows) {
      if (!(key in settings)) continue;
      row.current.textContent = `now ${settings[key]}`;
      if (row.reading) row.reading.textContent = row.setting.reading(status);
      if (!row.dirty && document.activeElement !== row.input) row.input.value = inputValue(settings[key]);
    }
  }
}
