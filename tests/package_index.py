"""A real package index on loopback for the package tests: PEP 503 pages over HTTP.

Wheels are built here by hand (a wheel is a zip with a dist-info directory) or, for numpy,
downloaded once from PyPI into the repository's ignored ``.cache/test-wheels`` and served
from there ever after, so the tests never need the internet once the cache is warm.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename

WHEEL_CACHE = Path(__file__).resolve().parent.parent / ".cache" / "test-wheels"
NUMPY_VERSION = "2.2.6"


def build_wheel(directory: Path, name: str, version: str, modules: dict[str, str]) -> Path:
    """A pure-Python wheel of ``modules`` (path in the wheel -> source) in ``directory``."""
    dist_info = f"{name}-{version}.dist-info"
    files = {
        **modules,
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist_info}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: compound-tests\nRoot-Is-Purelib: true\n"
            "Tag: py3-none-any\n"
        ),
    }
    record = [
        f"{path},sha256={_digest(text.encode())},{len(text.encode())}"
        for path, text in files.items()
    ]
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = "\n".join(record) + "\n"
    path = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for member, text in files.items():
            wheel.writestr(member, text)
    return path


def build_bomb_wheel(directory: Path, name: str, files: int, file_bytes: int) -> Path:
    """A wheel of a few MB whose ``files`` members of zeros unpack to ``file_bytes`` each; its
    central directory tells the truth (a lying one is no harder for the agent)."""
    path = build_wheel(directory, name, "1.0", {f"{name}/__init__.py": ""})
    zeros = bytes(1024 * 1024)
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as wheel:
        for number in range(files):
            with wheel.open(f"{name}/zeros-{number}.bin", "w", force_zip64=True) as member:
                for _ in range(file_bytes // len(zeros)):
                    member.write(zeros)
    return path


def build_sdist(directory: Path, name: str, version: str) -> Path:
    """A source distribution only: a binary-only installer must refuse it."""
    import io
    import tarfile

    path = directory / f"{name}-{version}.tar.gz"
    setup = b"raise SystemExit('package code ran on the contributor')\n"
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo(f"{name}-{version}/setup.py")
        info.size = len(setup)
        archive.addfile(info, io.BytesIO(setup))
    return path


def numpy_wheel() -> Path:
    """numpy's manylinux cp311 wheel, downloaded from PyPI on the first run only."""
    found = sorted(WHEEL_CACHE.glob(f"numpy-{NUMPY_VERSION}-cp311-*manylinux*x86_64*.whl"))
    if found:
        return found[0]
    WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            f"numpy=={NUMPY_VERSION}",
            "--only-binary",
            ":all:",
            "--python-version",
            "3.11",
            "--platform",
            "manylinux2014_x86_64",
            "--no-deps",
            "--quiet",
            "-d",
            str(WHEEL_CACHE),
        ],
        check=True,
        timeout=300,
    )
    return sorted(WHEEL_CACHE.glob(f"numpy-{NUMPY_VERSION}-cp311-*.whl"))[0]


class PackageIndex:
    """PEP 503 simple index of ``files`` on 127.0.0.1, in a thread; counts its requests.

    ``stall_s``: every answer waits this long first (a slow index), or until ``stop()``."""

    def __init__(self, files: list[Path], stall_s: float = 0.0) -> None:
        self.files = {path.name: path for path in files}
        self._hashes = {path.name: _hex(path) for path in files}
        self.requests = 0
        self._stall_s = stall_s
        self._stopped = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/simple"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def __enter__(self) -> PackageIndex:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop answering: the port refuses connections from now on."""
        self._stopped.set()  # stalled answers go now: closing waits for their threads
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def _projects(self) -> dict[str, list[str]]:
        projects: dict[str, list[str]] = {}
        for filename in self.files:
            if filename.endswith(".whl"):
                name = parse_wheel_filename(filename)[0]
            else:
                name = parse_sdist_filename(filename)[0]
            projects.setdefault(canonicalize_name(name), []).append(filename)
        return projects

    def _page(self, path: str) -> tuple[int, str, bytes]:
        parts = [part for part in path.split("?")[0].split("/") if part]
        if parts[:1] == ["files"] and len(parts) == 2 and parts[1] in self.files:
            return 200, "application/octet-stream", self.files[parts[1]].read_bytes()
        projects = self._projects()
        if parts == ["simple"]:
            links = "".join(f'<a href="/simple/{n}/">{n}</a>' for n in projects)
            return 200, "text/html", f"<html><body>{links}</body></html>".encode()
        if len(parts) == 2 and parts[0] == "simple" and parts[1] in projects:
            links = "".join(
                f'<a href="/files/{html.escape(f)}#sha256={self._hashes[f]}">{html.escape(f)}</a>'
                for f in projects[parts[1]]
            )
            return 200, "text/html", f"<html><body>{links}</body></html>".encode()
        return 404, "text/plain", b"not found"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        index = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer(with_body=True)

            def do_HEAD(self) -> None:
                self._answer(with_body=False)

            def _answer(self, with_body: bool) -> None:
                index.requests += 1
                if index._stall_s:
                    index._stopped.wait(index._stall_s)
                status, kind, body = index._page(self.path)
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if with_body:
                    # uv drops a download once it has what it needs (a wheel's metadata).
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        return Handler


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _hex(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
