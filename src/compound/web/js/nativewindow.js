// The desktop app's native window, driven through the app's local server.
//
// The traffic lights POST to /local/api/window/<action> on the page's own origin; the app
// calls its window (pywebview's Python-side API). No pywebview JS bridge is involved: it
// needs eval, which the pages' CSP refuses. Only the desktop app's window answers
// GET /local/api/window; in a browser (the coordinator's pages, or `compound app --browser`)
// there is no native window and the traffic lights stay hidden.

const WINDOW_API = "/local/api/window";

/** The native window's state ("normal", "minimized", "maximized"), or null when none. */
export async function nativeWindowState() {
  try {
    const resp = await fetch(WINDOW_API, { cache: "no-store" });
    if (resp.status !== 200) return null;
    const body = await resp.json();
    return body && typeof body.state === "string" ? body.state : null;
  } catch {
    return null;
  }
}

/** Ask the app to close, minimize, restore or toggle-maximize its window. */
export async function windowAction(action) {
  try {
    await fetch(`${WINDOW_API}/${action}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: "{}",
      cache: "no-store",
    });
  } catch {
    // The window is going away (close) or the app is: nothing left to tell the user.
  }
}
