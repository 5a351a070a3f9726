"""Loads an env class from tests/support/ (a folder of files, not a package) for a benchmark."""

from __future__ import annotations

import importlib.util
import os

SUPPORT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "support")


def support_class(filename: str, name: str) -> type:
    """The class ``name`` defined in tests/support/``filename``."""
    path = os.path.join(SUPPORT, filename)
    spec = importlib.util.spec_from_file_location(os.path.splitext(filename)[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)
