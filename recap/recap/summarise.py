"""Titles and summaries from a language model, map-reduce so that no call exceeds the context.

The model sees numbered transcript lines (``[412] so now the build works``) and answers in JSON,
naming lines by their numbers; code maps numbers to times, so a model never writes a timestamp.

For each chapter (boundaries come from :mod:`recap.chapters`):

* if its numbered lines fit the prompt budget, one call gives ``{"title", "summary", "start_id"}``;
* otherwise the lines are cut into windows that fit, each window is condensed into notes (map),
  and the notes, labelled with their time ranges, are condensed again until they fit one call
  that gives the title and summary (reduce).

``start_id`` may move a chapter's start to where the model saw the topic begin, but only to a
line within the first lines the model was shown, and only when the chapter rules (ascending,
at least ``min_seconds`` apart) still hold. The overall summary is a reduce over the chapter
summaries. The prompt budget is ``context_tokens - answer_tokens`` minus a margin, counted with the
model's own :meth:`ChatModel.count_tokens`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

from recap.chapters import Chapter
from recap.transcript import Segment


@runtime_checkable
class ChatModel(Protocol):
    """What recap needs from a language model (``recap.llm.LLMClient`` provides it). A model that
    also has ``complete_json(messages, max_tokens, schema)``, as ``LLMClient`` does, gets
    schema-constrained, validated answers through it."""

    def complete(self, messages: list[dict[str, str]], max_tokens: int) -> str:
        """The assistant's reply to chat ``messages`` (OpenAI roles), at most ``max_tokens`` long."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes in the model's context."""
        ...


class SummaryError(RuntimeError):
    """The model could not be used within the limits (for example a context too small for even
    one transcript line); the message says which limit to change."""


@dataclass
class LLMSettings:
    """Limits for the calls: the model's context, the tokens kept for each answer, and a margin for
    the chat template's own tokens."""

    context_tokens: int = 8192
    answer_tokens: int = 400
    template_margin: int = 64
    min_seconds: float = 10.0
    summary_chars: int = 300

    @property
    def prompt_budget(self) -> int:
        return self.context_tokens - self.answer_tokens - self.template_margin


SYSTEM = (
    "You summarise transcripts of live streams and videos. Transcript lines are numbered like "
    "[12]. Refer to lines only by those numbers. Never write timestamps. Answer with one JSON "
    "object and nothing else."
)


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    total = int(seconds)
    return f"{total // 3600}:{total // 60 % 60:02d}:{total % 60:02d}"


def parse_json_answer(text: str) -> dict:
    """The first JSON object in a model's answer (code fences and chatter around it ignored)."""
    # The JSON decoder itself finds where an object ends, braces inside strings included.
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            pass
        else:
            if isinstance(value, dict):
                return value
        start = text.find("{", start + 1)
    raise ValueError("no JSON object in the answer")


class _Caller:
    """Sends prompts, checking each stays within budget, and parses JSON answers (one retry)."""

    def __init__(self, model: ChatModel, settings: LLMSettings):
        self.model = model
        self.settings = settings
        self.calls = 0
        self.largest_prompt = 0

    def tokens(self, text: str) -> int:
        return self.model.count_tokens(text)

    def ask(self, instruction: str, body: str, schema: dict) -> dict:
        prompt = f"{instruction}\n\n{body}"
        size = self.tokens(SYSTEM) + self.tokens(prompt)
        if size > self.settings.prompt_budget:
            raise SummaryError(f"internal: a {size}-token prompt exceeds the {self.settings.prompt_budget}-token budget")
        self.largest_prompt = max(self.largest_prompt, size)
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
        complete_json = getattr(self.model, "complete_json", None)
        if complete_json is not None:
            # The client constrains the answer to the schema where the server can, validates it
            # and retries once; an answer still malformed leaves the extractive text in place.
            from recap.llm import RecapLLMAnswerError

            self.calls += 1
            try:
                value = complete_json(messages, self.settings.answer_tokens, schema)
            except RecapLLMAnswerError:
                return {}
            return value if isinstance(value, dict) else {}
        for attempt in range(2):
            self.calls += 1
            answer = self.model.complete(messages, self.settings.answer_tokens)
            try:
                return parse_json_answer(answer)
            except ValueError:
                if attempt == 0:
                    messages = messages + [
                        {"role": "assistant", "content": answer[:2000]},
                        {"role": "user", "content": "That was not a JSON object. Answer again with the JSON object only."},
                    ]
        return {}


