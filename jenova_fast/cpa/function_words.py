"""Function words: an n-gram made only of these is counted but never listed as a query pattern.

Built-in lists (casefolded, as the tokenizer folds words): English, German, French, Spanish. English
always applies; another language's list applies once its MARKERS (frequent function words that are not
English words, such as `und`, `les`, `pero`) make up at least `config.FUNCTION_WORD_LANGUAGE_SHARE` of the
user's counted words. So the German list's `man` (one), `hat` (has), `die`, `den` are not hidden from an
English-only user.
`--stopwords FILE` replaces the built-ins: one word per line, `#` starts a comment, casefolded on read.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from jenova_fast.cpa import config

# pronouns, determiners, prepositions, conjunctions, auxiliaries and modals, question words, common
# adverbs and particles, contractions' pieces (the tokenizer splits "don't" into "don" + "t"), the
# politeness of chat ("please", "thanks", and the assistant's own name: "thanks jenova") and the light
# verbs and nouns of asking ("what is the best way to", "I need to", "can you help me", "what happens
# if"): the words every user says whatever they talk about
_EN = """
a about above after again against all also am an and any are aren as at be because been before being
below between both but by can cannot could couldn d did didn do does doesn doing don down during each
either else ever every few for from further had hadn has hasn have haven having he her here hers herself
him himself his how however i if in into is isn it its itself just ll m may me might mightn more most
must mustn my myself neither no nor not now o of off on once only or other ought our ours ourselves out
over own re s same shall shan she should shouldn so some such t than that the their theirs them
themselves then there these they this those through to too under until up upon us ve very was wasn we
were weren what when where whether which while who whom whose why will with won would wouldn y yet you
your yours yourself yourselves
able actually already always anything anyway anyone around else even much many maybe one really
something still thing things though via within without
hi hello hey please thanks thank ok okay yes yeah sure well like jenova
best better way ways get gets got getting make makes made use using used need needs want wants know help
tell explain try trying good possible go going look looking let happen happens happened mean means seem
seems
"""

_DE = """
aber alle allem allen aller alles als also am an ander andere anderem anderen anderer anderes auch auf aus
bei beim bin bis bist da damit dann das dass dein deine deinem deinen deiner dem den denn der des dessen
deshalb die dies diese diesem diesen dieser dieses doch dort du durch ein eine einem einen einer eines er
es etwas euch euer eure für gegen gewesen hab habe haben hat hatte hatten hier hin hinter ich ihm ihn
ihnen ihr ihre ihrem ihren ihrer im in indem ins ist ja jede jedem jeden jeder jedes jetzt kann kein
keine keinem keinen keiner können könnte man manche mein meine meinem meinen meiner mich mir mit muss
musste nach nicht nichts noch nun nur ob oder ohne sehr sein seine seinem seinen seiner seit sich sie
sind so solche soll sollte sondern sonst um und uns unser unsere unter viel vom von vor war waren warum
was weil welche welchem welchen welcher welches wenn wer werde werden wie wieder will wir wird wo wollen
wollte würde würden zu zum zur zwar zwischen
kannst könnt könnten musst müssen sollst sollen willst möchte möchten darf darfst dürfen
"""

_FR = """
à afin ai aie aient aies ait alors as au aucun aussi autre aux avec avez avoir avons ayant c ça car ce
ceci cela celle celles celui cependant ces cet cette ceux chaque ci comme comment d dans de des deux dois
doit donc dont du elle elles en encore es est et été être eu eux faire fait il ils j je jusqu l la là le
les leur leurs lui m ma mais me même mes moi mon n ne ni nos notre nous on ont ou où par parce pas peu
peut plus pour pourquoi qu quand que quel quelle quelles quels qui quoi s sa sans se sera ses si sien
son sont sous suis sur t ta te tes toi ton tous tout toute toutes très tu un une vos votre vous y
peux pouvez pouvons peuvent pourrais pourriez veux voulez veut faut devrais devez
"""

_ES = """
a al algo algunas algunos ante antes cada como con contra cual cuales cuando de del desde donde dos el
ella ellas ello ellos en entre era eran es esa esas ese eso esos esta está estaba estado están estar
estas este esto estos fue fueron ha había han hasta hay la las le les lo los más me mi mis mucho muy
nada ni no nos nosotros o os otra otras otro otros para pero poco por porque qué que quien quienes se
sea ser si sí sido sin sobre sois somos son su sus también tanto te tengo ti tiene tienen todo todos
tu tú tus un una uno unos usted ustedes vosotros y ya yo
"""

BUILT_IN: dict[str, frozenset[str]] = {lang: frozenset(w.casefold() for w in text.split())
                                       for lang, text in (("en", _EN), ("de", _DE), ("fr", _FR), ("es", _ES))}
ALWAYS = "en"
# frequent function words of a language that are neither English words nor names ("los", "las" are not
# here: Los Angeles): what tells that a user writes that language
MARKERS: dict[str, frozenset[str]] = {
    "de": frozenset("und der ich nicht ist das sich auch wir dass ein eine".split()),
    "fr": frozenset("les est et des une pas je vous nous dans avec qui".split()),
    "es": frozenset("el una por pero muy está como que esta".split()),
}


@dataclass(frozen=True)
class FunctionWords:
    """The words in force and where they came from (built-in languages, or a file)."""

    words: frozenset[str]
    source: str  # "built-in" or the path of a --stopwords file
    languages: tuple[str, ...] = ()

    def only_function_words(self, ngram: str) -> bool:
        """True when every word of the n-gram (words joined by single spaces) is a function word."""
        return all(w in self.words for w in ngram.split(" "))

    def holds_function_words(self, ngram: str) -> bool:
        """True when any word of the n-gram is a function word."""
        return any(w in self.words for w in ngram.split(" "))

    def describe(self) -> dict:
        return {"source": self.source, "languages": list(self.languages), "words": len(self.words)}


def detect_languages(unigram_counts: Mapping[str, int], words: int) -> tuple[str, ...]:
    """English, plus each built-in language whose MARKERS make up a share of the words counted."""
    found = [ALWAYS]
    for lang, markers in MARKERS.items():
        said = sum(n for w, n in unigram_counts.items() if w in markers)
        if words > 0 and said >= config.FUNCTION_WORD_LANGUAGE_SHARE * words:
            found.append(lang)
    return tuple(found)


def built_in(langs: tuple[str, ...]) -> FunctionWords:
    """The built-in lists of `langs` (from `detect_languages`)."""
    return FunctionWords(frozenset().union(*(BUILT_IN[lang] for lang in langs)), "built-in", langs)


class StopwordsError(ValueError):
    """A --stopwords file that cannot be read."""


def read_file(path: str | os.PathLike[str]) -> FunctionWords:
    """One word per line; `#` starts a comment; blank lines skipped; casefolded."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StopwordsError(f"cannot read the stopwords file {path}: {exc}; pass a UTF-8 text file with one "
                             "word per line") from exc
    return FunctionWords(frozenset(_words(text.splitlines())), str(path))


def _words(lines: Iterable[str]) -> Iterable[str]:
    for line in lines:
        for w in line.split("#", 1)[0].split():
            yield w.casefold()
