// The access-token dialog: a modal that asks for a coordinator's token, checks it and saves it.
//
// UI only: api.js decides when to open it and passes in what checks (`tryToken`) and
// forgets (`forgetToken`) a token. A <dialog> opened with showModal() keeps focus inside,
// closes on Escape, and the browser restores focus to where it was when it closes.

import { escapeHtml } from "./format.js";

const COPY = {
  needed: {
    title: "Enter your access token",
    lede: (url) => `The coordinator at <span class="mono">${url}</span> asks for a token. Paste the one you were given (<span class="mono">compound token create</span> prints it).`,
  },
  rejected: {
    title: "Your token was not accepted",
    lede: (url) => `The token saved for <span class="mono">${url}</span> no longer works (it may have been revoked). Paste a new one.`,
  },
  manage: {
    title: "Access token",
    lede: (url) => `Change the token used for <span class="mono">${url}</span>, or forget it on this device.`,
  },
};

function build({ coordinator, desktop, reason, stored }) {
  const copy = COPY[reason] || COPY.needed;
  const dialog = document.createElement("dialog");
  dialog.className = "token-dialog";
  dialog.dataset.testid = "token-dialog";
  dialog.setAttribute("aria-labelledby", "token-title");
  dialog.setAttribute("aria-describedby", "token-lede");
  const where = desktop
    ? "The app keeps it on this computer and sends it only to this coordinator."
    : "This browser keeps it for this coordinator only.";
  dialog.innerHTML = `
    <form class="token-form" novalidate>
      <p class="eyebrow">Access</p>
      <h2 id="token-title" class="token-title">${copy.title}</h2>
      <p id="token-lede" class="token-lede">${copy.lede(escapeHtml(coordinator || ""))}</p>
      <label for="token-input" class="setting-label">Token</label>
      <input id="token-input" data-testid="token-input" class="field mono token-field" type="password"
             autocomplete="off" autocapitalize="off" spellcheck="false" placeholder="cct_…"
             aria-describedby="token-error token-note">
      <p id="token-error" class="token-error" data-testid="token-error" role="alert" aria-live="assertive"></p>
      <p id="token-note" class="token-note">${where}</p>
      <div class="token-actions">
        <button type="button" class="btn btn--ghost btn--sm" data-testid="token-forget" data-action="forget"
                ${stored ? "" : "hidden"}>Forget token</button>
        <span class="spacer"></span>
        <button type="button" class="btn btn--ghost btn--sm" data-testid="token-cancel" data-action="cancel">Not now</button>
        <button type="submit" class="btn btn--primary btn--sm" data-testid="token-save">Save token</button>
      </div>
    </form>`;
  return dialog;
}

/**
 * Show the dialog; resolves "saved" (a token was checked and stored), "forgotten", or null
 * (closed without a change). `tryToken(text)` resolves null when accepted, else a sentence.
 */
export function openTokenPrompt({ coordinator, desktop, reason, stored, tryToken, forgetToken }) {
  const dialog = build({ coordinator, desktop, reason, stored });
  const form = dialog.querySelector("form");
  const input = dialog.querySelector("#token-input");
  const error = dialog.querySelector("#token-error");
  const save = dialog.querySelector("[data-testid=token-save]");
  document.body.append(dialog);

  const say = (message) => {
    error.textContent = message || "";
    if (message) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  };
  let busy = false;
  const setBusy = (value) => {
    busy = value;
    for (const button of dialog.querySelectorAll("button")) button.disabled = value;
    save.textContent = value ? "Checking…" : "Save token";
  };

  return new Promise((resolve) => {
    let outcome = null;
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(outcome);
    });
    dialog.addEventListener("cancel", (event) => { if (busy) event.preventDefault(); });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (busy) return;
      say("");
      setBusy(true);
      const problem = await tryToken(input.value);
      setBusy(false);
      if (problem) {
        say(problem);
        input.focus();
        input.select();
        return;
      }
      outcome = "saved";
      dialog.close();
    });
    dialog.addEventListener("click", async (event) => {
      const action = event.target.closest("[data-action]")?.dataset.action;
      if (!action || busy) return;
      if (action === "cancel") dialog.close();
      if (action === "forget") {
        setBusy(true);
        try {
          await forgetToken();
          outcome = "forgotten";
          dialog.close();
        } catch (err) {
          setBusy(false);
          say(err.message || "The token could not be forgotten. Try again.");
        }
      }
    });
    dialog.showModal();
    input.focus();
  });
}
