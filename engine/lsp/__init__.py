"""`baton lsp`: editor support over the Language Server Protocol (`server`), from the checker's own answers (`features`, `index`).

Only `server` imports pygls (the `baton[lsp]` extra).
"""

from __future__ import annotations

import importlib.util


def lsp_missing() -> str | None:
    """Why the language server cannot start here, or None when the extra is installed."""
    if importlib.util.find_spec("pygls") is None:
        return "the language server needs the lsp extra: pip install 'baton[lsp]'"
    return None
