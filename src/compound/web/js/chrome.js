// Shared window chrome: the title bar every page has.
//
// A page declares <header class="titlebar pywebview-drag-region" data-back="index.html">;
// importing this module fills it in: traffic lights (desktop app only), ← Back (when
// data-back is set), the mini wordmark and the Jobs / Contributors nav. In the desktop app's
// window the traffic lights ask the app's local server to close, minimise or toggle-maximise
// it (nativewindow.js); in a browser they stay hidden. Dragging the bar moves the window
// (pywebview's drag region: the pywebview-drag-region class). A "Token" control appears
// once the coordinator asked for an access token or one is stored: it opens the dialog to
// change or forget it.

import { inDesktopApp, manageToken, pageUrl, tokenStatus } from "./api.js";
import { h, svg } from "./dom.js";
import { nativeWindowState, windowAction } from "./nativewindow.js";
import "./rest.js";

const STROKE = { stroke: "currentColor", "stroke-width": "1.2", "stroke-linecap": "round" };
const ICONS = {
  close: () => svg("svg", { viewBox: "0 0 9 9", "aria-hidden": "true" }, svg("path", { d: "M2.5 2.5l4 4m0-4l-4 4", ...STROKE })),
  minimize: () => svg("svg", { viewBox: "0 0 9 9", "aria-hidden": "true" }, svg("path", { d: "M1.8 4.5h5.4", ...STROKE })),
  maximize: () => svg("svg", { viewBox: "0 0 9 9", "aria-hidden": "true" },
    svg("path", { d: "M2.2 5.6V2.2h3.4zM6.8 3.4v3.4H3.4z", fill: "currentColor" })),
  key: () => svg("svg", { viewBox: "0 0 14 14", "aria-hidden": "true" },
    svg("circle", { cx: "5", cy: "9", r: "3", fill: "none", stroke: "currentColor", "stroke-width": "1.4" }),
    svg("path", {
      d: "M7.2 6.8L13 1m-2.4 2.4l1.8 1.8M9 5.2l1.4 1.4", fill: "none", stroke: "currentColor",
      "stroke-width": "1.4", "stroke-linecap": "round",
    })),
};

const NAV = [
  ["jobs.html", "Jobs"],
  ["contributors.html", "Contributors"],
];

function currentPage() {
  return window.location.pathname.split("/").pop() || "index.html";
}

function trafficButton(kind, label) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = `traffic-btn traffic-${kind}`;
  button.dataset.testid = `window-${kind}`;
  button.setAttribute("aria-label", label);
  button.title = label;
  button.append(ICONS[kind]());
  return button;
}

function buildTraffic() {
  const group = document.createElement("div");
  group.className = "traffic";
  group.setAttribute("role", "group");
  group.setAttribute("aria-label", "Window");
  group.hidden = true;
  group.inert = true;
  const buttons = {
    close: trafficButton("close", "Close window"),
    minimize: trafficButton("minimize", "Minimise window"),
    maximize: trafficButton("maximize", "Maximise window"),
  };
  group.append(buttons.close, buttons.minimize, buttons.maximize);
  const actions = { close: "close", minimize: "minimize", maximize: "toggle-maximize" };
  for (const [kind, action] of Object.entries(actions)) {
    buttons[kind].addEventListener("click", () => windowAction(action));
  }
  return group;
}

function buildBack(target) {
  const back = document.createElement("a");
  back.className = "back";
  back.dataset.testid = "back-button";
  back.href = pageUrl(target);
  back.append(h("span", { "aria-hidden": "true" }, "←"), " Back");
  back.addEventListener("click", (event) => {
    // Go back in the app's own history when we came from another of its pages.
    let from = null;
    try { from = document.referrer ? new URL(document.referrer) : null; } catch { from = null; }
    if (from && from.origin === window.location.origin && from.pathname !== window.location.pathname
        && window.history.length > 1) {
      event.preventDefault();
      window.history.back();
    }
  });
  return back;
}

function buildNav() {
  const nav = document.createElement("nav");
  nav.className = "nav";
  nav.setAttribute("aria-label", "Main");
  const here = currentPage();
  for (const [href, label] of NAV) {
    const link = document.createElement("a");
    link.href = pageUrl(href);
    link.textContent = label;
    if (href === here) link.setAttribute("aria-current", "page");
    nav.append(link);
  }
  return nav;
}

function buildTokenChip() {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "token-chip";
  button.dataset.testid = "token-button";
  button.hidden = true;
  button.append(ICONS.key(), h("span", {}, "Token"));
  button.addEventListener("click", () => manageToken());
  const update = async () => {
    const status = await tokenStatus();
    // The desktop app always offers it: its agent uses the same token to contribute.
    button.hidden = !(status.stored || status.needed || status.desktop);
    button.classList.toggle("has-token", status.stored);
    button.classList.toggle("is-needed", status.needed);
    const label = status.stored ? "Change or forget the access token" : "Enter an access token";
    button.setAttribute("aria-label", label);
    button.title = `${label} for ${status.coordinator}`;
  };
  window.addEventListener("compound:auth", update);
  update();
  return button;
}

async function enableDesktop(bar) {
  const group = bar.querySelector(".traffic");
  if (!group || !(await inDesktopApp()) || (await nativeWindowState()) === null) return;
  group.hidden = false;
  group.inert = false;
  document.documentElement.classList.add("is-desktop");
}

/** Fill in a title bar element. Safe to call once per element. */
export function mountTitlebar(bar) {
  if (!bar || bar.dataset.mounted) return;
  bar.dataset.mounted = "1";
  bar.classList.add("pywebview-drag-region");
  const brand = document.createElement("a");
  brand.className = "brand-mini";
  brand.href = pageUrl("index.html");
  brand.append("Compound", h("span", { class: "dot-gold" }, "."));
  const parts = [buildTraffic()];
  if (bar.dataset.back) parts.push(buildBack(bar.dataset.back));
  parts.push(brand, buildNav(), buildTokenChip());
  bar.replaceChildren(...parts);
  // pywebview starts a window drag on mousedown in the bar; pressing a control must not.
  for (const control of bar.querySelectorAll("a, button")) {
    control.addEventListener("mousedown", (event) => event.stopPropagation());
  }
  enableDesktop(bar);
}

for (const bar of document.querySelectorAll(".titlebar")) mountTitlebar(bar);
