// Terminal output as a log panel draws it: an incremental ANSI parser and text styles.
//
// The parser turns a stream of text chunks into calls on a sink: styled text, line feeds,
// carriage returns, backspaces, erase-line, cursor-up and column moves (what tqdm and
// coloured loggers write). Escape sequences may be split anywhere across chunks; a partial
// one is held until the next chunk. Anything else (other CSI commands, OSC titles and
// hyperlinks, other ESC sequences, C0 controls but tab) is dropped, never shown raw. A
// sequence longer than its bound is abandoned, so hostile input cannot grow state.
// `TerminalCursor` (terminal.js) is the sink that applies those calls to lines of text.
// Nothing here touches the DOM except `paintStyle`, which sets class names and numeric
// colours on a span the caller created (text always goes in as text nodes).

const MAX_CSI_CHARS = 64;     // longest CSI kept; longer ones are dropped whole
const MAX_CURSOR_MOVE = 1000; // cursor-up/column arguments are clamped to this
// Plain text: everything but C0 controls (tab is text), DEL and the C1 CSI.
const PLAIN = /[^\x00-\x08\x0a-\x1f\x7f\x9b]+/y;

const GROUND = 0;
const ESCAPE = 1;     // after ESC
const ESCAPE_INTERMEDIATE = 2; // ESC then 0x20-0x2F bytes, waiting for the final byte
const CSI = 3;        // after ESC [ (or 0x9b): parameters until a final byte 0x40-0x7E
const STRING = 4;     // OSC, DCS, SOS, PM, APC: until BEL or ESC \
const STRING_ESCAPE = 5; // ESC seen inside a string

/**
 * A text style: null is the panel's default; otherwise a frozen, interned object, so two
 * runs have the same style exactly when their styles are ===.
 * fg/bg: null, an index 0-255, or "r,g,b" for truecolor.
 */
const STYLES = new Map();
const PLAIN_STYLE = { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false, strike: false };

function intern(style) {
  const key = `${style.fg}|${style.bg}|${+style.bold}${+style.dim}${+style.italic}${+style.underline}${+style.strike}`;
  if (key === "null|null|00000") return null;
  let found = STYLES.get(key);
  if (!found) {
    if (STYLES.size > 4096) STYLES.clear(); // bounded: equal styles just stop being ===
    found = Object.freeze({ ...style });
    STYLES.set(key, found);
  }
  return found;
}

export class AnsiParser {
  constructor() {
    this.state = GROUND;
    this.csi = "";
    this.style = null;
  }

  /**
   * Feed one chunk; calls sink.text(str, style), sink.newline(), sink.carriageReturn(),
   * sink.backspace(), sink.eraseLine(mode 0|1|2), sink.cursorUp(n), sink.column(n0).
   */
  feed(data, sink) {
    let i = 0;
    const n = data.length;
    while (i < n) {
      if (this.state === GROUND) {
        PLAIN.lastIndex = i;
        if (PLAIN.test(data)) {
          sink.text(data.slice(i, PLAIN.lastIndex), this.style);
          i = PLAIN.lastIndex;
          continue;
        }
      }
      this.step(data.charCodeAt(i), data[i], sink);
      i += 1;
    }
  }

  /** One character outside plain text (or inside an escape sequence). */
  step(code, ch, sink) {
    switch (this.state) {
      case GROUND:
        if (code === 0x0a) sink.newline();
        else if (code === 0x0d) sink.carriageReturn();
        else if (code === 0x08) sink.backspace();
        else if (code === 0x1b) this.state = ESCAPE;
        else if (code === 0x9b) this.enterCsi();
        // other controls are dropped
        return;
      case ESCAPE:
        if (ch === "[") this.enterCsi();
        else if (ch === "]" || ch === "P" || ch === "X" || ch === "^" || ch === "_") this.state = STRING;
        else if (code >= 0x20 && code <= 0x2f) this.state = ESCAPE_INTERMEDIATE;
        else if (code === 0x1b) this.state = ESCAPE;
        else this.state = GROUND; // a two-character sequence (ESC 7, ESC M, ...): dropped
        return;
      case ESCAPE_INTERMEDIATE:
        if (code < 0x20 || code > 0x2f) this.state = code === 0x1b ? ESCAPE : GROUND;
        return;
      case CSI:
        if (code >= 0x40 && code <= 0x7e) {
          this.state = GROUND;
          if (this.csi !== null) this.dispatchCsi(this.csi, ch, sink);
        } else if (code === 0x1b) {
          this.state = ESCAPE; // a broken sequence: start over at the new ESC
        } else if (code < 0x20 || code > 0x7e) {
          // A control inside CSI: xterm executes it; a stray character aborts the sequence.
          if (code === 0x0a) sink.newline();
          else if (code === 0x0d) sink.carriageReturn();
          else if (code === 0x08) sink.backspace();
          else if (code > 0x7e) this.state = GROUND;
        } else if (this.csi !== null) {
          this.csi = this.csi.length < MAX_CSI_CHARS ? this.csi + ch : null; // null: drop it
        }
        return;
      case STRING:
        // A newline ends it too: an unterminated OSC must not swallow the rest of a log.
        if (code === 0x07) this.state = GROUND;
        else if (code === 0x0a) { this.state = GROUND; sink.newline(); }
        else if (code === 0x1b) this.state = STRING_ESCAPE;
        return;
      case STRING_ESCAPE:
        this.state = ch === "\\" ? GROUND : code === 0x1b ? STRING_ESCAPE : STRING;
        return;
      default:
        this.state = GROUND;
    }
  }