def _object_schema(**properties: dict) -> dict:
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


_TEXT = {"type": "string"}
_NOTES_SCHEMA = _object_schema(notes=_TEXT)
_CHAPTER_SCHEMA = _object_schema(title=_TEXT, summary=_TEXT, start_id={"type": "integer"})
_TITLE_SCHEMA = _object_schema(title=_TEXT, summary=_TEXT)
_SUMMARY_SCHEMA = _object_schema(summary=_TEXT)


def _numbered(segments: Sequence[Segment], first: int, stop: int) -> list[str]:
    return [f"[{index}] {segments[index].text}" for index in range(first, stop)]


def _windows(lines: list[str], budget: int, tokens) -> list[list[str]]:
    """Consecutive lines grouped so that each group's tokens stay within ``budget``."""
    groups: list[list[str]] = [[]]
    used = 0
    for line in lines:
        size = tokens(line) + 1
        if size > budget:
            raise SummaryError(
                f"one transcript line needs {size} tokens but a prompt has room for {budget}; "
                "raise --context (the model's context size)")
        if used + size > budget and groups[-1]:
            groups.append([])
            used = 0
        groups[-1].append(line)
        used += size
    return [group for group in groups if group]


_MAP = ("Condense these transcript lines into notes: what is done or discussed, names, results. "
        'Answer {"notes": "<at most 80 words>"}.')
_CHAPTER = ("Write a title (at most 8 words, no timestamp) and a summary (1-2 sentences) of this part "
            "of the stream. If the part's topic clearly begins at a later line than the first, give that "
            'line\'s number as start_id, else the first line\'s number. Answer '
            '{"title": "...", "summary": "...", "start_id": <number>}.')
_CHAPTER_FROM_NOTES = ("These are notes on consecutive stretches of one part of a stream. Write a title "
                       "(at most 8 words, no timestamp) and a summary (1-2 sentences) of the part. Answer "
                       '{"title": "...", "summary": "..."}.')
_REDUCE_NOTES = ('Merge these notes on consecutive stretches into one set of notes. Answer {"notes": "<at most 80 words>"}.')
_OVERALL = ("These are the parts of one stream, in order, with their summaries. Write a short overall "
            'summary of what happened (2-4 sentences). Answer {"summary": "..."}.')


def _reduce_to_fit(caller: _Caller, items: list[str], instruction: str, header: str) -> list[str]:
    """Merge ``items`` (notes) in order, window by window, until they fit one prompt."""
    budget = caller.settings.prompt_budget - caller.tokens(SYSTEM) - caller.tokens(instruction) - caller.tokens(header) - 8
    while sum(caller.tokens(item) + 1 for item in items) > budget:
        reduce_room = caller.settings.prompt_budget - caller.tokens(SYSTEM) - caller.tokens(_REDUCE_NOTES) - 8
        groups = _windows(items, reduce_room, caller.tokens)
        if len(groups) == len(items):
            # No two items fit together: shorten each instead of looping forever.
            raise SummaryError("notes do not fit the context even two at a time; raise --context")
        items = [str(caller.ask(_REDUCE_NOTES, "\n".join(group), _NOTES_SCHEMA).get("notes", " ".join(group)[:600])) for group in groups]
    return items


