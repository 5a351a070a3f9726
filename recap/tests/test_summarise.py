"""The language-model orchestration against recap's own ChatModel interface, with a deterministic
model: it counts one token per word and answers from what it is shown."""

import json
import re
from collections import Counter

import pytest

from recap.chapters import Chapter
from recap.summarise import ChatModel, LLMSettings, SummaryError, parse_json_answer, summarise_with_llm
from recap.transcript import Segment


class WordCountingModel:
    """Answers like a well-behaved model: the commonest long word of the lines shown becomes the
    title; ``start_id`` is the first line mentioning ``begins``. ``garbled`` answers are not JSON."""

    def __init__(self, garbled: int = 0):
        self.prompt_sizes = []
        self.garbled = garbled
        self.calls = 0

    def count_tokens(self, text):
        return len(text.split())

    def complete(self, messages, max_tokens):
        self.calls += 1
        self.prompt_sizes.append(sum(self.count_tokens(message["content"]) for message in messages))
        if self.garbled:
            self.garbled -= 1
            return "Sure! Here is the summary you asked for."
        prompt = messages[1]["content"]
        lines = re.findall(r"^\[(\d+)\] (.*)$", prompt, re.M)
        words = Counter(word for word in re.findall(r"[a-z]{5,}", prompt.split("\n\n", 1)[-1].lower())
                        if word not in {"notes", "stream", "title", "previous", "transcript", "lines", "summary"})
        top = words.most_common(1)[0][0] if words else "nothing"
        if prompt.startswith("Condense") or prompt.startswith("Merge"):
            return json.dumps({"notes": f"talk about {top} {top}"})
        if "overall summary" in prompt:
            return "```json\n" + json.dumps({"summary": f"A stream mostly about {top}."}) + "\n```"
        start = next((int(number) for number, text in lines if "begins" in text), int(lines[0][0]) if lines else None)
        return json.dumps({"title": f"All about {top}", "summary": f"They discuss {top}.", "start_id": start})


def transcript(topics, lines_per_topic, words_per_line=8):
    segments, chapters, clock = [], [], 0.0
    for topic in topics:
        first = len(segments)
        for number in range(lines_per_topic):
            text = " ".join([topic] * (words_per_line - 1) + [f"w{number}"])
            segments.append(Segment(clock, clock + 4, text))
            clock += 5
        chapters.append(Chapter(first, len(segments), 0.0 if not chapters else segments[first].start,
                                segments[-1].end, title="extractive", summary="extractive summary"))
    return segments, chapters


def test_model_interface_is_a_protocol_the_client_can_meet():
    assert isinstance(WordCountingModel(), ChatModel)
    assert not isinstance(object(), ChatModel)


def test_short_chapters_one_call_each_and_titles_from_answers():
    segments, chapters = transcript(["guitar", "bread", "rocket"], 6)
    model = WordCountingModel()
    summary = summarise_with_llm(model, segments, chapters, title="Sunday stream")
    assert [chapter.title for chapter in chapters] == ["All about guitar", "All about bread", "All about rocket"]
    assert summary.startswith("A stream mostly about")
    assert model.calls == 4
    assert [chapter.start for chapter in chapters] == [0.0, 30.0, 60.0]


def test_long_chapter_is_mapped_and_reduced_within_the_context():
    segments, chapters = transcript(["guitar", "bread", "rocket"], 400)  # 3,200 words per chapter
    settings = LLMSettings(context_tokens=700, answer_tokens=100)
    model = WordCountingModel()
    summarise_with_llm(model, segments, chapters, settings=settings)
    assert max(model.prompt_sizes) <= settings.prompt_budget
    assert model.calls > 3 * (3200 // settings.prompt_budget)
    assert [chapter.title for chapter in chapters] == ["All about guitar", "All about bread", "All about rocket"]


def test_start_id_moves_a_boundary_only_to_a_valid_early_line():
    segments, chapters = transcript(["guitar", "bread", "rocket"], 20)
    segments[22] = Segment(segments[22].start, segments[22].end, "the bread part begins here for real")
    segments[55] = Segment(segments[55].start, segments[55].end, "rocket talk begins far too late")
    summarise_with_llm(WordCountingModel(), segments, chapters)
    assert (chapters[1].first, chapters[1].start) == (22, 110.0)  # segment 22 starts at 110 s
    assert (chapters[0].stop, chapters[0].end) == (22, 110.0)
    assert (chapters[2].first, chapters[2].start) == (40, 200.0)  # line 55 is not among the first shown


def test_not_json_is_retried_then_the_extractive_text_is_kept():
    segments, chapters = transcript(["guitar", "bread", "rocket"], 5)
    model = WordCountingModel(garbled=1)
    summarise_with_llm(model, segments, chapters)
    assert chapters[0].title == "All about guitar"  # second try answered
    segments, chapters = transcript(["guitar", "bread", "rocket"], 5)
    summarise_with_llm(WordCountingModel(garbled=2), segments, chapters)
    assert chapters[0].title == "extractive" and chapters[0].summary == "extractive summary"


def test_context_too_small_for_one_line_is_a_clear_error():
    segments, chapters = transcript(["guitar", "bread", "rocket"], 5, words_per_line=300)
    with pytest.raises(SummaryError, match="raise --context"):
        summarise_with_llm(WordCountingModel(), segments, chapters, settings=LLMSettings(context_tokens=400, answer_tokens=100))


def test_json_answer_parsing():
    assert parse_json_answer('noise {"a": {"b": 1}} more {"c": 2}') == {"a": {"b": 1}}
    with pytest.raises(ValueError):
        parse_json_answer("[1, 2]")


def test_json_answer_with_braces_inside_its_strings():
    answer = 'Here it is:\n```json\n{"title": "Fixing the {config} loader", "summary": "a } then a {"}\n```'
    assert parse_json_answer(answer) == {"title": "Fixing the {config} loader", "summary": "a } then a {"}
