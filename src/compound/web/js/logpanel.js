// A log panel that stays smooth at 100,000+ lines.
//
// Records ({seq, stream, data}) are joined into lines per stream (a chunk need not end at a
// newline) and kept in memory. Each stream's text goes through a terminal cursor (terminal.js):
// ANSI colours become styled runs, a carriage return rewrites the line in place (a progress
// bar stays one line), other escape sequences are dropped; the text held and drawn is the
// rendered text, never raw escapes, and it only ever enters the DOM as text nodes. Drawing happens at most once per animation frame, and only
// the last `maxLines` lines are in the DOM, as blocks of up to BLOCK_LINES consecutive lines
// of one stream (one element per block, not per line: creating and laying out thousands of
// elements per frame is what makes big logs stutter). A note above the blocks counts the
// hidden lines and offers the full log as a download. Memory is bounded too: past
// `maxKeptLines` the oldest hidden lines are forgotten (the download then comes from
// `fullLog`, e.g. the coordinator, when one is given). Auto-scroll follows the end until the
// user scrolls up and resumes once they are back at the bottom. The panel is not a live
// region (announcing every line would drown a screen reader); status belongs to the badge.

import { paintStyle } from "./ansi.js";
import { Line, TerminalCursor } from "./terminal.js";
import { Stream } from "./wire.js";

const BOTTOM_SLACK_PX = 32;
const BLOCK_LINES = 64;
const MAX_BLOCK_SPANS = 2000; // styled runs drawn per block; the rest shows unstyled
const NUMBER = new Intl.NumberFormat("en");

