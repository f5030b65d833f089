"""The everyday-phrasing history of issue 21: most questions are a common stem and an everyday phrase
("how do I" + "get this done"), a fifth are about three real interests, each interest rarer in the
history than each everyday phrase. Each stem holds one of its language's markers (function_words.MARKERS),
as a user's own writing would. Used by tests/cpa/test_keyness.py, and to make the demo history of
docs/cpa.md:

    python -m tests.cpa.histories everyday.jsonl      # 3,000 questions over 30 days, English

Everyday phrases use common words (Zipf >= 3.7 in the reference); each interest is named by a word that
people say less than once per million words (not in the reference table): its KEY words.
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

STEMS = {
    "en": ["how do I", "can you tell me how to", "what should I do about", "is there a way to", "help me",
           "what is the best way to"],
    "de": ["wie kann ich", "kannst du mir sagen wie ich", "was soll ich tun um", "wie schaffe ich es",
           "ich möchte"],
    "fr": ["comment est-ce que je peux", "peux-tu me dire comment je peux", "que dois-je faire pour",
           "est-ce que tu peux m'aider à", "quelle est la meilleure façon de"],
}
EVERYDAY = {
    "en": ["get this done", "keep going", "sort it out", "figure it out", "deal with it", "make it work",
           "move on", "start over", "catch up", "finish it", "stay on track", "fix this", "think it through",
           "set it up", "clean it up", "get started", "stay focused", "plan my week", "manage my day"],
    "de": ["das erledigen", "in ordnung bringen", "damit anfangen", "es schaffen", "weiter machen",
           "zeit finden", "den tag planen", "die arbeit machen", "mich konzentrieren", "am ball bleiben"],
    "fr": ["terminer ça", "continuer", "régler ça", "gérer ça", "avancer", "commencer", "tout ranger",
           "organiser ma semaine", "finir le travail"],
}


@dataclass(frozen=True)
class Interest:
    key: frozenset[str]  # its rare words: an n-gram holding one is about this interest
    phrasings: tuple[str, ...]


def _interest(key: str, *phrasings: str) -> Interest:
    return Interest(frozenset(key.split()), phrasings)


INTERESTS = {
    "en": [
        _interest("beekeeping", "beekeeping", "beekeeping gear", "beekeeping in winter"),
        _interest("bouldering", "bouldering", "bouldering grades", "indoor bouldering"),
        _interest("joinery", "japanese joinery", "japanese joinery tools", "joinery without nails"),
        _interest("sourdough", "sourdough", "sourdough bread", "a sourdough loaf"),
        _interest("bonsai", "bonsai", "bonsai trees", "pruning a bonsai"),
        _interest("astrophotography", "astrophotography", "astrophotography lenses", "astrophotography at night"),
        _interest("kombucha", "kombucha", "brewing kombucha", "kombucha flavours"),
        _interest("origami", "origami", "origami cranes", "folding origami"),
    ],
    "de": [
        _interest("imkerei", "imkerei", "imkerei für anfänger", "imkerei im winter"),
        _interest("bouldern", "bouldern", "bouldern in der halle", "bouldern lernen"),
        _interest("holzverbindungen", "japanische holzverbindungen", "holzverbindungen ohne nägel"),
        _interest("sauerteig", "sauerteig", "sauerteig ansetzen", "brot mit sauerteig"),
        _interest("kalligrafie", "kalligrafie", "kalligrafie lernen", "kalligrafie mit tusche"),
        _interest("fliegenfischen", "fliegenfischen", "fliegenfischen im herbst", "fliegenfischen am fluss"),
    ],
    "fr": [
        _interest("apiculture", "apiculture", "l'apiculture en hiver", "matériel d'apiculture"),
        _interest("levain", "levain", "pain au levain", "nourrir mon levain"),
        _interest("bonsaï", "bonsaï", "tailler un bonsaï", "arroser mon bonsaï"),
        _interest("kombucha", "kombucha", "faire du kombucha", "kombucha maison"),
        _interest("origami", "origami", "grues en origami", "plier un origami"),
    ],
}


def everyday_history(rng: random.Random, lang: str, stems: list[str], everyday: list[str],
                     interests: list[Interest], n: int, days: int, *, steady: bool = False) -> list[list[str]]:
    """n queries over `days` sessions (one list per day): every fifth about one of the interests (each
    equally often), the rest everyday phrases (each equally often, so each more often than any
    interest while there are fewer than 12), each after a stem; in seeded order. `steady` deals each
    interest's and each phrase's queries over the days in turn, so every interest recurs in as many
    sessions as the others: with a seeded order alone, one of 20 queries over 3 days can miss a day and
    rank lower by its fewer sessions, as the score means it to."""
    topical = n // 5
    queries = [f"{rng.choice(stems)} {rng.choice(interests[i % len(interests)].phrasings)}" for i in range(topical)]
    queries += [f"{rng.choice(stems)} {everyday[i % len(everyday)]}" for i in range(n - topical)]
    if not steady:
        rng.shuffle(queries)
        return [queries[d * n // days: (d + 1) * n // days] for d in range(days)]
    kinds = [f"i{i % len(interests)}" for i in range(topical)] + [f"e{i % len(everyday)}" for i in range(n - topical)]
    start = {kind: rng.randrange(days) for kind in dict.fromkeys(kinds)}
    seen = dict.fromkeys(start, 0)
    sessions: list[list[str]] = [[] for _ in range(days)]
    for kind, query in zip(kinds, queries, strict=True):
        sessions[(start[kind] + seen[kind]) % days].append(query)
        seen[kind] += 1
    for day in sessions:
        rng.shuffle(day)
    return sessions


def write_demo(path: Path, n: int = 3000, days: int = 30, seed: int = 21) -> Path:
    """The demo history: English, beekeeping, bouldering and Japanese joinery, one session a day."""
    rng = random.Random(seed)
    sessions = everyday_history(rng, "en", STEMS["en"][:3], EVERYDAY["en"][:6], INTERESTS["en"][:3], n, days)
    lines = []
    for day, queries in enumerate(sessions):
        for i, q in enumerate(queries):
            ts = 1_760_000_000 + day * 86400 + i * 60
            lines.append(json.dumps({"user_message": q, "ai_message": "...", "timestamp": ts}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


if __name__ == "__main__":
    print(write_demo(Path(sys.argv[1] if len(sys.argv) > 1 else "everyday.jsonl")))
