"""Compound Compute: run Python scripts on other people's spare machines.

``compound.Client`` and ``compound.AsyncClient`` (see compound.client) are loaded on first
use: the CLI imports this package, and its start-up time is measured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from compound.client import AsyncClient, Client

__version__ = "0.1.0"
__all__ = ["AsyncClient", "Client", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Client", "AsyncClient"):
        import compound.client

        return getattr(compound.client, name)
    raise AttributeError(f"module 'compound' has no attribute {name!r}")
