// Small, pure formatting helpers shared by the pages.

export function formatBytes(bytes) {
  if (bytes === null || bytes === undefined) return "—";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value >= 100 || unit === 0 ? Math.round(value) : value.toFixed(1)} ${units[unit]}`;
}

/** "4.2 s", "3 min 12 s", "2 h 5 min". */
export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(seconds - minutes * 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

/** The run time of a job so far, from its unix-second timestamps. */
export function jobDuration(job, nowS = Date.now() / 1000) {
  if (!job.started_at) return null;
  return Math.max(0, (job.finished_at || nowS) - job.started_at);
}

/** "just now", "5 min ago", "3 h ago", or a date. */
export function formatAgo(unixS, nowS = Date.now() / 1000) {
  if (!unixS) return "—";
  const delta = Math.max(0, nowS - unixS);
  if (delta < 10) return "just now";
  if (delta < 60) return `${Math.floor(delta)} s ago`;
  if (delta < 3600) return `${Math.floor(delta / 60)} min ago`;
  if (delta < 86400) return `${Math.floor(delta / 3600)} h ago`;
  return new Date(unixS * 1000).toLocaleDateString(undefined, { day: "numeric", month: "short" });
}

export function formatClock(unixS) {
  return new Date(unixS * 1000).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}
