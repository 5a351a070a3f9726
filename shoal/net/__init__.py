"""shoal's policies in C: ``shoal_net.h`` (one dependency-free header for forward inference),
its Python binding, and the exporter that writes a torch policy's weights for it.

* :func:`shoal.net.export.export_policy` / :func:`~shoal.net.export.export_checkpoint`: the flat
  weight blob (layout: docs/net.md).
* :class:`shoal.net.runtime.CPolicy`: the C policy on numpy batches (GIL released).
* :func:`header_path`: where ``shoal_net.h`` is, to compile it into your own program.
"""

from __future__ import annotations

import os

__all__ = ["header_path"]


def header_path() -> str:
    """Absolute path of ``shoal_net.h`` (plain C99; include it in a C program or WebAssembly
    build to run an exported policy)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "shoal_net.h")
