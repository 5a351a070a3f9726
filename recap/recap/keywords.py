"""Key phrases for chapter titles: word runs that are frequent in one chapter and rare in the others."""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Sequence

# English function words plus the filler of spoken language ("gonna", "yeah", "okay").
STOP_WORDS = frozenset(
    """a about above after again against all almost also although always am an and another any anybody
    anyone anything anyway anyways are aren't around as at away back be because been before being below
    between both but by can can't cannot could couldn't did didn't do does doesn't doing don't done down
    during each either else enough even ever every everybody everyone everything few first for from
    further get gets getting go goes going gonna got gotta had hadn't has hasn't have haven't having he
    he'd he'll he's her here here's hers herself him himself his how how's however i i'd i'll i'm i've
    if in into is isn't it it's its itself just kind kinda know last least less let let's like little
    look lot lots made make makes making many may maybe me might mine more most much must my myself need
    never new next no nor not nothing now of off oh ok okay on once one only onto or other others ought
    our ours ourselves out over own pretty quite rather really right said same say says see seem seems
    shall she she'd she'll she's should shouldn't so some somebody someone something sometimes somewhat
    sort still stuff such sure take than thank thanks that that's the their theirs them themselves then
    there there's these they they'd they'll they're they've thing things think this those though
    through thus to today too totally um uh umm uhh under until up upon us use used using very via
    want wanna was wasn't way we we'd we'll we're we've well were weren't what what's whatever when
    where where's whether which while who who's whom whose why will with within without won't would
    wouldn't yeah yep yes yet you you'd you'll you're you've your yours yourself yourselves actually
    basically literally guys hey hi hello alright mean means go gonna come came give put try tried
    good great nice cool bit two three four five six seven eight nine ten also again guess whole
    probably definitely exactly okay anyway said tell told talk talking thing stuff time times""".split()
)

_TOKEN = re.compile(r"[^\W_][\w'’+#.-]*[\w+#]|[^\W_]", re.UNICODE)


def tokens(text: str) -> list[str]:
    """Word tokens as written (case kept), punctuation inside words such as C++, e.g. or node.js kept."""
    return _TOKEN.findall(text)


def candidate_phrases(text: str, *, max_words: int = 3) -> Counter[str]:
    """Counts of 1..max_words-word runs without stop words or numbers, lower-cased."""
    counts: Counter[str] = Counter()
    run: list[str] = []

    def flush() -> None:
        for size in range(1, max_words + 1):
            for start in range(0, len(run) - size + 1):
                counts[" ".join(run[start : start + size])] += 1
        run.clear()

    for token in tokens(text):
        word = token.lower().strip(".")
        if word in STOP_WORDS or len(word) < 3 or word.replace(".", "").isdigit():
            flush()
        else:
            run.append(word)
    flush()
    return counts


def key_phrases(documents: Sequence[str], *, top: int = 5, max_words: int = 3) -> list[list[str]]:
    """For each document, its ``top`` phrases by TF-IDF against the other documents. Longer
    phrases are preferred when they are nearly as frequent as their words, and a phrase contained in
    a better one is dropped."""
    counted = [candidate_phrases(document, max_words=max_words) for document in documents]
    document_frequency: Counter[str] = Counter()
    for counts in counted:
        document_frequency.update(counts.keys())
    total = len(documents)
    results = []
    for counts in counted:
        scored = []
        for phrase, count in counts.items():
            size = phrase.count(" ") + 1
            if size > 1 and count < 2:
                continue
            idf = math.log((1 + total) / (1 + document_frequency[phrase])) + 1
            scored.append(((1 + math.log(count)) * idf * (1 + 0.5 * (size - 1)), phrase))
        scored.sort(reverse=True)
        chosen: list[str] = []
        for _, phrase in scored:
            if any(phrase in kept or kept in phrase for kept in chosen):
                continue
            chosen.append(phrase)
            if len(chosen) == top:
                break
        results.append(chosen)
    return results


def title_from_phrases(phrases: Sequence[str], *, max_chars: int = 60) -> str:
    """"Phrase one, phrase two" with a capital first letter, within ``max_chars``."""
    title = ""
    for phrase in phrases[:2]:
        candidate = phrase if not title else f"{title}, {phrase}"
        if len(candidate) > max_chars:
            break
        title = candidate
    if not title:
        title = (phrases[0] if phrases else "Part")[:max_chars]
    return title[:1].upper() + title[1:]