def summarise_with_llm(
    model: ChatModel,
    segments: Sequence[Segment],
    chapters: list[Chapter],
    *,
    title: str = "",
    settings: LLMSettings | None = None,
) -> str:
    """Give every chapter a title and summary from ``model`` and return the overall summary.

    Chapters keep their extractive title/summary where the model's answer lacks one (an answer
    that is not JSON twice in a row counts as lacking). No prompt exceeds
    ``settings.prompt_budget`` tokens by the model's own count."""
    settings = settings or LLMSettings()
    caller = _Caller(model, settings)
    context = f"Stream title: {title}\n" if title else ""
    previous_title = ""
    for number, chapter in enumerate(chapters):
        header = context + (f"Previous part: {previous_title}\n" if previous_title else "") + "Transcript lines:"
        lines = _numbered(segments, chapter.first, chapter.stop)
        room = settings.prompt_budget - caller.tokens(SYSTEM) - caller.tokens(_CHAPTER) - caller.tokens(header) - 8
        if sum(caller.tokens(line) + 1 for line in lines) <= room:
            answer = caller.ask(_CHAPTER, header + "\n" + "\n".join(lines), _CHAPTER_SCHEMA)
            _move_start(chapters, number, answer.get("start_id"), segments, shown=len(lines), settings=settings)
        else:
            map_room = settings.prompt_budget - caller.tokens(SYSTEM) - caller.tokens(_MAP) - 8
            notes = []
            for window in _windows(lines, map_room, caller.tokens):
                first_id, last_id = (int(re.match(r"\[(\d+)\]", window[index]).group(1)) for index in (0, -1))
                answer = caller.ask(_MAP, "\n".join(window), _NOTES_SCHEMA)
                span = f"({_clock(segments[first_id].start)}-{_clock(segments[last_id].end)})"
                notes.append(f"{span} {answer.get('notes', '')}".strip())
            notes = _reduce_to_fit(caller, notes, _CHAPTER_FROM_NOTES, header)
            answer = caller.ask(_CHAPTER_FROM_NOTES, header.replace("Transcript lines:", "Notes:") + "\n" + "\n".join(notes), _TITLE_SCHEMA)
        if isinstance(answer.get("title"), str) and answer["title"].strip():
            chapter.title = " ".join(answer["title"].split())[:80]
        if isinstance(answer.get("summary"), str) and answer["summary"].strip():
            chapter.summary = " ".join(answer["summary"].split())[: settings.summary_chars]
        previous_title = chapter.title
    parts = [f"Part {number + 1}: {chapter.title}. {chapter.summary}" for number, chapter in enumerate(chapters)]
    parts = _reduce_to_fit(caller, parts, _OVERALL, context)
    answer = caller.ask(_OVERALL, context + "\n".join(parts), _SUMMARY_SCHEMA)
    summary = answer.get("summary")
    return " ".join(summary.split()) if isinstance(summary, str) else ""


def _move_start(chapters: list[Chapter], number: int, start_id: object, segments: Sequence[Segment],
                *, shown: int, settings: LLMSettings) -> None:
    """Accept the model's ``start_id`` for chapter ``number`` when it names one of the first lines
    shown (a quarter of them at most), keeps starts ascending and every chapter ``min_seconds`` long."""
    if number == 0 or not isinstance(start_id, int) or isinstance(start_id, bool):
        return
    chapter, before = chapters[number], chapters[number - 1]
    limit = chapter.first + max(1, shown // 4)
    if not (chapter.first < start_id < min(limit, chapter.stop)) or segments[start_id].start is None:
        return
    new_start = float(math.floor(segments[start_id].start))
    following = chapters[number + 1].start if number + 1 < len(chapters) else chapter.end
    if new_start - (before.start or 0.0) < settings.min_seconds:
        return
    if following is not None and following - new_start < settings.min_seconds:
        return
    before.stop = start_id
    before.end = new_start
    chapter.first = start_id
    chapter.start = new_start
