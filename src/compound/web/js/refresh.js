// Auto-refresh for the list pages: run `load` now and every `intervalMs` while the page is
// visible; never two loads at once.

export function autoRefresh(load, intervalMs = 3000) {
  let timer = null;
  let running = false;

  async function tick() {
    clearTimeout(timer);
    timer = null;
    if (running) return;
    running = true;
    try {
      await load();
    } finally {
      running = false;
      if (!document.hidden) timer = setTimeout(tick, intervalMs);
    }
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && timer === null) tick();
  });
  tick();
  return { refresh: tick };
}
