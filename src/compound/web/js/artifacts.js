// A finished job's output files on the submitter page: listed, each with a download button.
//
// A download fetches the file with the token in a header (api.js), then saves it through an
// object URL of this page: the token never appears in a URL, and the coordinator serves the
// file as an attachment, so nothing a job wrote ever renders on the coordinator's origin.

import { downloadArtifact, listArtifacts } from "./api.js";
import { h } from "./dom.js";
import { formatBytes } from "./format.js";

/** Fill `section` (with its `list` and `note`) with the job's output files, if it has any. */
export async function showArtifacts(job, { section, list, note }) {
  section.hidden = true;
  list.textContent = "";
  note.textContent = "";
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
  section.hidden = false;
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
      save(await downloadArtifact(jobId, artifact.path), artifact.path.split("/").pop());
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
