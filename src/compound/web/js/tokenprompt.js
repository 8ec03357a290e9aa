// The access-token dialog: a modal that asks for a coordinator's token, checks it and saves it.
//
// UI only: api.js decides when to open it and passes in what checks (`tryToken`) and
// forgets (`forgetToken`) a token. A <dialog> opened with showModal() keeps focus inside,
// closes on Escape, and the browser restores focus to where it was when it closes.

import { h } from "./dom.js";

const mono = (text) => h("span", { class: "mono" }, text);

const COPY = {
  needed: {
    title: "Enter your access token",
    lede: (url) => ["The coordinator at ", mono(url), " asks for a token. Paste the one you were given (",
      mono("compound token create"), " prints it)."],
  },
  rejected: {
    title: "Your token was not accepted",
    lede: (url) => ["The token saved for ", mono(url), " no longer works (it may have been revoked). Paste a new one."],
  },
  manage: {
    title: "Access token",
    lede: (url) => ["Change the token used for ", mono(url), ", or forget it on this device."],
  },
};

function build({ coordinator, desktop, reason, stored }) {
  const copy = COPY[reason] || COPY.needed;
  const where = desktop
    ? "The app keeps it on this computer and sends it only to this coordinator."
    : "This browser keeps it for this coordinator only.";
  const form = h("form", { class: "token-form", novalidate: true },
    h("p", { class: "eyebrow" }, "Access"),
    h("h2", { id: "token-title", class: "token-title" }, copy.title),
    h("p", { id: "token-lede", class: "token-lede" }, copy.lede(coordinator || "")),
    h("label", { for: "token-input", class: "setting-label" }, "Token"),
    h("input", {
      id: "token-input", "data-testid": "token-input", class: "field mono token-field", type: "password",
      autocomplete: "off", autocapitalize: "off", spellcheck: "false", placeholder: "cct_…",
      "aria-describedby": "token-error token-note",
    }),
    h("p", {
      id: "token-error", class: "token-error", "data-testid": "token-error", role: "alert", "aria-live": "assertive",
    }),
    h("p", { id: "token-note", class: "token-note" }, where),
    h("div", { class: "token-actions" },
      h("button", {
        type: "button", class: "btn btn--ghost btn--sm", "data-testid": "token-forget",
        dataset: { action: "forget" }, hidden: !stored,
      }, "Forget token"),
      h("span", { class: "spacer" }),
      h("button", {
        type: "button", class: "btn btn--ghost btn--sm", "data-testid": "token-cancel", dataset: { action: "cancel" },
      }, "Not now"),
      h("button", { type: "submit", class: "btn btn--primary btn--sm", "data-testid": "token-save" }, "Save token")));
  return h("dialog", {
    class: "token-dialog", "data-testid": "token-dialog",
    "aria-labelledby": "token-title", "aria-describedby": "token-lede",
  }, form);
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
