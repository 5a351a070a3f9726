"""A 6-hour caption file (~60k words, YouTube json3) to a finished YouTube description, end to end
through the command line, with the embedded default (bundled MiniLM) and, as the baseline in the
same run, the numpy-only TF-IDF fallback. Runs alternate; medians are reported.

    PYTHONPATH=recap python recap/benchmarks/six_hours.py [--runs 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent))

from recap.describe import youtube_chapter_problems  # noqa: E402
from synthetic import synthetic_transcript, to_json3  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    segments, truth, _ = synthetic_transcript(64, seed=0, words_per_topic=(700, 1300), caption_style=True)
    segments = [segment for segment in segments if segment.start < 6 * 3600]
    words = sum(len(segment.text.split()) for segment in segments)
    with tempfile.TemporaryDirectory() as folder:
        captions = Path(folder) / "six_hours.json3"
        captions.write_text(to_json3(segments))
        print(f"input: {segments[-1].end / 3600:.2f} h, {words} words, {len(segments)} caption events, "
              f"{captions.stat().st_size / 1e6:.1f} MB json3")
        environment = dict(os.environ, RECAP_HOME=str(Path(folder) / "home"))
        times: dict[str, list[float]] = {"auto": [], "tfidf": []}
        cpu: dict[str, list[float]] = {"auto": [], "tfidf": []}
        outputs = {}
        for _ in range(args.runs):
            for embedder in ("auto", "tfidf"):
                out = Path(folder) / f"{embedder}.txt"
                started = time.perf_counter()
                used = resource.getrusage(resource.RUSAGE_CHILDREN)
                subprocess.run([sys.executable, "-m", "recap", str(captions), "-o", str(out), "--embedder", embedder],
                               check=True, env=environment)
                times[embedder].append(time.perf_counter() - started)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu[embedder].append(after.ru_utime + after.ru_stime - used.ru_utime - used.ru_stime)
                outputs[embedder] = out.read_text()
        for embedder, values in times.items():
            description = outputs[embedder]
            problems = youtube_chapter_problems(description, segments[-1].end)
            print(f"{embedder:>5}: median {statistics.median(values):.1f} s wall, "
                  f"{statistics.median(cpu[embedder]):.1f} s CPU over {len(values)} runs "
                  f"({', '.join(f'{v:.1f}' for v in values)}); {len(description.encode())} bytes; "
                  f"{sum(1 for line in description.splitlines() if line[:1].isdigit())} chapters; "
                  f"YouTube rules: {'met' if not problems else problems}")
        print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}, CPUs: {os.cpu_count()}")
        print(f"embedded default / tfidf baseline: {statistics.median(times['auto']) / statistics.median(times['tfidf']):.2f}x")
        print("\n--- description (embedded default) ---\n" + outputs["auto"])


if __name__ == "__main__":
    main()