  enterCsi() {
    this.state = CSI;
    this.csi = "";
  }

  dispatchCsi(body, final, sink) {
    // Private sequences (ESC [ ? 25 l, ...) and ones with intermediates are dropped.
    if (body && !/^[0-9;:]*$/.test(body)) return;
    if (final === "m") {
      this.style = applySgr(this.style, body);
      return;
    }
    const first = Math.min(parseInt(body, 10) || 0, MAX_CURSOR_MOVE);
    if (final === "K") {
      if (first <= 2) sink.eraseLine(first);
    } else if (final === "A" || final === "F") {
      sink.cursorUp(Math.max(1, first));
      if (final === "F") sink.carriageReturn();
    } else if (final === "G") {
      sink.column(Math.max(1, first) - 1);
    }
    // everything else (cursor down/forward, erase display, scrolling, ...) is dropped
  }
}

/** The style after an SGR sequence's parameters `body` (e.g. "1;38;5;208"). */
export function applySgr(style, body) {
  const next = { ...(style || PLAIN_STYLE) };
  const params = body === "" ? ["0"] : body.split(";");
  for (let i = 0; i < params.length; i += 1) {
    const param = params[i];
    if (param.includes(":")) {
      // ITU form: 38:5:n, 38:2:r:g:b or 38:2:cs:r:g:b; 4:x underline styles.
      const sub = param.split(":").map((p) => parseInt(p, 10));
      if (sub[0] === 38 || sub[0] === 48) {
        const colour = sub[1] === 5 ? index(sub[2]) : sub[1] === 2 ? rgb(sub.slice(-3)) : undefined;
        if (colour !== undefined) next[sub[0] === 38 ? "fg" : "bg"] = colour;
      } else if (sub[0] === 4) {
        next.underline = sub[1] !== 0;
      }
      continue;
    }
    const code = param === "" ? 0 : parseInt(param, 10);
    if (code === 38 || code === 48) {
      const key = code === 38 ? "fg" : "bg";
      const mode = parseInt(params[i + 1], 10);
      if (mode === 5) {
        const colour = index(parseInt(params[i + 2], 10));
        if (colour !== undefined) next[key] = colour;
        i += 2;
      } else if (mode === 2) {
        const colour = rgb(params.slice(i + 2, i + 5).map((p) => parseInt(p, 10)));
        if (colour !== undefined) next[key] = colour;
        i += 4;
      } else {
        break; // malformed: the rest cannot be read reliably
      }
      continue;
    }
    applyCode(next, code);
  }
  return intern(next);
}

function applyCode(style, code) {
  if (code === 0) Object.assign(style, PLAIN_STYLE);
  else if (code === 1) style.bold = true;
  else if (code === 2) style.dim = true;
  else if (code === 3) style.italic = true;
  else if (code === 4) style.underline = true;
  else if (code === 9) style.strike = true;
  else if (code === 22) { style.bold = false; style.dim = false; }
  else if (code === 23) style.italic = false;
  else if (code === 24) style.underline = false;
  else if (code === 29) style.strike = false;
  else if (code >= 30 && code <= 37) style.fg = code - 30;
  else if (code === 39) style.fg = null;
  else if (code >= 40 && code <= 47) style.bg = code - 40;
  else if (code === 49) style.bg = null;
  else if (code >= 90 && code <= 97) style.fg = code - 90 + 8;
  else if (code >= 100 && code <= 107) style.bg = code - 100 + 8;
  // others (blink, inverse, fonts, ...) are ignored
}

function index(n) {
  return Number.isInteger(n) && n >= 0 && n <= 255 ? n : undefined;
}

function rgb(parts) {
  if (parts.length !== 3 || !parts.every((p) => Number.isInteger(p) && p >= 0 && p <= 255)) return undefined;
  return parts.join(",");
}

/** The xterm 256-colour palette above the 16 named colours, as "r,g,b". */
function xterm256(n) {
  if (n >= 232) {
    const level = 8 + (n - 232) * 10;
    return `${level},${level},${level}`;
  }
  const cube = n - 16;
  const level = (v) => (v === 0 ? 0 : 55 + v * 40);
  return `${level(Math.floor(cube / 36))},${level(Math.floor(cube / 6) % 6)},${level(cube % 6)}`;
}

/**
 * Style a span the caller made: the 16 named colours are classes (css: .ansi-fg-N, mapped
 * to the design's palette), other colours are numeric inline colours, never text.
 */
export function paintStyle(span, style) {
  const classes = [];
  if (style.bold) classes.push("ansi-bold");
  if (style.dim) classes.push("ansi-dim");
  if (style.italic) classes.push("ansi-italic");
  if (style.underline) classes.push("ansi-underline");
  if (style.strike) classes.push("ansi-strike");
  for (const [key, colour] of [["fg", style.fg], ["bg", style.bg]]) {
    if (colour === null) continue;
    if (typeof colour === "number" && colour < 16) {
      classes.push(`ansi-${key}-${colour}`);
    } else {
      const value = `rgb(${typeof colour === "number" ? xterm256(colour) : colour})`;
      if (key === "fg") span.style.color = value;
      else span.style.backgroundColor = value;
    }
  }
  span.className = classes.join(" ");
}
