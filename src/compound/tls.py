"""TLS for Compound: the contexts each side uses, and a sentence for every certificate problem.

Clients (the CLI, the agent, the desktop app) trust the system's certificate store plus, when
given, one more CA file: a coordinator with a private CA or a self-signed certificate is
reached by passing ``--ca-file`` or setting ``COMPOUND_CA_FILE``. The coordinator serves with
its certificate and key (``--tls-cert``, ``--tls-key``).
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any

CA_FILE_ENV = "COMPOUND_CA_FILE"
TRUST_HINT = f"pass --ca-file or set {CA_FILE_ENV}"


class TlsConfigError(Exception):
    """A certificate, key or CA file cannot be used; ``str(exc)`` is one sentence."""


def default_ca_file() -> str | None:
    """The extra CA file named by ``COMPOUND_CA_FILE``, if any."""
    return os.environ.get(CA_FILE_ENV) or None


def client_ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """A context that verifies the coordinator against the system store and ``ca_file``.

    Host names and expiry are checked. Raises TlsConfigError when ``ca_file`` cannot be read
    or holds no certificate.
    """
    context = ssl.create_default_context()  # the system store, host name checks on
    if ca_file:
        try:
            context.load_verify_locations(cafile=ca_file)
        except ssl.SSLError:  # an OSError too: caught first
            raise TlsConfigError(f"the CA file {ca_file} holds no PEM certificate") from None
        except OSError as exc:
            raise TlsConfigError(f"cannot read the CA file {ca_file} ({exc.strerror})") from None
    return context


def ssl_context_for(url: str, ca_file: str | None) -> ssl.SSLContext | None:
    """``client_ssl_context(ca_file)`` for an https:// or wss:// URL; None for plain ones.

    Building a context costs ~0.1 s of start-up, so the CLI builds one only when it is used.
    """
    if url.startswith(("https://", "wss://")):
        return client_ssl_context(ca_file)
    return None


def websocket_ssl_options(context: ssl.SSLContext | None) -> dict[str, Any]:
    """Keyword arguments for websockets' ``connect``: ``ssl`` only when there is a context.

    websockets refuses an ``ssl`` argument for ws:// URLs and ``ssl=None`` for wss:// ones.
    """
    return {} if context is None else {"ssl": context}


def server_ssl_context(cert_file: Path, key_file: Path | None) -> ssl.SSLContext:
    """The coordinator's context: its certificate chain and key, TLS 1.2 or later.

    ``key_file`` None means the key is in ``cert_file``. Raises TlsConfigError with one
    sentence when a file is unreadable, not PEM, or the key does not match the certificate.
    """
    for path in (cert_file, key_file):
        if path is not None:
            _check_readable(path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:  # an OSError too: caught first
        raise TlsConfigError(_server_problem(exc, cert_file, key_file)) from None
    except OSError as exc:  # gone between the check above and now
        raise TlsConfigError(f"cannot read {cert_file} or {key_file}: {exc.strerror}") from None
    return context


def _check_readable(path: Path) -> None:
    try:
        with path.open("rb") as file:
            file.read(1)
    except OSError as exc:
        raise TlsConfigError(f"cannot read {path}: {exc.strerror or exc}") from None


def _server_problem(exc: ssl.SSLError, cert_file: Path, key_file: Path | None) -> str:
    if exc.reason == "KEY_VALUES_MISMATCH":
        return f"the key {key_file or cert_file} does not belong to the certificate {cert_file}"
    if key_file is None:
        return (
            f"found no PEM certificate and unencrypted key in {cert_file}: pass the key "
            "with --tls-key FILE if it is in a file of its own"
        )
    return (
        f"cannot load the certificate {cert_file} with the key {key_file}: both must be PEM "
        "and the key unencrypted"
    )


def certificate_problem(exc: BaseException) -> str | None:
    """One sentence when ``exc`` (or an exception it wraps) is a failed certificate check.

    httpx and websockets wrap or pass on ``ssl.SSLCertVerificationError``; both are covered
    by walking the chain of causes. None for every other error.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return _describe(current)
        current = current.__cause__ or current.__context__
    return None


def _describe(error: ssl.SSLCertVerificationError) -> str:
    message = error.verify_message or str(error)
    fix = _FIXES.get(error.verify_code, f"{TRUST_HINT} to trust the CA that signed it")
    return f"the coordinator's certificate was refused ({message}): {fix}"


# OpenSSL's X509_V_ERR_* codes whose fix is not "trust its CA".
_FIXES = {
    9: "check this machine's clock, or wait until the certificate is valid",  # not yet valid
    10: "the coordinator needs a renewed certificate",  # expired
    62: "connect with a host name the certificate names",  # host name mismatch
    64: "connect with an address the certificate names",  # IP address mismatch
}
