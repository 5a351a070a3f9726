"""Synthetic multi-topic speech with known topic boundaries, made with espeak-ng and sox.

Each topic is a block of sentences spoken by espeak-ng; blocks are joined with silent pauses by
sox, and the time each block's speech starts is recorded from the sample counts (exact).
"""

from __future__ import annotations

import shutil
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

# Topics with the words each must yield in the transcript. Plain words espeak-ng pronounces
# clearly; the sentences are long enough for Whisper's language model to settle on them.
TOPICS: list[tuple[str, tuple[str, ...]]] = [
    (
        "The weather today is sunny and warm. Tomorrow there will be heavy rain in the city.",
        ("weather", "sunny", "rain"),
    ),
    (
        "Now let us talk about cooking. Boil the pasta in salted water and add tomato sauce.",
        ("cooking", "pasta", "tomato"),
    ),
    (
        "Finally, the football match last night ended with a late goal for the home team.",
        # not "night": the base model hears "last night ended" or "last i tended" from run to
        # run (one CI run of 2026-12-05), a near tie its int8 CPU kernels can tip either way
        ("match", "goal", "late"),
    ),
]


@dataclass(frozen=True)
class Recording:
    path: Path
    duration: float
    # (start of the block's speech, end of its speech) in seconds, per topic.
    blocks: list[tuple[float, float]]
    keywords: list[tuple[str, ...]]


def tools_missing() -> list[str]:
    return [t for t in ("espeak-ng", "sox") if shutil.which(t) is None]


def _duration(path: Path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


def make_recording(folder: Path, pause: float = 4.0, lead_in: float = 1.0, repeat: int = 1) -> Recording:
    """Speak ``TOPICS`` (each ``repeat`` times over) into one 16 kHz mono WAV with ``pause``
    seconds of silence between topic blocks and ``lead_in`` seconds before the first."""
    folder.mkdir(parents=True, exist_ok=True)
    parts: list[Path] = []
    blocks: list[tuple[float, float]] = []
    t = 0.0
    for i, (text, _) in enumerate(TOPICS):
        raw = folder / f"topic{i}_raw.wav"
        subprocess.run(
            ["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), " ".join([text] * repeat)],
            check=True,
            capture_output=True,
        )
        block = folder / f"topic{i}.wav"
        before = lead_in if i == 0 else pause
        # Resample to 16 kHz mono (Whisper's rate) and put the silence before the speech.
        subprocess.run(
            ["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(block), "pad", f"{before}", "0"],
            check=True,
            capture_output=True,
        )
        speech = _duration(block) - before
        blocks.append((t + before, t + before + speech))
        t += _duration(block)
        parts.append(block)
    out = folder / "topics.wav"
    subprocess.run(["sox", *map(str, parts), str(out)], check=True, capture_output=True)
    return Recording(out, _duration(out), blocks, [k for _, k in TOPICS])


def speak_pieces(
    folder: Path, pieces: list[tuple[str, float]], *, speed: int = 160, name: str = "speech"
) -> tuple[Path, float, list[float]]:
    """Speak each ``(text, seconds of silence before it)`` piece with espeak-ng and join them
    into one 16 kHz mono WAV. Returns (path, duration, time each piece's audio starts after its
    silence), exact from the sample counts. A piece with 0 s before it follows the previous one
    directly (only espeak-ng's own short edge silence between them)."""
    folder.mkdir(parents=True, exist_ok=True)
    parts: list[Path] = []
    starts: list[float] = []
    clock = 0.0
    for index, (text, before) in enumerate(pieces):
        raw = folder / f"{name}{index}_raw.wav"
        # The text goes through a file: as an argument, a piece starting with "-" reads as an option.
        source = folder / f"{name}{index}.txt"
        source.write_text(text, encoding="utf-8")
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", str(speed), "-w", str(raw), "-f", str(source)],
                       check=True, capture_output=True)
        part = folder / f"{name}{index}.wav"
        subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(part), "pad", f"{before}", "0"],
                       check=True, capture_output=True)
        starts.append(clock + before)
        clock += _duration(part)
        parts.append(part)
    out = folder / f"{name}.wav"
    subprocess.run(["sox", *map(str, parts), str(out)], check=True, capture_output=True)
    return out, _duration(out), starts
