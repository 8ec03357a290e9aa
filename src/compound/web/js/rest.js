// Motion rests while the window is in the background (not focused, or hidden).
//
// Without a GPU (many VMs, lab machines) every frame of a halo or a breathing dot repaints
// the blurred glass panels under it in software: two infinite halos kept Chromium at a full
// core (measured, headless, --disable-gpu). A contributor window left open would take that
// from the jobs and count, for the idle-only setting, as the donor using the machine. So the
// root gets `is-resting` while nobody looks, and the stylesheet pauses every animation then.

let focused = document.hasFocus();

function update() {
  document.documentElement.classList.toggle("is-resting", document.hidden || !focused);
}

window.addEventListener("focus", () => { focused = true; update(); });
window.addEventListener("blur", () => { focused = false; update(); });
document.addEventListener("visibilitychange", update);
update();
