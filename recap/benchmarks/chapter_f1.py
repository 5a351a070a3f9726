"""Chapter boundary F1 (±collar) of recap's split against a fixed-window baseline, on synthetic
multi-topic transcripts with known boundaries (tests/synthetic.py: one stdlib module's
documentation per topic, speech-like timing, pauses placed at random).

    PYTHONPATH=recap python recap/benchmarks/chapter_f1.py [--seeds 5] [--long-seeds 2]

Methods get the true chapter count ("oracle k") and, separately, the count recap would choose
from the length ("auto k"). F1 is computed by tests/synthetic.boundary_f1 and cross-checked
against chunkseg's collar_boundary_f1 when chunkseg is installed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent))

from recap.chapters import build_recap, chapter_count_for  # noqa: E402
from recap.clean import clean_segments  # noqa: E402
from recap.embed import minilm_available  # noqa: E402
from synthetic import boundary_f1, synthetic_transcript, topic_texts  # noqa: E402

COLLARS = (3, 15, 30, 60)


def fixed_windows(duration: float, count: int) -> list[float]:
    return [duration * index / count for index in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--long-seeds", type=int, default=2)
    args = parser.parse_args()
    try:
        from chunkseg.metrics import collar_boundary_f1
    except ImportError:
        collar_boundary_f1 = None
    texts = topic_texts(min_words=400)
    sets = [("short: 6 topics, 300-900 words each (12-36 min), punctuated", 6, (300, 900), False, args.seeds),
            ("long: 30 topics, 500-1500 words each (~3 h), auto-caption style", 30, (500, 1500), True, args.long_seeds)]
    methods = ["fixed windows"] + (["recap minilm"] if minilm_available() else []) + ["recap tfidf"]
    for label, topics, words, caption_style, seeds in sets:
        scores: dict[tuple[str, str, int], list[float]] = {}
        seconds: dict[str, list[float]] = {}
        for seed in range(seeds):
            segments, truth, _ = synthetic_transcript(topics, seed=seed, words_per_topic=words,
                                                      caption_style=caption_style, texts=texts)
            segments = clean_segments(segments)
            duration = segments[-1].end
            words_total = sum(len(segment.text.split()) for segment in segments)
            for k_label, count in (("oracle k", topics), ("auto k", chapter_count_for(duration, words_total))):
                for method in methods:
                    started = time.perf_counter()
                    if method == "fixed windows":
                        found = fixed_windows(duration, count)
                    else:
                        recap = build_recap(segments, chapters=count, embedder=method.split()[1])
                        found = [chapter.start for chapter in recap.chapters]
                    seconds.setdefault(method, []).append(time.perf_counter() - started)
                    for collar in COLLARS:
                        score = boundary_f1(found, truth, collar=collar)
                        if collar_boundary_f1 is not None:
                            reference = collar_boundary_f1([t for t in truth if t > 0], [t for t in found if t > 0], collar)
                            assert abs(reference["collar_f1"] - score) < 1e-9, (score, reference)
                        scores.setdefault((k_label, method, collar), []).append(score)
        print(f"\n### {label}; {seeds} transcripts\n")
        print("| chapter count | method | " + " | ".join(f"F1 ±{c} s" for c in COLLARS) + " |")
        print("|---|---|" + "---|" * len(COLLARS))
        for k_label in ("oracle k", "auto k"):
            for method in methods:
                row = [statistics.mean(scores[(k_label, method, c)]) for c in COLLARS]
                print(f"| {k_label} | {method} | " + " | ".join(f"{value:.2f}" for value in row) + " |")
        print("\nmedian seconds per transcript: " + ", ".join(
            f"{method} {statistics.median(values):.2f}" for method, values in seconds.items()))
    print(f"\nF1 cross-checked against chunkseg: {'yes' if collar_boundary_f1 else 'no (chunkseg not installed)'}")


if __name__ == "__main__":
    main()
