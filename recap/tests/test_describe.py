import json
import math

from hypothesis import HealthCheck, given, settings, strategies as st

from recap.chapters import Chapter, Recap, build_recap
from recap.describe import (
    as_json, clock, markdown, youtube_chapter_problems, youtube_description, youtube_ready,
)
from recap.transcript import Segment

WORDS = st.sampled_from("""garden cedar saw glue engine python compiler stream chat music guitar chord
bread flour oven yeast budget taxes invoice rocket orbit fuel camera lens light ünïcödé 漢字 emoji🙂""".split())


@st.composite
def transcripts(draw):
    """Random timed transcripts: 1-300 segments, random gaps and lengths, up to ~8 hours."""
    count = draw(st.integers(1, 300))
    clock_at = draw(st.floats(0, 30))
    segments = []
    for _ in range(count):
        words = draw(st.lists(WORDS, min_size=1, max_size=12))
        length = draw(st.floats(0.2, 120))
        segments.append(Segment(clock_at, clock_at + length, " ".join(words)))
        clock_at += length + draw(st.floats(0, 60))
    return segments


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(transcripts(), st.one_of(st.none(), st.integers(1, 400)))
def test_youtube_rules_hold_for_any_transcript(segments, wanted):
    recap = build_recap(segments, chapters=wanted, embedder="tfidf")
    description = youtube_description(recap)
    assert len(description.encode("utf-8")) < 5000
    starts = [chapter.start for chapter in recap.chapters]
    assert starts == sorted(starts) and starts[0] == 0
    if youtube_ready(recap.chapters, recap.duration):
        assert youtube_chapter_problems(description, recap.duration) == []
    else:
        assert "No chapters" in description


@st.composite
def recaps(draw):
    """Random chapter lists (up to 600 chapters, long unicode titles) meeting the 10 s rule."""
    count = draw(st.integers(3, 600))
    starts = [0.0]
    for _ in range(count - 1):
        starts.append(starts[-1] + draw(st.integers(10, 4000)))
    duration = starts[-1] + draw(st.integers(10, 4000))
    title = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=200)
    chapters = [Chapter(0, 1, start, None, draw(title), draw(st.text(max_size=300))) for start in starts]
    return Recap(chapters, draw(st.text(max_size=6000)), True, float(duration))


@settings(max_examples=80, deadline=None)
@given(recaps())
def test_byte_budget_and_rules_for_any_chapter_list(recap):
    description = youtube_description(recap)
    assert len(description.encode("utf-8")) < 5000
    assert youtube_chapter_problems(description, recap.duration) == []


def test_clock_format():
    assert [clock(value) for value in (0, 9.9, 65, 3600, 3723.7)] == ["0:00", "0:09", "1:05", "1:00:00", "1:02:03"]


def test_checker_finds_each_broken_rule():
    assert "first chapter is not at 0:00" in youtube_chapter_problems("0:05 a\n1:00 b\n2:00 c", 300)
    assert any("lasts 5 s" in problem for problem in youtube_chapter_problems("0:00 a\n0:05 b\n2:00 c", 300))
    assert any("2 chapter lines" in problem for problem in youtube_chapter_problems("0:00 a\n1:00 b", 300))
    assert any("bytes" in problem for problem in youtube_chapter_problems("x" * 5000 + "\n0:00 a\n1:00 b\n2:00 c", 300))


def test_untimed_input_gets_plain_outline():
    segments = [Segment(None, None, f"paragraph {number} about {topic} and more {topic}")
                for number, topic in enumerate(["bread"] * 8 + ["rockets"] * 8 + ["taxes"] * 8)]
    recap = build_recap(segments, chapters=3, embedder="tfidf")
    assert not recap.timed and recap.duration is None
    description = youtube_description(recap)
    assert "no timestamps" in description
    assert not any(line[:1].isdigit() for line in description.splitlines())
    document = json.loads(as_json(recap))
    assert all(chapter["start"] is None for chapter in document["chapters"])
    assert "no timestamps" in markdown(recap)


def test_too_short_for_chapters_says_so():
    recap = build_recap([Segment(0, 5, "a short clip about bread"), Segment(5, 12, "and flour")], embedder="tfidf")
    assert "No chapters" in youtube_description(recap)
