"""shoal plot: learning curves of real runs, overlaid; the image opens; bad run dirs are errors."""

from __future__ import annotations

import json

import pytest

from shoal.tools import plot

pytest.importorskip("matplotlib", reason="plots need matplotlib (pip install 'shoal[tools]')")


def _run(path, epochs: int, score0: float) -> str:
    path.mkdir()
    with open(path / "metrics.jsonl", "w") as fh:
        for e in range(1, epochs + 1):
            fh.write(json.dumps({
                "epoch": e, "agent_steps": 1024 * e, "elapsed": 0.5 * e, "sps": 2000 + e,
                "score100": score0 + e, "episodes": {"episode_return": score0 + e, "n": 3},
                "losses": {"value": 1.0 / e, "policy": -0.01, "entropy": 1.0 - 0.01 * e,
                           "approx_kl": 0.001}}) + "\n")
        fh.write('{"epoch": 99, "agent_st')           # a run killed mid-write
    return str(path)


def test_runs_overlaid_into_one_image_that_opens(tmp_path):
    from PIL import Image

    a, b = _run(tmp_path / "a", 12, 0.0), _run(tmp_path / "b", 7, 3.0)
    assert len(plot.read_metrics(a)) == 12                 # the partial last line is dropped
    out = plot.plot_runs([a, b], str(tmp_path / "curves.png"), title="two runs")
    with Image.open(out) as image:
        image.load()
        assert image.format == "PNG" and image.size == (1040, 720)
        assert len(image.getcolors(1 << 16) or ()) > 20   # drawn, not blank
    assert plot.main([a, "-o", str(tmp_path / "c.svg")]) == 0
    assert (tmp_path / "c.svg").read_text().lstrip().startswith("<?xml")


def test_curves_of_a_real_training_run(tmp_path):
    from shoal.trainer.cli import main as train_main

    run = str(tmp_path / "run")
    assert train_main(["breakout", "--train.total-steps", "3072", "--env.num-envs", "16",
                       "--train.minibatch-size", "512", "--log.dashboard", "off",
                       "--run-dir", run]) == 0
    assert plot.main([run]) == 0
    assert (tmp_path / "run" / "curves.png").stat().st_size > 10_000


def test_bad_run_directories_are_clear_errors(tmp_path, capsys):
    assert plot.main([str(tmp_path / "missing")]) == 2
    assert "metrics.jsonl does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.jsonl").write_text("")
    assert plot.main([str(tmp_path / "empty")]) == 2
    assert "holds no epochs yet" in capsys.readouterr().err
    a = _run(tmp_path / "a", 2, 0.0)
    assert plot.main([a, "--labels", "x,y"]) == 2
    assert "2 labels for 1 runs" in capsys.readouterr().err
