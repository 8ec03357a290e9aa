// A log panel that stays smooth at 100,000+ lines.
//
// Records ({seq, stream, data}) are joined into lines per stream (a chunk need not end at a
// newline), kept in memory, and drawn in batches once per animation frame. Only the last
// `maxLines` lines live in the DOM; a note above them counts the hidden ones and offers the
// full log as a download. Auto-scroll follows the end until the user scrolls up and resumes
// once they are back at the bottom. The panel itself is not a live region (announcing every
// line would drown a screen reader); status belongs to the page's badge.

const BOTTOM_SLACK_PX = 32;

export class LogPanel {
  /**
   * @param {HTMLElement} element the scroll box (class "log"); its children are ours
   * @param {{maxLines?: number, emptyText?: string, filename?: string}} options
   */
  constructor(element, { maxLines = 2000, emptyText = "No output yet.", filename = "compound.log" } = {}) {
    this.el = element;
    this.maxLines = maxLines;
    this.emptyText = emptyText;
    this.filename = filename;
    this.follow = true;
    this.el.setAttribute("aria-live", "off");
    this.el.addEventListener("scroll", () => this.onScroll(), { passive: true });
    this.jump = this.buildJump();
    this.reset();
  }

  /** Forget everything and show the empty placeholder. */
  reset(emptyText = this.emptyText) {
    this.emptyText = emptyText;
    this.lines = [];          // {stream, text, closed, el}
    this.open = new Map();    // stream -> the line still being written on that stream
    this.dirty = new Set();   // open lines already drawn whose text grew
    this.drawnFrom = 0;       // index of the first line in the DOM
    this.drawnTo = 0;         // index after the last line in the DOM
    this.records = 0;
    this.chars = 0;
    this.scheduled = false;
    this.note = document.createElement("div");
    this.note.className = "log-note";
    this.note.hidden = true;
    this.noteText = document.createElement("span");
    const download = document.createElement("button");
    download.type = "button";
    download.textContent = "Download the full log";
    download.addEventListener("click", () => this.download());
    this.note.append(this.noteText, download);
    this.empty = document.createElement("div");
    this.empty.className = "log-empty";
    this.empty.textContent = emptyText;
    this.el.replaceChildren(this.note, this.empty);
    this.setFollow(true);
  }

  /** Show a different placeholder while there is no output. */
  setEmptyText(text) {
    this.emptyText = text;
    this.empty.textContent = text;
  }

  /** Add log records (already de-duplicated and in seq order). */
  append(records) {
    for (const record of records) {
      this.records += 1;
      this.chars += record.data.length;
      this.addChunk(record.stream || "stdout", record.data);
    }
    this.schedule();
  }

  /** Add a note from the UI itself (reconnecting, ...), drawn like a system line. */
  appendSystem(text) {
    this.closeOpen();
    this.lines.push({ stream: "system", text, closed: true, el: null });
    this.schedule();
  }

  /** The job is over: lines still open (no final newline) are complete as they are. */
  finish() {
    this.closeOpen();
    this.schedule();
  }

  /** Plain text of everything received, line by line, each complete line ending in "\n". */
  text(stream = null) {
    const parts = [];
    for (const line of this.lines) {
      if (stream && line.stream !== stream) continue;
      parts.push(line.closed ? `${line.text}\n` : line.text);
    }
    return parts.join("");
  }

  get lineCount() {
    return this.lines.length;
  }

  get hiddenCount() {
    return this.drawnFrom;
  }

  /** Draw now instead of at the next frame (tests, or before reading the DOM). */
  flushNow() {
    this.flush();
  }

  // ------------------------------------------------------------------ internals

  addChunk(stream, data) {
    const pieces = data.split("\n");
    let line = this.open.get(stream);
    for (let i = 0; i < pieces.length; i += 1) {
      const piece = pieces[i];
      const last = i === pieces.length - 1;
      if (last && piece === "") break; // the chunk ended with a newline
      if (!line) {
        line = { stream, text: piece, closed: false, el: null };
        this.lines.push(line);
      } else if (piece) {
        line.text += piece;
        if (line.el) this.dirty.add(line);
      }
      if (!last) {
        line.closed = true;
        if (line.el) this.dirty.add(line);
        line = null;
      }
    }
    if (line) this.open.set(stream, line);
    else this.open.delete(stream);
  }

  closeOpen() {
    for (const line of this.open.values()) {
      line.closed = true;
      if (line.el) this.dirty.add(line);
    }
    this.open.clear();
  }

  schedule() {
    if (this.scheduled) return;
    this.scheduled = true;
    // Frames do not run in a hidden tab; a timer keeps memory in check there.
    if (document.hidden) setTimeout(() => this.flush(), 100);
    else requestAnimationFrame(() => this.flush());
  }

  lineElement(line) {
    const el = document.createElement("div");
    el.className = line.stream === "stdout" ? "log-line" : `log-line log-line--${line.stream}`;
    if (!line.closed) el.classList.add("log-line--open");
    el.textContent = line.text;
    line.el = el;
    return el;
  }

  flush() {
    this.scheduled = false;
    for (const line of this.dirty) {
      if (!line.el) continue;
      line.el.textContent = line.text;
      if (line.closed) line.el.classList.remove("log-line--open");
    }
    this.dirty.clear();

    const total = this.lines.length;
    if (total > this.drawnTo) {
      // Lines that would be trimmed straight away are never drawn.
      const start = Math.max(this.drawnTo, total - this.maxLines);
      if (start > this.drawnTo) {
        // Everything on screen is older than the newest maxLines lines: replace it all.
        for (let i = this.drawnFrom; i < this.drawnTo; i += 1) this.dropElement(i);
        this.drawnFrom = start;
      }
      const fragment = document.createDocumentFragment();
      for (let i = start; i < total; i += 1) fragment.append(this.lineElement(this.lines[i]));
      this.el.append(fragment);
      this.drawnTo = total;
    }
    while (this.drawnTo - this.drawnFrom > this.maxLines) {
      this.dropElement(this.drawnFrom);
      this.drawnFrom += 1;
    }
    this.empty.hidden = total > 0;
    this.note.hidden = this.drawnFrom === 0;
    if (this.drawnFrom) {
      this.noteText.textContent = `${this.drawnFrom.toLocaleString("en")} earlier lines hidden —`;
    }
    if (this.follow) this.el.scrollTop = this.el.scrollHeight;
  }

  dropElement(index) {
    const line = this.lines[index];
    if (line && line.el) {
      line.el.remove();
      line.el = null;
      this.dirty.delete(line);
    }
  }

  onScroll() {
    const gap = this.el.scrollHeight - this.el.scrollTop - this.el.clientHeight;
    this.setFollow(gap <= BOTTOM_SLACK_PX);
  }

  setFollow(follow) {
    if (this.follow === follow) return;
    this.follow = follow;
    this.jump.hidden = follow;
  }

  buildJump() {
    const jump = document.createElement("button");
    jump.type = "button";
    jump.className = "log-jump";
    jump.textContent = "↓ Jump to latest";
    jump.hidden = true;
    jump.addEventListener("click", () => {
      this.setFollow(true);
      this.el.scrollTop = this.el.scrollHeight;
      this.el.focus({ preventScroll: true });
    });
    // Beside the scroll box, not in it: the box's children are log content only.
    this.el.insertAdjacentElement("afterend", jump);
    return jump;
  }

  download() {
    const blob = new Blob([this.text()], { type: "text/plain;charset=utf-8" });
    const url = URL.createObjectURL(blob);
    const link = document.createElement("a");
    link.href = url;
    link.download = this.filename;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  }
}
