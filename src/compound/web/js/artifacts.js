// A finished job's output files on the submitter page: listed, each with a download button,
// and all of them at once as one tar (tar.js, built in the page from the same downloads).
// Each file is checked against the SHA-256 the coordinator lists, where the browser can hash.
//
// A download fetches the file with the token in a header (api.js), then saves it through an
// object URL of this page: the token never appears in a URL, and the coordinator serves the
// file as an attachment, so nothing a job wrote ever renders on the coordinator's origin.

import { downloadArtifact, listArtifacts } from "./api.js";
import { h } from "./dom.js";
import { formatBytes } from "./format.js";

/** Fill `section` (with its `list`, `note` and `all` button) with the job's output files,
 * if it has any. */
export async function showArtifacts(job, { section, list, note, all }) {
  section.hidden = true;
  list.textContent = "";
  note.textContent = "";
  all.hidden = true;
  all.onclick = null;
  if (job.files_removed_at) {
    note.textContent = "Removed after the coordinator's retention period.";
    section.hidden = false;
    return;
  }
  let artifacts;
  try {
    artifacts = await listArtifacts(job.id);
  } catch (err) {
    note.textContent = err.message;
    section.hidden = false;
    return;
  }
  if (!artifacts.length) return;
  note.textContent = `${artifacts.length} file${artifacts.length === 1 ? "" : "s"}`;
  if (job.files_expire_at) note.title = `Kept until ${new Date(job.files_expire_at * 1000).toLocaleString()}`;
  for (const artifact of artifacts) list.append(artifactRow(job.id, artifact, note));
  all.hidden = false;
  all.onclick = async () => {
    all.disabled = true;
    try {
      save(await allAsTar(job.id, artifacts), `compound-${job.id}-outputs.tar`);
    } catch (err) {
      note.textContent = err.message;
    } finally {
      all.disabled = false;
    }
  };
  section.hidden = false;
}

/** One output file's bytes, checked against its listed SHA-256 (when the page can hash). */
async function fetchChecked(jobId, artifact) {
  const blob = await downloadArtifact(jobId, artifact.path);
  // crypto.subtle exists on secure origins only (https, localhost).
  if (window.crypto && window.crypto.subtle) {
    const digest = new Uint8Array(await window.crypto.subtle.digest("SHA-256", await blob.arrayBuffer()));
    const hex = [...digest].map((byte) => byte.toString(16).padStart(2, "0")).join("");
    if (hex !== artifact.sha256) throw new Error(`${artifact.path} arrived damaged (its SHA-256 does not match); try again.`);
  }
  return blob;
}

/** Every output file in one tar, under its path (folders included), downloaded one by one. */
async function allAsTar(jobId, artifacts) {
  const { tarBlob } = await import("./tar.js");
  const entries = [];
  const dirs = new Set();
  for (const artifact of artifacts) {
    const parts = artifact.path.split("/");
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join("/");
      if (!dirs.has(dir)) {
        dirs.add(dir);
        entries.push({ name: dir, dir: true });
      }
    }
    entries.push({ name: artifact.path, file: await fetchChecked(jobId, artifact) });
  }
  return tarBlob(entries);
}

function artifactRow(jobId, artifact, note) {
  const button = h("button", {
    class: "btn btn--sm", type: "button", "data-testid": "artifact-download", dataset: { path: artifact.path },
  }, "Download");
  const row = h("li", {},
    h("span", { class: "mono artifact-path" }, artifact.path), " ",
    h("span", { class: "muted" }, formatBytes(artifact.size)), " ",
    h("span", { class: "spacer" }), " ",
    button);
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      save(await fetchChecked(jobId, artifact), artifact.path.split("/").pop());
    } catch (err) {
      note.textContent = err.message;
    } finally {
      button.disabled = false;
    }
  });
  return row;
}

function save(blob, filename) {
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  // Revoked once the browser has taken the download over.
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
