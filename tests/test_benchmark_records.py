"""benchmarks/run_records.py: the JSON-lines reader and the median over known values that the
benchmark scripts share (config_steps_ab.py, dist_bench.py, fused_bench.py, train_bench.py)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
    "run_records", os.path.join(REPO, "benchmarks", "run_records.py"))
run_records = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_records)


def test_read_jsonl_skips_blank_lines_and_names_a_missing_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"agent_steps": 8, "score100": null}\n\n'
                    '{"agent_steps": 16, "score100": 0.5}\n')
    assert run_records.read_jsonl(str(path)) == [{"agent_steps": 8, "score100": None},
                                                 {"agent_steps": 16, "score100": 0.5}]
    missing = str(tmp_path / "none.jsonl")
    with pytest.raises(FileNotFoundError):
        run_records.read_jsonl(missing)
    assert run_records.read_jsonl(missing, missing_ok=True) == []


def test_median_known_leaves_out_missing_values():
    assert run_records.median_known([3.0, None, 1.0, 2.0]) == 2.0
    assert run_records.median_known([None, 4.0, 1.0]) == 2.5
    assert run_records.median_known([None, None]) is None
    assert run_records.median_known([]) is None


def test_the_scripts_that_share_it_import_it():
    # as `python benchmarks/NAME.py` runs them: the benchmarks folder first on the path
    code = ("import config_steps_ab, dist_bench, fused_bench, run_records, train_bench\n"
            "assert config_steps_ab.read_jsonl is dist_bench.read_jsonl is run_records.read_jsonl\n"
            "assert fused_bench.read_jsonl is run_records.read_jsonl\n"
            "assert fused_bench.median_known is train_bench.median_known is "
            "run_records.median_known\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=os.path.join(REPO, "benchmarks"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
