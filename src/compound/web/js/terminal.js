// One stream's lines as a terminal would hold them: the sink of an AnsiParser (ansi.js).
//
// A carriage return then text overwrites the line in place (a tqdm bar stays one line),
// erase-line and cursor moves work as in xterm. A log is untrusted input, so every call costs
// time in proportion to what it writes, never to the length of the line it lands on:
// rewriting a long or many-coloured line after each of thousands of carriage returns used to
// re-slice the whole line each time (260 KB of output froze a page for 13 s). A line is held
// in one of two forms:
//  - flat: `text` and `runs` as the panel reads them. Appending at the end stays flat and
//    cheap, which is what nearly every line of a log does.
//  - cells: one UTF-16 unit and one style per column. The first change that is not an append
//    (an overwrite, an erase, padding after one) turns the line into cells, once; from then on
//    a write costs its own length, and `text`/`runs` are rebuilt from the cells when read
//    (the panel reads at most once per drawn frame). A line goes back to flat when the cursor
//    can no longer reach it, so only the last few lines of a stream ever hold cells.

import { AnsiParser } from "./ansi.js";

const RECENT_LINES = 128; // lines of one stream the cursor can still move back up to

/** One line of output: `text`, and `runs` ([{text, style}] joining to `text`, or null when
 * all of it is in the default style). `block` belongs to the panel that draws it. */
export class Line {
  constructor(stream, text = "", closed = false) {
    this.stream = stream;
    this.closed = closed;
    this.block = null;
    this.flatText = text;
    this.flatRuns = null;
    this.stale = false;  // cells changed since flatText/flatRuns were built
    this.cells = null;   // null in the flat form; else the character of each column
    this.styles = null;  // the style of each column (null: default)
    this.size = 0;       // cells: the line's length (the arrays may hold more, unused)
    this.blankTo = 0;    // cells: columns [0, blankTo) of the arrays are known blank
  }

  get text() {
    this.settle();
    return this.flatText;
  }

  get runs() {
    this.settle();
    return this.flatRuns;
  }

  get length() {
    return this.cells ? this.size : this.flatText.length;
  }

  /** Write `str` in `style` from column `col`, padding with blanks past the end. */
  write(col, str, style) {
    if (!this.cells && col >= this.flatText.length) {
      if (col > this.flatText.length) this.append(" ".repeat(col - this.flatText.length), null);
      this.append(str, style);
      return;
    }
    this.toCells();
    this.pad(col);
    const { cells, styles } = this;
    for (let k = 0; k < str.length; k += 1) {
      cells[col + k] = str[k];
      styles[col + k] = style;
    }
    if (col < this.blankTo) this.blankTo = col;
    this.size = Math.max(this.size, col + str.length);
    this.stale = true;
  }

  /** Erase to the end (mode 0), to the start up to `col` inclusive (1) or all of it (2). */
  erase(mode, col) {
    if (mode === 0 ? col >= this.length : this.length === 0) return;
    this.toCells();
    if (mode === 2) {
      this.size = 0;
    } else if (mode === 0) {
      this.size = col;
    } else {
      // Blanks already written stay known, so erasing again costs only what was written since.
      const end = Math.min(col + 1, this.size);
      for (let i = this.blankTo; i < end; i += 1) {
        this.cells[i] = " ";
        this.styles[i] = null;
      }
      this.blankTo = Math.max(this.blankTo, end);
    }
    this.stale = true;
  }

  /** Back to the flat form (the cursor can no longer reach this line). */
  flatten() {
    this.settle();
    this.cells = null;
    this.styles = null;
  }

  // -- internals

  append(str, style) {
    const old = this.flatText;
    this.flatText = old + str;
    if (style === null && this.flatRuns === null) return;
    if (this.flatRuns === null) this.flatRuns = old ? [{ text: old, style: null }] : [];
    const last = this.flatRuns[this.flatRuns.length - 1];
    if (last && last.style === style) last.text += str;
    else this.flatRuns.push({ text: str, style });
  }

  toCells() {
    if (this.cells) return;
    this.cells = this.flatText.split("");
    this.styles = new Array(this.cells.length).fill(null);
    let col = 0;
    for (const run of this.flatRuns || []) {
      if (run.style !== null) this.styles.fill(run.style, col, col + run.text.length);
      col += run.text.length;
    }
    this.size = this.cells.length;
    this.blankTo = 0;
  }

  /** Make the line at least `col` long with blanks (the columns past `size` are unused). */
  pad(col) {
    if (col <= this.size) return;
    for (let i = Math.max(this.size, this.blankTo); i < col; i += 1) {
      this.cells[i] = " ";
      this.styles[i] = null;
    }
    if (this.size <= this.blankTo) this.blankTo = Math.max(this.blankTo, col);
    this.size = col;
  }

  settle() {
    if (!this.stale) return;
    this.stale = false;
    const { cells, styles, size } = this;
    const text = size === cells.length ? cells.join("") : cells.slice(0, size).join("");
    let runs = null;
    let start = 0;
    for (let i = 1; i <= size; i += 1) {
      if (i < size && styles[i] === styles[start]) continue;
      if (runs === null && styles[start] !== null) {
        runs = start ? [{ text: text.slice(0, start), style: null }] : [];
      }
      if (runs !== null) runs.push({ text: text.slice(start, i), style: styles[start] });
      start = i;
    }
    this.flatText = text;
    this.flatRuns = runs;
  }
}

/**
 * One stream's cursor over its lines: the sink of an AnsiParser. `createLine()` makes and
 * stores a new (empty, open) Line; `touch(line)` is called after each change to a line.
 */
export class TerminalCursor {
  constructor(createLine, touch) {
    this.parser = new AnsiParser();
    this.createLine = createLine;
    this.touch = touch;
    this.recent = []; // the stream's last lines; all closed but maybe the last one
    this.row = 0;     // index in recent; recent.length is the line not written yet
    this.col = 0;
  }

  write(data) {
    this.parser.feed(data, this);
  }

  /** The job is over or something else writes a line: the open line is complete. */
  close() {
    const last = this.recent[this.recent.length - 1];
    if (last && !last.closed) {
      last.closed = true;
      this.touch(last);
    }
    this.row = this.recent.length;
    this.col = 0;
  }

  current(create) {
    if (this.row < this.recent.length) return this.recent[this.row];
    if (!create) return null;
    const line = this.createLine();
    this.recent.push(line);
    if (this.recent.length > RECENT_LINES * 2) {
      for (const gone of this.recent.splice(0, RECENT_LINES)) gone.flatten();
      this.row -= RECENT_LINES;
    }
    return line;
  }

  // -- sink of AnsiParser

  text(str, style) {
    const line = this.current(true);
    line.write(this.col, str, style);
    this.col += str.length;
    this.touch(line);
  }

  newline() {
    if (this.row >= this.recent.length) this.current(true);
    if (this.row < this.recent.length - 1) {
      this.row += 1; // back down over a line written before (tqdm's nested bars)
    } else {
      this.close();
    }
    this.col = 0;
  }

  carriageReturn() {
    this.col = 0;
  }

  backspace() {
    this.col = Math.max(0, this.col - 1);
  }

  column(col) {
    this.col = col;
  }

  cursorUp(n) {
    this.row = Math.max(0, this.row - n);
  }

  eraseLine(mode) {
    const line = this.current(false);
    if (!line) return;
    line.erase(mode, this.col);
    this.touch(line);
  }
}
