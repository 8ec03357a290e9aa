// A small POSIX tar writer: directories and regular files, as a Blob, nothing read into memory.
//
// Each entry is a 512-byte ustar header, then the file's bytes (the File itself, a part of
// the Blob: the browser reads it from disk when the Blob is sent), padded to 512. A name
// that does not fit ustar's 100 bytes, or is not ASCII, goes in a pax extended header
// (`path=`, UTF-8) in front, as Python's tarfile and GNU tar read it. Owners are 0 and the
// modes 0755 / 0644: the job's sandbox sets its own.

const BLOCK = 512;
const NAME_BYTES = 100;
const encoder = new TextEncoder();

/** The number as `width - 1` octal digits and a NUL, as ustar's numeric fields are. */
function octal(value, width) {
  return `${Math.floor(value).toString(8).padStart(width - 1, "0")}\0`;
}

function put(header, offset, text, width) {
  header.set(encoder.encode(text).subarray(0, width), offset);
}

function header(name, { size = 0, mode = 0o644, mtimeS = 0, type = "0" }) {
  const block = new Uint8Array(BLOCK);
  put(block, 0, name, NAME_BYTES);
  put(block, 100, octal(mode, 8), 8);
  put(block, 108, octal(0, 8), 8); // uid
  put(block, 116, octal(0, 8), 8); // gid
  put(block, 124, octal(size, 12), 12);
  put(block, 136, octal(mtimeS, 12), 12);
  put(block, 148, "        ", 8); // the checksum counts its own field as spaces
  put(block, 156, type, 1);
  put(block, 257, "ustar\0", 6);
  put(block, 263, "00", 2);
  let sum = 0;
  for (const byte of block) sum += byte;
  put(block, 148, `${sum.toString(8).padStart(6, "0")}\0 `, 8);
  return block;
}

function padding(size) {
  const rest = size % BLOCK;
  return rest ? new Uint8Array(BLOCK - rest) : null;
}

/** A pax record "LEN path=NAME\n", whose LEN counts the whole record, itself included. */
function paxRecord(key, value) {
  const body = ` ${key}=${value}\n`;
  const bodyBytes = encoder.encode(body).length;
  let length = bodyBytes + 1;
  while (String(length).length + bodyBytes !== length) length = String(length).length + bodyBytes;
  return encoder.encode(`${length}${body}`);
}

function fitsUstar(name) {
  return /^[\x20-\x7e]*$/.test(name) && name.length <= NAME_BYTES;
}

function pushEntry(parts, name, options, data) {
  if (!fitsUstar(name)) {
    const record = paxRecord("path", name);
    parts.push(header("PaxHeader", { size: record.length, type: "x", mtimeS: options.mtimeS }), record);
    const pad = padding(record.length);
    if (pad) parts.push(pad);
  }
  // Behind a pax header the ustar name is only a fallback for readers without pax.
  const shortName = fitsUstar(name) ? name : name.replace(/[^\x20-\x7e]/g, "_").slice(-NAME_BYTES);
  parts.push(header(shortName, options));
  if (data) {
    parts.push(data);
    const pad = padding(options.size);
    if (pad) parts.push(pad);
  }
}

/**
 * The tar of `entries`, in their order, as a Blob: each {name, dir: true} (a directory) or
 * {name, file} (a File or Blob; its lastModified, else now). Names are relative,
 * "/"-separated, checked by the caller.
 */
export function tarBlob(entries) {
  const parts = [];
  const nowS = Date.now() / 1000;
  for (const entry of entries) {
    if (entry.dir) {
      pushEntry(parts, `${entry.name}/`, { mode: 0o755, type: "5", mtimeS: nowS });
    } else {
      const mtimeS = entry.file.lastModified ? entry.file.lastModified / 1000 : nowS;
      pushEntry(parts, entry.name, { size: entry.file.size, mode: 0o644, mtimeS }, entry.file);
    }
  }
  parts.push(new Uint8Array(2 * BLOCK)); // the end of the archive
  return new Blob(parts, { type: "application/x-tar" });
}
