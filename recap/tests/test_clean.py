from recap.clean import clean_segments, collapse_repetition, strip_tags
from recap.sources import read_transcript_file
from recap.transcript import Segment

from test_sources import FIXTURES


def test_tags_removed():
    assert strip_tags("[Music] so >> we go (applause) ♪ la la ♪ <i>now</i> &amp; then") == "so we go now & then"


def test_repetition_loop_collapsed_but_ordinary_doubles_kept():
    assert collapse_repetition("thank you. thank you. thank you. thank you. bye now") == "thank you. bye now"
    assert collapse_repetition("no no it is very very good") == "no no it is very very good"
    assert collapse_repetition("go go go go") == "go"


def test_rolling_json3_after_cleaning_has_each_phrase_once_with_times():
    cleaned = clean_segments(read_transcript_file(FIXTURES / "auto.json3"))
    assert [segment.text for segment in cleaned] == [
        "welcome back everyone today we are", "building a bird feeder out of cedar",
        "first we cut the boards to length", "with a japanese pull saw"]
    assert [round(segment.start, 2) for segment in cleaned] == [0.0, 2.88, 8.49, 11.13]


def test_duplicates_merged_and_overlaps_trimmed():
    segments = [
        Segment(0, 2, "we start the engine now"),
        Segment(2, 4, "we start the engine now"),
        Segment(4, 6, "start the engine now and then drive off"),
        Segment(6, 7, "[Applause]"),
        Segment(7, 9, "we start the engine now"),
    ]
    assert clean_segments(segments) == [
        Segment(0, 4, "we start the engine now"),
        Segment(4, 6, "and then drive off"),
    ]


def test_a_lone_less_than_sign_is_text_not_the_start_of_a_tag():
    # A tag ends at the first ">" after the last "<": the words before a stray "<" survive, and a
    # long unclosed run of "<" is read in one pass.
    assert strip_tags("if a < b then <i>swap</i>") == "if a < b then swap"
    assert strip_tags("<" * 100_000 + "b>x") == "<" * 99_999 + " x"
