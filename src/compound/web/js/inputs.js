// The submitter page's input files: files and folders picked in the browser, checked as the
// job's sandbox checks them, packed into one tar (tar.js) and uploaded with its SHA-256.
//
// As with `compound submit --input`, each input appears in the job's working directory under
// its base name: a file as `name`, a folder as `name/...`. Picking a second input with a name
// already in the list replaces the first. The limits below are the sandbox's: what it would
// refuse after the upload is refused here first, with one sentence.

import { h } from "./dom.js";
import { formatBytes } from "./format.js";

// Must match compound.agent.runners.docker.in_container.files: the job's own names, the
// longest path, and the agent's default most entries (files and folders).
// As in_container/files.py RESERVED_NAMES (checked by tests/test_inputs_web.py); the script's
// own name is refused by the sandbox when the job starts.
const RESERVED_NAMES = new Set(["site", "outputs"]);
const MAX_INPUT_PATH_BYTES = 1024;
const MAX_INPUT_ENTRIES = 100_000;
// The coordinator's default cap, for one whose /healthz does not say its own.
const DEFAULT_MAX_INPUT_BYTES = 100 * 1024 * 1024;

const encoder = new TextEncoder();

/** A sentence for the user: the inputs cannot be packed or sent as given. */
export class InputsError extends Error {}

/** One picked input: a file, or a folder and the files under it (paths from the folder's parent). */
function fileInput(file) {
  return { name: file.name, folder: false, files: [{ path: file.name, file }], size: file.size };
}

function folderInputs(files) {
  const byTop = new Map();
  for (const file of files) {
    const path = file.webkitRelativePath || file.name;
    const top = path.split("/")[0];
    if (!byTop.has(top)) byTop.set(top, { name: top, folder: true, files: [], size: 0 });
    const input = byTop.get(top);
    input.files.push({ path, file });
    input.size += file.size;
  }
  return [...byTop.values()];
}

function reservedProblem(name) {
  if (!RESERVED_NAMES.has(name)) return null;
  return `“${name}” is a name the job's folder keeps for itself (as are site and outputs): rename it, then add it again.`;
}

/** The tar's entries for `inputs`: each folder before what it holds, paths checked. */
function tarEntries(inputs) {
  const entries = [];
  const dirs = new Set();
  for (const input of inputs) {
    const files = [...input.files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    for (const { path, file } of files) {
      if (encoder.encode(path).length > MAX_INPUT_PATH_BYTES) {
        throw new InputsError(`The input path “${path.slice(0, 80)}…” is longer than ${MAX_INPUT_PATH_BYTES} bytes: shorten it.`);
      }
      const parts = path.split("/");
      for (let i = 1; i < parts.length; i++) {
        const dir = parts.slice(0, i).join("/");
        if (!dirs.has(dir)) {
          dirs.add(dir);
          entries.push({ name: dir, dir: true });
        }
      }
      entries.push({ name: path, file });
    }
  }
  if (entries.length > MAX_INPUT_ENTRIES) {
    throw new InputsError(`The inputs hold ${entries.length.toLocaleString("en")} files and folders, more than the ${MAX_INPUT_ENTRIES.toLocaleString("en")} a job may have.`);
  }
  return entries;
}

async function sha256Hex(blob) {
  // crypto.subtle exists on secure origins only (https, localhost): elsewhere the upload
  // goes without a hash and the coordinator computes it alone.
  if (!window.crypto || !window.crypto.subtle) return null;
  const digest = await window.crypto.subtle.digest("SHA-256", await blob.arrayBuffer());
  return [...new Uint8Array(digest)].map((byte) => byte.toString(16).padStart(2, "0")).join("");
}

/**
 * The inputs picker: `filesInput` (multiple files) and `folderInput` (webkitdirectory) add to
 * the list drawn in `list`; `onChange(sentence)` is called after each change, with a sentence
 * when a pick was refused.
 */
export class InputsPicker {
  constructor({ filesInput, folderInput, list, summary, onChange }) {
    this.inputs = [];
    this.list = list;
    this.summary = summary;
    this.onChange = onChange;
    filesInput.addEventListener("change", () => {
      this.add([...filesInput.files].map(fileInput));
      filesInput.value = "";
    });
    folderInput.addEventListener("change", () => {
      const picked = folderInputs([...folderInput.files]);
      folderInput.value = "";
      if (!picked.length) this.onChange("That folder holds no files: inputs carry files, and the folders they are in.");
      else this.add(picked);
    });
    this.render();
  }

  add(picked) {
    let problem = null;
    for (const input of picked) {
      problem = reservedProblem(input.name);
      if (problem) break;
      this.inputs = this.inputs.filter((other) => other.name !== input.name);
      this.inputs.push(input);
    }
    this.render();
    this.onChange(problem);
  }

  remove(name) {
    this.inputs = this.inputs.filter((input) => input.name !== name);
    this.render();
    this.onChange(null);
  }

  render() {
    const rows = this.inputs.map((input) => {
      const remove = h("button", {
        class: "btn btn--ghost btn--sm", type: "button", "data-testid": "input-remove",
        "aria-label": `Remove ${input.name}`, dataset: { name: input.name },
      }, "Remove");
      remove.addEventListener("click", () => this.remove(input.name));
      const what = input.folder
        ? `folder · ${input.files.length} file${input.files.length === 1 ? "" : "s"} · ${formatBytes(input.size)}`
        : formatBytes(input.size);
      return h("li", { "data-testid": "input-item", dataset: { name: input.name } },
        h("span", { class: "mono artifact-path" }, input.folder ? `${input.name}/` : input.name), " ",
        h("span", { class: "muted" }, what),
        h("span", { class: "spacer" }),
        remove);
    });
    this.list.replaceChildren(...rows);
    this.list.hidden = !rows.length;
    const total = this.inputs.reduce((sum, input) => sum + input.size, 0);
    this.summary.textContent = this.inputs.length
      ? `(${this.inputs.length} input${this.inputs.length === 1 ? "" : "s"}, ${formatBytes(total)})`
      : "(optional)";
  }

  /** The inputs as one tar and its SHA-256 (null where the browser cannot hash), checked
   * against `maxBytes` (the coordinator's cap); null when nothing is picked. */
  async pack(maxBytes) {
    if (!this.inputs.length) return null;
    const { tarBlob } = await import("./tar.js");
    const tar = tarBlob(tarEntries(this.inputs));
    const limit = Number.isFinite(maxBytes) && maxBytes >= 0 ? maxBytes : DEFAULT_MAX_INPUT_BYTES;
    if (tar.size > limit) {
      throw new InputsError(`The input files come to ${formatBytes(tar.size)} as one tar, over this coordinator's ${formatBytes(limit)} limit: leave some out.`);
    }
    return { tar, sha256: await sha256Hex(tar) };
  }
}
