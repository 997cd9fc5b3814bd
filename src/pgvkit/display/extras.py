"""Optional parts: the notebooks' packages (the lab extra) are imported only where they are used,
and a missing one is one line naming the extra, not a traceback."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import MissingExtra

__all__ = ["need"]


def need(module: str, what: str, extra: str = "lab") -> ModuleType:
    """Import `module` for `what` (e.g. "pgvkit run"), or raise MissingExtra naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(what, module.split(".")[0], extra) from None