export class LogPanel {
  /**
   * @param {HTMLElement} element the scroll box (class "log"); its children are ours
   * @param {{maxLines?: number, maxKeptLines?: number, emptyText?: string, filename?: string,
   *          fullLog?: () => Promise<string>}} options  fullLog: the whole log's text, for the
   *          download (default: what this panel still holds)
   */
  constructor(element, {
    maxLines = 2000, maxKeptLines = 500_000, emptyText = "No output yet.", filename = "compound.log",
    fullLog = null,
  } = {}) {
    this.el = element;
    this.maxLines = maxLines;
    this.maxKeptLines = Math.max(maxKeptLines, maxLines * 2);
    this.fullLog = fullLog;
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
    this.lines = [];          // Line objects (terminal.js); line i is lines[i - base]
    this.base = 0;            // lines forgotten to bound memory (all long out of the DOM)
    this.cursors = new Map(); // stream -> its TerminalCursor (parser state, open line)
    this.blocks = [];         // {el, stream, from, to}: lines [from, to) drawn in one element
    this.dirty = new Set();   // blocks whose text must be redrawn
    this.drawnFrom = 0;       // number of the first line in the DOM
    this.drawnTo = 0;         // index after the last line in the DOM
    this.records = 0;
    this.attempt = null;      // the attempt of the job whose records came last
    this.scheduled = false;
    this.note = document.createElement("div");
    this.note.className = "log-note";
    this.note.hidden = true;
    this.noteText = document.createElement("span");
    const download = document.createElement("button");
    download.type = "button";
    download.textContent = "Download the full log";
    download.addEventListener("click", () => this.download(download));
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
      // A job handed back or requeued runs again: a line says where each new attempt starts.
      if (typeof record.attempt === "number" && record.attempt !== this.attempt) {
        if (this.attempt !== null) this.appendSystem(`── attempt ${record.attempt} ──`);
        this.attempt = record.attempt;
      }
      this.addChunk(record.stream || Stream.STDOUT, record.data);
    }
    this.schedule();
  }

  /** Add a note from the UI itself, drawn like a system line. */
  appendSystem(text) {
    this.closeOpen();
    this.lines.push(new Line(Stream.SYSTEM, text, true));
    this.schedule();
  }

  /** The job is over: lines still open (no final newline) are complete as they are. */
  finish() {
    this.closeOpen();
    this.schedule();
  }

  /**
   * Plain text of the lines held (everything received unless more than maxKeptLines came),
   * optionally of one stream; each complete line ends in "\n".
   */
  text(stream = null) {
    const parts = [];
    for (const line of this.lines) {
      if (stream && line.stream !== stream) continue;
      parts.push(line.closed ? `${line.text}\n` : line.text);
    }
    return parts.join("");
  }

  /** Lines received so far (a partial last line counts). */
  get lineCount() {
    return this.base + this.lines.length;
  }

  /** Lines received but no longer held in memory. */
  get forgottenCount() {
    return this.base;
  }

  /** Lines received but no longer in the DOM. */
  get hiddenCount() {
    return this.drawnFrom;
  }

  /** Lines currently in the DOM. */
  get drawnCount() {
    return this.drawnTo - this.drawnFrom;
  }

  /** Draw now instead of at the next frame (tests, or before reading the DOM). */
  flushNow() {
    this.flush();
  }

  // ------------------------------------------------------------------ model

  addChunk(stream, data) {
    let cursor = this.cursors.get(stream);
    if (!cursor) {
      cursor = new TerminalCursor(() => {
        const line = new Line(stream);
        this.lines.push(line);
        return line;
      }, (line) => this.touch(line));
      this.cursors.set(stream, cursor);
    }
    cursor.write(data);
  }

  closeOpen() {
    for (const cursor of this.cursors.values()) cursor.close();
  }

  touch(line) {
    if (line.block) this.dirty.add(line.block);
  }

  // ------------------------------------------------------------------ drawing

  schedule() {
    if (this.scheduled) return;
    this.scheduled = true;
    // Frames do not run in a hidden tab; a timer keeps the work going there.
    if (document.hidden) setTimeout(() => this.flush(), 100);
    else requestAnimationFrame(() => this.flush());
  }

  flush() {
    this.scheduled = false;
    const total = this.lineCount;
    if (total > this.drawnTo) {
      // Lines that would be trimmed straight away are never drawn.
      const start = Math.max(this.drawnTo, total - this.maxLines);
      if (start > this.drawnTo) {
        this.dropBlocks(this.blocks.length);
        this.drawnFrom = start;
        this.drawnTo = start;
      }
      const fresh = document.createDocumentFragment();
      for (let i = start; i < total; i += 1) this.place(i, fresh);
      this.el.append(fresh);
      this.drawnTo = total;
    }
    this.trim();
    for (const block of this.dirty) this.paintBlock(block);
    this.dirty.clear();
    this.forget();

    this.empty.hidden = total > 0;
    this.note.hidden = this.drawnFrom === 0;
    if (this.drawnFrom) {
      this.noteText.textContent = `${NUMBER.format(this.drawnFrom)} earlier lines hidden —`;
    }
    if (this.follow) this.el.scrollTop = this.el.scrollHeight;
  }

  /** Put line `index` into the last block if it fits there, else into a new block. */
  place(index, fragment) {
    const line = this.line(index);
    let block = this.blocks[this.blocks.length - 1];
    if (!block || block.stream !== line.stream || block.to !== index || block.to - block.from >= BLOCK_LINES) {
      const el = document.createElement("div");
      el.className = line.stream === Stream.STDOUT ? "log-block" : `log-block log-block--${line.stream}`;
      block = { el, stream: line.stream, from: index, to: index };
      this.blocks.push(block);
      fragment.append(el);
    }
    block.to = index + 1;
    line.block = block;
    this.dirty.add(block);
  }

  paintBlock(block) {
    if (!block.el) return;
    const last = this.line(block.to - 1);
    let styled = false;
    for (let i = block.from; i < block.to && !styled; i += 1) styled = this.line(i).runs !== null;
    if (styled) {
      block.el.replaceChildren(this.styledText(block));
    } else {
      let text = "";
      for (let i = block.from; i < block.to; i += 1) {
        text += i === block.from ? this.line(i).text : `\n${this.line(i).text}`;
      }
      block.el.textContent = text;
    }
    // A trailing empty line needs one more newline to take up its own row.
    if (last.text === "" && block.to > block.from) block.el.append("\n");
    block.el.dataset.lines = String(block.to - block.from);
    block.el.style.containIntrinsicSize = `auto ${(block.to - block.from) * 20}px`;
    block.el.classList.toggle("log-block--open", !last.closed);
  }

  /**
   * A block's lines as text nodes and one span per styled run (text is never parsed as HTML).
   * Past MAX_BLOCK_SPANS styled runs the rest of the block is drawn unstyled: a block is
   * redrawn whole on every frame it changes in, and output with a colour per character
   * (hostile, or a gradient gone wild) must not cost tens of thousands of elements a frame.
   */
  styledText(block) {
    const fragment = document.createDocumentFragment();
    let plain = "";
    let spans = 0;
    for (let i = block.from; i < block.to; i += 1) {
      const line = this.line(i);
      if (i > block.from) plain += "\n";
      if (line.runs === null || spans >= MAX_BLOCK_SPANS) {
        plain += line.text;
        continue;
      }
      for (const run of line.runs) {
        if (run.style === null || spans >= MAX_BLOCK_SPANS) {
          plain += run.text;
          continue;
        }
        spans += 1;
        if (plain) fragment.append(plain);
        plain = "";
        const span = document.createElement("span");
        paintStyle(span, run.style);
        span.textContent = run.text;
        fragment.append(span);
      }
    }
    if (plain) fragment.append(plain);
    return fragment;
  }

  /** Drop whole or partial blocks from the top until at most maxLines remain. */
  trim() {
    let excess = this.drawnTo - this.drawnFrom - this.maxLines;
    while (excess > 0 && this.blocks.length) {
      const block = this.blocks[0];
      const size = block.to - block.from;
      if (size <= excess) {
        this.dropBlocks(1);
        this.drawnFrom = block.to;
        excess -= size;
      } else {
        for (let i = block.from; i < block.from + excess; i += 1) this.line(i).block = null;
        block.from += excess;
        this.drawnFrom = block.from;
        this.dirty.add(block);
        excess = 0;
      }
    }
  }

  dropBlocks(count) {
    for (const block of this.blocks.splice(0, count)) {
      for (let i = block.from; i < block.to; i += 1) this.line(i).block = null;
      block.el.remove();
      block.el = null;
      this.dirty.delete(block);
    }
  }

  line(index) {
    return this.lines[index - this.base];
  }

  /** Past maxKeptLines, forget the oldest tenth of the lines (never one still drawn). */
  forget() {
    if (this.lines.length <= this.maxKeptLines) return;
    const count = Math.min(this.lines.length - Math.floor(this.maxKeptLines * 0.9), this.drawnFrom - this.base);
    if (count <= 0) return;
    this.lines.splice(0, count);
    this.base += count;
  }

  // ------------------------------------------------------------------ scrolling, download

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

  async download(button) {
    let text;
    if (this.fullLog) {
      const label = button.textContent;
      button.disabled = true;
      button.textContent = "Preparing the full log…";
      try {
        text = await this.fullLog();
      } catch {
        text = null; // fall back to what is held here
      } finally {
        button.disabled = false;
        button.textContent = label;
      }
    }
    if (text === null || text === undefined) text = this.text();
    const blob = new Blob([text], { type: "text/plain;charset=utf-8" });
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
