import pytest

from recap.chapters import build_recap, chapter_count_for, split_blocks
from recap.embed import TfidfEmbedder, minilm_available
from synthetic import boundary_f1, synthetic_transcript


def test_chapter_count_fits_the_length():
    assert chapter_count_for(600, 0) == 5
    assert chapter_count_for(3600, 0) == 6
    assert chapter_count_for(6 * 3600, 0) == 24
    assert chapter_count_for(6 * 3600, 0, chapter_minutes=30) == 12
    assert chapter_count_for(None, 150 * 60) == 6


def test_split_finds_planted_groups_and_respects_minimum_duration():
    import numpy as np

    vectors = np.repeat(np.eye(3, dtype=np.float32), [5, 7, 4], axis=0)
    assert split_blocks(vectors, 3) == [0, 5, 12]
    starts = [10.0 * index for index in range(16)]
    # Groups must last 60 s: the 4-block (40 s) group cannot stand alone.
    assert split_blocks(vectors, 3, starts=starts, total_end=160.0, min_seconds=60.0) == [0, 6]


def test_boundary_f1():
    assert boundary_f1([0, 100, 200], [0, 105, 300], collar=10) == pytest.approx(0.5)
    assert boundary_f1([0, 100], [0, 100], collar=1) == 1.0


@pytest.mark.skipif(not minilm_available(), reason="the bundled embedding model is not installed")
def test_embedded_default_finds_most_topic_changes():
    import os

    segments, truth, _ = synthetic_transcript(6, seed=1)
    environment = dict(os.environ)
    recap = build_recap(segments, chapters=6, embedder="minilm")
    assert dict(os.environ) == environment  # offline switches are set only while loading/encoding
    found = [chapter.start for chapter in recap.chapters]
    assert boundary_f1(found, truth, collar=30) >= 0.6
    assert recap.method == "extractive (all-MiniLM-L6-v2)"


def test_tfidf_fallback_runs_without_the_model():
    segments, truth, _ = synthetic_transcript(5, seed=2)
    embedder = TfidfEmbedder([segment.text for segment in segments])
    recap = build_recap(segments, chapters=5, embedder=embedder)
    assert len(recap.chapters) == 5 and recap.method == "extractive (tfidf)"
    assert boundary_f1([chapter.start for chapter in recap.chapters], truth, collar=60) > 0
