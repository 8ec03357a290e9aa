"""A streaming reader of an untrusted tar's entries, in bounded memory whatever the bytes.

It understands what ``tarfile`` writes in PAX format: 512-byte ustar headers, PAX extended
headers (``x``) and GNU long names (``L``) for the next entry. A header is read into memory
whole, so each is bounded: one block, or ``MAX_EXTENDED_HEADER_BYTES`` for an extended one,
refused beyond. Nothing is kept from one entry to the next (``tarfile`` keeps every member,
its PAX headers and sparse maps), and no data is read here: an entry says where its bytes
are and the caller reads them in chunks of its choosing. Pure parsing over a seekable file;
bad bytes raise TarFormatError with one sentence.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

BLOCK_BYTES = 512
MAX_EXTENDED_HEADER_BYTES = 64 * 1024
_ZERO_BLOCK = bytes(BLOCK_BYTES)
_KINDS = {
    b"0": "file",
    b"\0": "file",
    b"5": "directory",
    b"1": "a hard link",
    b"2": "a symbolic link",
    b"3": "a device",
    b"4": "a device",
    b"6": "a fifo",
    b"S": "a sparse file",
    b"g": "a global header",
}


class TarFormatError(Exception):
    """The bytes are not a tar this reader accepts; ``str()`` is one sentence."""


@dataclass(frozen=True)
class TarEntry:
    """One entry: its name as written (UTF-8, undecodable bytes as surrogates), what it is
    ("file", "directory" or a phrase such as "a symbolic link"), and where its data is."""

    name: str
    kind: str
    size: int
    offset: int
    sparse: bool = False


def read_entries(source: BinaryIO) -> Iterator[TarEntry]:
    """The entries of the tar in ``source``, up to its end-of-archive block or its end."""
    offset = 0
    pending: dict[str, str] = {}
    while True:
        source.seek(offset)
        header = source.read(BLOCK_BYTES)
        if not header or header == _ZERO_BLOCK:
            return
        if len(header) < BLOCK_BYTES:
            raise TarFormatError("the tar ends inside a header")
        _check_sum(header)
        type_flag = header[156:157]
        size = _number(header[124:136])
        data_offset = offset + BLOCK_BYTES
        if type_flag in (b"x", b"L"):
            pending.update(_extended(source, type_flag, size))
            offset = data_offset + _padded(size)
            continue
        kind = _KINDS.get(type_flag, "of an unknown type")
        name = pending.get("path") or _ustar_name(header)
        if kind == "file" and name.endswith("/"):
            kind = "directory"  # as tarfile reads an old-style directory
        if "size" in pending:
            size = _pax_size(pending["size"])
        if kind != "file":
            size = 0
        sparse = any(key.startswith("GNU.sparse") for key in pending)
        pending = {}
        yield TarEntry(name, kind, size, data_offset, sparse)
        offset = data_offset + _padded(size)


def _extended(source: BinaryIO, type_flag: bytes, size: int) -> dict[str, str]:
    if size > MAX_EXTENDED_HEADER_BYTES:
        raise TarFormatError(
            f"a tar header holds {size} bytes, more than the "
            f"{MAX_EXTENDED_HEADER_BYTES // 1024} KiB allowed"
        )
    body = source.read(size)
    if len(body) < size:
        raise TarFormatError("the tar ends inside a header")
    if type_flag == b"L":
        return {"path": _text(body.split(b"\0", 1)[0])}
    return _pax_records(body)


def _pax_records(body: bytes) -> dict[str, str]:
    """PAX records ``"<length> <key>=<value>\\n"``, each length counting the whole record."""
    records: dict[str, str] = {}
    position = 0
    while position < len(body):
        space = body.find(b" ", position, position + 20)
        length_text = body[position:space]
        if space < 0 or not length_text.isdigit():
            raise TarFormatError("a PAX header in the tar is malformed")
        end = position + int(length_text)
        record = body[space + 1 : end]
        if end > len(body) or not record.endswith(b"\n") or b"=" not in record:
            raise TarFormatError("a PAX header in the tar is malformed")
        key, value = record[:-1].split(b"=", 1)
        records[_text(key)] = _text(value)
        position = end
    return records


def _ustar_name(header: bytes) -> str:
    name = header[:100].split(b"\0", 1)[0]
    prefix = header[345:500].split(b"\0", 1)[0]
    if header[257:263] == b"ustar\x00" and prefix:
        name = prefix + b"/" + name
    return _text(name)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _number(field: bytes) -> int:
    """A numeric header field: octal digits, or base-256 when its first bit is set."""
    if field[0] & 0x80:
        if field[0] != 0x80:
            raise TarFormatError("a tar header holds a negative number")
        return int.from_bytes(field[1:], "big")
    digits = field.split(b"\0", 1)[0].strip(b" ")
    if not digits:
        return 0
    if not all(48 <= byte <= 55 for byte in digits):
        raise TarFormatError("a tar header is malformed (not a tar?)")
    return int(digits, 8)


def _pax_size(text: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise TarFormatError("a PAX header in the tar gives a malformed size")
    return int(text)


def _check_sum(header: bytes) -> None:
    stored = _number(header[148:156])
    unsigned = sum(header[:148]) + 8 * 32 + sum(header[156:])
    signed = unsigned - 256 * sum(1 for byte in header[:148] + header[156:] if byte > 127)
    if stored not in (unsigned, signed):
        raise TarFormatError("a tar header's checksum does not match (not a tar?)")


def _padded(size: int) -> int:
    return -(-size // BLOCK_BYTES) * BLOCK_BYTES
