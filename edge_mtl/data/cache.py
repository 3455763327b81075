"""Where rendered synthetic data lives: one folder per user, whatever the working directory, so
``train``, ``eval`` and ``compare`` started anywhere reuse the same scenes. Standard library only
(the command-line parsers show the path in ``--help``)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "EDGE_MTL_CACHE"
# How the default is chosen, for --help texts.
CACHE_RULE = f"${CACHE_ENV}, else $XDG_CACHE_HOME/edge-mtl, else ~/.cache/edge-mtl"


def default_data_root() -> Path:
    """The synthetic-data cache: ``$EDGE_MTL_CACHE`` if set, else ``$XDG_CACHE_HOME/edge-mtl``
    (an absolute XDG path only, as the XDG spec asks), else ``~/.cache/edge-mtl``; always an
    absolute path, so it does not move with the working directory."""
    own = os.environ.get(CACHE_ENV)
    if own:
        return Path(own).expanduser().absolute()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "edge-mtl"


def data_root_help() -> str:
    """The ``--data-root`` help text, with the folder the default resolves to here."""
    text = (
        f"where synthetic data is rendered once and reused (default {default_data_root()}: "
        f"{CACHE_RULE}); delete that folder to clear the cache"
    )
    return text.replace("%", "%%")  # argparse formats help texts with %
