"""A built-in sample corpus: a templated English -> German toy language with gold word alignments.

Small enough (a few hundred words, 4-15 words a sentence) for a small model to learn on a laptop
CPU in minutes, yet with the reorderings that make attention interesting:

- verb-final subordinate clauses: "... because the dog sees the cat" -> "..., weil der Hund die Katze sieht";
- verb second after a fronted adverb or clause: "today the dog sleeps" -> "heute schläft der Hund";
- the verb bracket: "the dog has seen the cat" -> "der Hund hat die Katze gesehen", also with modals;
- negation: "does not see the cat" -> "sieht die Katze nicht";
- articles and adjective endings by gender and case (der/den/dem, ein großer/einen großen, ...);
- compounds: "the apple tree" -> "der Apfelbaum"; contractions: "in the garden" -> "im Garten".

Every token carries the alignment keys of its concept, so each pair's gold alignment falls out of
the generation: English word ``i`` and German word ``j`` are a sure link ``i-j`` when they share a
key, a possible link ``i?j`` when one only *maybe* has the other's key (English "does" in
"does not see"; the German article in "to school" -> "in die Schule"). The text is written as
ordinary text is: commas and full stops join the word before them ("Katze, weil", "Hund."), and a
mark has no link of its own, so a word's links are those of its words' keys. Indices are 0-based
over whitespace-separated words, English first (Pharaoh format).
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from nmt.errors import NMTError

logger = logging.getLogger(__name__)

MIN_WORDS, MAX_WORDS = 4, 15  # whitespace-separated words on both sides of every pair
PUNCTUATION = (",", ".")  # written joined to the word before


class Noun(NamedTuple):
    en: str  # two words for a compound ("apple tree")
    de: str
    gender: str  # m | f | n
    kinds: frozenset[str]  # what the noun can be: animate, thing, food, text, opens, build, catch


class Verb(NamedTuple):
    en: tuple[str, str, str]  # 3rd person singular, base form, past participle
    de: tuple[str, str, str]  # 3rd person singular, infinitive, past participle
    aux: str  # the perfect's auxiliary: hat | ist
    frame: str  # the noun kinds its object may have ("animate,thing"), or one of OTHER_FRAMES


OTHER_FRAMES = ("-", "give", "to", "that", "adj")  # none, dative + accusative, a destination, a clause, the copula


def _table(text: str, width: int) -> list[list[str]]:
    """Entries of ``width`` whitespace-separated fields, several to a line; ``_`` joins words in a field."""
    fields = [field.replace("_", " ") for field in text.split()]
    return [fields[i : i + width] for i in range(0, len(fields), width)]


NOUNS = [
    Noun(en, de, gender, frozenset(kinds.split(",")))
    for en, de, gender, kinds in _table(
        """
    man Mann m animate              woman Frau f animate            child Kind n animate
    girl Mädchen n animate          teacher Lehrer m animate        friend Freund m animate
    sister Schwester f animate      brother Bruder m animate        baker Bäcker m animate
    king König m animate            queen Königin f animate         doctor Ärztin f animate
    cook Koch m animate             uncle Onkel m animate           aunt Tante f animate
    dog Hund m animate              cat Katze f animate             horse Pferd n animate
    bird Vogel m animate,catch      mouse Maus f animate,catch
    book Buch n thing,text,opens    letter Brief m thing,text,opens newspaper Zeitung f thing,text
    apple Apfel m thing,food        bread Brot n thing,food         cake Kuchen m thing,food
    soup Suppe f thing,food         ball Ball m thing,catch         house Haus n thing,build
    table Tisch m thing,build       chair Stuhl m thing,build       boat Boot n thing,build
    door Tür f thing,opens          window Fenster n thing,opens    bag Tasche f thing,opens
    bottle Flasche f thing,opens    box Kiste f thing,opens,build   cup Tasse f thing
    key Schlüssel m thing           picture Bild n thing            flower Blume f thing
    clock Uhr f thing               bicycle Fahrrad n thing         hat Hut m thing
    apple_tree Apfelbaum m thing            kitchen_table Küchentisch m thing,build
    house_door Haustür f thing,opens        school_bag Schultasche f thing,opens
    birthday_cake Geburtstagskuchen m thing,food  apple_cake Apfelkuchen m thing,food
    car_key Autoschlüssel m thing           flower_pot Blumentopf m thing
    water_bottle Wasserflasche f thing,opens coffee_cup Kaffeetasse f thing
    picture_book Bilderbuch n thing,text,opens  garden_chair Gartenstuhl m thing,build
    toy_car Spielzeugauto n thing,catch     tea_cup Teetasse f thing
    """,
        4,
    )
]

PLACES = [  # "in the garden" -> "im Garten" (dative; in + dem contract to im)
    Noun(en, de, gender, frozenset({"place"}))
    for en, de, gender in _table(
        """
    garden Garten m   park Park m   forest Wald m   kitchen Küche f   city Stadt f
    school Schule f   library Bibliothek f   living_room Wohnzimmer n
    """,
        3,
    )
]

ADJECTIVES = _table(  # English, German, kinds: a = for people and animals, t = for things, at = both
    """
    big groß at      small klein at    old alt at        new neu t         young jung a
    red rot t        blue blau t       green grün t      black schwarz t   yellow gelb t
    beautiful schön at  happy glücklich a  tired müde a  clever klug a     hungry hungrig a
    funny lustig a   friendly freundlich a  fast schnell at  heavy schwer t  cheap billig t
    cold kalt t      long lang t
    """,
    3,
)

VERBS = [
    Verb((en3, en, en_part), (de3, de, de_part), aux, frame)
    for en3, en, en_part, de3, de, de_part, aux, frame in _table(
        """
    sees see seen             sieht sehen gesehen hat          animate,thing
    hears hear heard          hört hören gehört hat            animate,thing
    likes like liked          mag mögen gemocht hat            animate,thing
    finds find found          findet finden gefunden hat       animate,thing
    paints paint painted      malt malen gemalt hat            animate,thing
    washes wash washed        wäscht waschen gewaschen hat     animate,thing
    visits visit visited      besucht besuchen besucht hat     animate
    meets meet met            trifft treffen getroffen hat     animate
    eats eat eaten            isst essen gegessen hat          food
    buys buy bought           kauft kaufen gekauft hat         thing
    sells sell sold           verkauft verkaufen verkauft hat  thing
    needs need needed         braucht brauchen gebraucht hat   thing
    carries carry carried     trägt tragen getragen hat        thing
    takes take taken          nimmt nehmen genommen hat        thing
    reads read read           liest lesen gelesen hat          text
    writes write written      schreibt schreiben geschrieben hat  text
    opens open opened         öffnet öffnen geöffnet hat       opens
    builds build built        baut bauen gebaut hat            build
    catches catch caught      fängt fangen gefangen hat        catch
    gives give given          gibt geben gegeben hat           give
    shows show shown          zeigt zeigen gezeigt hat         give
    brings bring brought      bringt bringen gebracht hat      give
    sends send sent           schickt schicken geschickt hat   give
    sleeps sleep slept        schläft schlafen geschlafen hat  -
    laughs laugh laughed      lacht lachen gelacht hat         -
    works work worked         arbeitet arbeiten gearbeitet hat -
    sings sing sung           singt singen gesungen hat        -
    waits wait waited         wartet warten gewartet hat       -
    plays play played         spielt spielen gespielt hat      -
    swims swim swum           schwimmt schwimmen geschwommen ist  -
    goes go gone              geht gehen gegangen ist          to
    drives drive driven       fährt fahren gefahren ist        to
    runs run run              läuft laufen gelaufen ist        to
    says say said             sagt sagen gesagt hat            that
    thinks think thought      denkt denken gedacht hat         that
    knows know known          weiß wissen gewusst hat          that
    hopes hope hoped          hofft hoffen gehofft hat         that
    is be been                ist sein gewesen ist             adj
    """,
        8,
    )
]

# Fixed phrases: English, German, and their alignment in Pharaoh format (all-to-all sure if None).
DESTINATIONS = [
    ("to school", "in die Schule", "0-0 1-2 1?1"),
    ("home", "nach Hause", "0-0 0-1"),
    ("to work", "zur Arbeit", "0-0 1-1"),
    ("to the park", "in den Park", "0-0 1-1 2-2"),
    ("to the city", "in die Stadt", "0-0 1-1 2-2"),
    ("to the forest", "in den Wald", "0-0 1-1 2-2"),
]
ADVERBS = [
    ("today", "heute", None),
    ("now", "jetzt", None),
    ("often", "oft", None),
    ("sometimes", "manchmal", None),
    ("unfortunately", "leider", None),
    ("suddenly", "plötzlich", None),
    ("of course", "natürlich", None),
    ("in the morning", "morgens", None),
    ("in the evening", "abends", None),
    ("every day", "jeden Tag", "0-0 1-1"),
    ("on Sunday", "am Sonntag", "0-0 1-1"),
]
CONJUNCTIONS = [("because", "weil"), ("although", "obwohl"), ("when", "wenn")]

# The article and the adjective ending by (definite, case) and gender: weak endings after
# der/die/das, mixed endings after ein/eine.
DECLENSION = {
    (True, "nom"): {"m": ("der", "e"), "f": ("die", "e"), "n": ("das", "e")},
    (True, "acc"): {"m": ("den", "en"), "f": ("die", "e"), "n": ("das", "e")},
    (True, "dat"): {"m": ("dem", "en"), "f": ("der", "en"), "n": ("dem", "en")},
    (False, "nom"): {"m": ("ein", "er"), "f": ("eine", "e"), "n": ("ein", "es")},
    (False, "acc"): {"m": ("einen", "en"), "f": ("eine", "e"), "n": ("ein", "es")},
    (False, "dat"): {"m": ("einem", "en"), "f": ("einer", "en"), "n": ("einem", "en")},
}


class Tok(NamedTuple):
    """A word and its alignment keys: words sharing a ``sure`` key are a sure link; ``maybe`` a possible one."""

    text: str
    sure: frozenset[int] = frozenset()
    maybe: frozenset[int] = frozenset()


Words = list[Tok]


class Clause(NamedTuple):
    """One clause: its English words in order, and its German parts, which each word order arranges."""

    en: Words
    subject: Words
    finite: Words  # the conjugated verb
    middle: Words  # objects, nicht, prepositional phrases
    final: Words  # the participle or infinitive closing the verb bracket

    def main(self) -> Words:
        """Verb second: der Hund hat die Katze gesehen."""
        return self.subject + self.finite + self.middle + self.final

    def inverted(self) -> Words:
        """After a fronted adverb or clause: (heute) hat der Hund die Katze gesehen."""
        return self.finite + self.subject + self.middle + self.final

    def subordinate(self) -> Words:
        """Verb last: (weil) der Hund die Katze gesehen hat."""
        return self.subject + self.middle + self.final + self.finite


class Generator:
    """Draws sentence pairs from one seeded random stream; alignment keys are numbered per generator."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self._keys = itertools.count()

    def key(self) -> frozenset[int]:
        return frozenset([next(self._keys)])

    def pair(self, en: str, de: str) -> tuple[Words, Words]:
        """Every English word sure-linked to every German word (one concept)."""
        k = self.key()
        return [Tok(w, k) for w in en.split()], [Tok(w, k) for w in de.split()]

    def phrase(self, en: str, de: str, links: str | None) -> tuple[Words, Words]:
        """A fixed phrase aligned by ``links`` (Pharaoh, ``i-j`` sure, ``i?j`` possible); None: all-to-all."""
        if links is None:
            return self.pair(en, de)
        en_words, de_words = en.split(), de.split()
        en_sure, en_maybe, de_sure = ([frozenset()] * len(w) for w in (en_words, en_words, de_words))
        for link in links.split():
            i, j = (int(x) for x in link.replace("?", "-").split("-"))
            k = self.key()
            if "?" in link:
                en_maybe[i] |= k
            else:
                en_sure[i] |= k
            de_sure[j] |= k
        return [Tok(*t) for t in zip(en_words, en_sure, en_maybe, strict=True)], [
            Tok(w, k) for w, k in zip(de_words, de_sure, strict=True)
        ]

    def noun_phrase(self, noun: Noun, case: str, *, definite: bool, adjective: tuple | None) -> tuple[Words, Words]:
        """(the|a) [adjective] noun -> article + inflected adjective + noun, by gender and case."""
        next_word = adjective[0] if adjective else noun.en
        article = "the" if definite else ("an" if next_word[0] in "aeiou" else "a")
        de_article, ending = DECLENSION[definite, case][noun.gender]
        en, de = self.pair(article, de_article)
        if adjective:
            stem = adjective[1]
            adj_en, adj_de = self.pair(adjective[0], stem + ending[1:] if stem.endswith("e") else stem + ending)
            en, de = en + adj_en, de + adj_de
        noun_en, noun_de = self.pair(noun.en, noun.de)
        return en + noun_en, de + noun_de

    def random_np(self, kind: str, case: str, *, definite: bool | None = None) -> tuple[Words, Words]:
        """A noun phrase of a noun of ``kind``; an adjective two times in five."""
        noun = self.rng.choice([n for n in NOUNS if kind in n.kinds])
        adj_kind = "a" if "animate" in noun.kinds else "t"
        adjective = self.rng.choice([a for a in ADJECTIVES if adj_kind in a[2]]) if self.rng.random() < 0.4 else None
        if definite is None:
            definite = self.rng.random() < 0.7
        return self.noun_phrase(noun, case, definite=definite, adjective=adjective)

    def clause(self, *, frames: tuple[str, ...]) -> Clause:
        """A clause whose verb has one of ``frames`` (drawn first, so repeats weigh more)."""
        frame = self.rng.choice(frames)
        verb = self.rng.choice([v for v in VERBS if _frame_of(v) == frame])
        subj_en, subj_de = self.random_np("animate", "nom")
        negated = self.rng.random() < 0.2
        group = self.verb_group(verb, negated)
        obj_en, obj_de, after_en, after_de = self.complements(verb, negated)
        predicate = verb.frame == "adj"  # "ist (nicht) müde": the adjective closes the clause like a participle
        return Clause(
            en=subj_en + group.en + obj_en + after_en,
            subject=subj_de,
            finite=group.finite,
            middle=obj_de + group.nicht + ([] if predicate else after_de),
            final=group.final + (after_de if predicate else []),
        )

    def verb_group(self, verb: Verb, negated: bool) -> VerbGroup:
        """Tense, modality and negation: simple, perfect, or can / must / wants to + infinitive."""
        tenses = ["simple"] if verb.frame == "adj" else ["simple", "simple", "perfect", "can", "must", "wants"]
        if negated:
            tenses = [t for t in tenses if t not in ("must", "wants")]
        return VERB_GROUPS[self.rng.choice(tenses)](self, verb, negated)

    def complements(self, verb: Verb, negated: bool) -> tuple[Words, Words, Words, Words]:
        """The objects (English, German) and what follows them (a destination, a predicate, a place)."""
        obj_en: Words = []
        obj_de: Words = []
        definite = True if negated else None  # "nicht" with an indefinite object would need "kein"
        if verb.frame == "give":
            io_en, io_de = self.random_np("animate", "dat", definite=definite)
            do_en, do_de = self.random_np("thing", "acc", definite=definite)
            obj_en, obj_de = io_en + do_en, io_de + do_de
        elif _frame_of(verb) == "object":
            obj_en, obj_de = self.random_np(self.rng.choice(verb.frame.split(",")), "acc", definite=definite)
        if verb.frame == "to":
            after_en, after_de = self.phrase(*self.rng.choice(DESTINATIONS))
        elif verb.frame == "adj":
            after_en, after_de = self.pair(*self.rng.choice([a for a in ADJECTIVES if "a" in a[2]])[:2])
        elif verb.frame != "that" and self.rng.random() < 0.3:
            after_en, after_de = self.place(self.rng.choice(PLACES))
        else:
            after_en, after_de = [], []
        return obj_en, obj_de, after_en, after_de

    def place(self, noun: Noun) -> tuple[Words, Words]:
        """in the garden -> im Garten; in the kitchen -> in der Küche."""
        if noun.gender == "f":
            prep_en, prep_de = self.pair("in", "in")
            np_en, np_de = self.noun_phrase(noun, "dat", definite=True, adjective=None)
            return prep_en + np_en, prep_de + np_de
        k = self.key()
        noun_en, noun_de = self.pair(noun.en, noun.de)
        return [Tok("in", k), Tok("the", k), *noun_en], [Tok("im", k), *noun_de]


class VerbGroup(NamedTuple):
    en: Words  # does not see / has seen / can see / wants to see ...
    finite: Words  # sieht / hat / kann / will
    final: Words  # gesehen / sehen, or nothing
    nicht: Words  # [nicht] when negated


def _simple(g: Generator, verb: Verb, negated: bool) -> VerbGroup:
    k, n = g.key(), g.key()
    finite = [Tok(verb.de[0], k)]
    if not negated:
        return VerbGroup([Tok(verb.en[0], k)], finite, [], [])
    if verb.frame == "adj":  # is not tired -> ist nicht müde
        return VerbGroup([Tok(verb.en[0], k), Tok("not", n)], finite, [], [Tok("nicht", n)])
    return VerbGroup([Tok("does", maybe=k), Tok("not", n), Tok(verb.en[1], k)], finite, [], [Tok("nicht", n)])


def _perfect(g: Generator, verb: Verb, negated: bool) -> VerbGroup:
    aux, v, n = g.key(), g.key(), g.key()
    en = [Tok("has", aux), *([Tok("not", n)] if negated else []), Tok(verb.en[2], v)]
    return VerbGroup(en, [Tok(verb.aux, aux)], [Tok(verb.de[2], v)], [Tok("nicht", n)] if negated else [])


def _modal(en_modal: str, de_modal: str) -> Callable[[Generator, Verb, bool], VerbGroup]:
    """can / must + infinitive; "cannot" is one English word for kann ... nicht."""

    def build(g: Generator, verb: Verb, negated: bool) -> VerbGroup:
        m, v, n = g.key(), g.key(), g.key()
        modal = Tok("cannot", m | n) if negated else Tok(en_modal, m)
        nicht = [Tok("nicht", n)] if negated else []
        return VerbGroup([modal, Tok(verb.en[1], v)], [Tok(de_modal, m)], [Tok(verb.de[1], v)], nicht)

    return build


def _wants(g: Generator, verb: Verb, negated: bool) -> VerbGroup:
    m, v = g.key(), g.key()
    en = [Tok("wants", m), Tok("to", maybe=v), Tok(verb.en[1], v)]
    return VerbGroup(en, [Tok("will", m)], [Tok(verb.de[1], v)], [])


VERB_GROUPS: dict[str, Callable[[Generator, Verb, bool], VerbGroup]] = {
    "simple": _simple,
    "perfect": _perfect,
    "can": _modal("can", "kann"),
    "must": _modal("must", "muss"),
    "wants": _wants,
}


def _frame_of(verb: Verb) -> str:
    """Object frames (a noun kind) count as "object"; the others are themselves."""
    return verb.frame if verb.frame in OTHER_FRAMES else "object"


CLAUSE_FRAMES = ("object", "object", "object", "give", "-", "to", "adj")


# Sentence forms: each returns the English and the German words, final full stop not yet added.
def _plain(g: Generator) -> tuple[Words, Words]:
    clause = g.clause(frames=CLAUSE_FRAMES)
    return clause.en, clause.main()


def _fronted_adverb(g: Generator) -> tuple[Words, Words]:
    adv_en, adv_de = g.phrase(*g.rng.choice(ADVERBS))
    clause = g.clause(frames=CLAUSE_FRAMES)
    return adv_en + clause.en, adv_de + clause.inverted()


def _subordinate_after(g: Generator) -> tuple[Words, Words]:
    """main clause + because/although/when + verb-final clause."""
    main = g.clause(frames=CLAUSE_FRAMES)
    conj_en, conj_de = g.pair(*g.rng.choice(CONJUNCTIONS))
    sub = g.clause(frames=CLAUSE_FRAMES)
    return main.en + conj_en + sub.en, [*main.main(), Tok(","), *conj_de, *sub.subordinate()]


def _subordinate_first(g: Generator) -> tuple[Words, Words]:
    """because ..., main clause: the main clause's verb comes right after the comma."""
    conj_en, conj_de = g.pair(*g.rng.choice(CONJUNCTIONS))
    sub = g.clause(frames=CLAUSE_FRAMES)
    main = g.clause(frames=CLAUSE_FRAMES)
    return [*conj_en, *sub.en, Tok(","), *main.en], [*conj_de, *sub.subordinate(), Tok(","), *main.inverted()]


def _reported(g: Generator) -> tuple[Words, Words]:
    """says / thinks / knows / hopes that + verb-final clause."""
    main = g.clause(frames=("that",))
    that_en, that_de = g.pair("that", "dass")
    sub = g.clause(frames=CLAUSE_FRAMES)
    return main.en + that_en + sub.en, [*main.main(), Tok(","), *that_de, *sub.subordinate()]


FORMS: dict[str, tuple[float, Callable[[Generator], tuple[Words, Words]]]] = {
    "plain": (0.30, _plain),
    "fronted adverb": (0.20, _fronted_adverb),
    "subordinate after": (0.20, _subordinate_after),
    "subordinate first": (0.10, _subordinate_first),
    "reported": (0.20, _reported),
}


class SamplePair(NamedTuple):
    en: str
    de: str
    alignment: str  # Pharaoh: "i-j" sure, "i?j" possible, 0-based English then German word index


def draw_pair(g: Generator) -> SamplePair:
    """One sentence pair of 4-15 words a side, capitalised, with a full stop and its gold alignment."""
    weights, forms = zip(*FORMS.values(), strict=True)
    while True:
        en, de = g.rng.choices(forms, weights=weights)[0](g)
        en, de = (_written([*_capitalised(side), Tok(".")]) for side in (en, de))
        if MIN_WORDS <= len(en) <= MAX_WORDS and MIN_WORDS <= len(de) <= MAX_WORDS:
            return SamplePair(" ".join(t.text for t in en), " ".join(t.text for t in de), _links(en, de))


def _capitalised(words: Words) -> Words:
    first = words[0]
    return [first._replace(text=first.text[0].upper() + first.text[1:]), *words[1:]]


def _written(words: Words) -> Words:
    """The words as text writes them: each punctuation mark joined to the word before it, which keeps its keys."""
    out: Words = []
    for word in words:
        if word.text in PUNCTUATION:
            out[-1] = out[-1]._replace(text=out[-1].text + word.text)
        else:
            out.append(word)
    return out


def _links(en: Words, de: Words) -> str:
    links = []
    for i, e in enumerate(en):
        for j, d in enumerate(de):
            if e.sure & d.sure:
                links.append(f"{i}-{j}")
            elif e.maybe & d.sure or e.sure & d.maybe:
                links.append(f"{i}?{j}")
    return " ".join(links)


def generate_pairs(n: int, seed: int) -> list[SamplePair]:
    """``n`` distinct pairs (no English and no German sentence twice), the same for the same seed."""
    g = Generator(random.Random(seed))
    pairs: list[SamplePair] = []
    seen_en, seen_de = set(), set()
    for _ in range(50 * n):
        pair = draw_pair(g)
        if pair.en not in seen_en and pair.de not in seen_de:
            seen_en.add(pair.en)
            seen_de.add(pair.de)
            pairs.append(pair)
            if len(pairs) == n:
                return pairs
    raise NMTError(f"could not draw {n} distinct sample pairs; ask for fewer")


def split_sizes(n: int) -> dict[str, int]:
    """train / dev / test sizes: one twelfth each for dev and test (500 each of 6000)."""
    held_out = max(1, n // 12)
    if n < 3 * held_out or n < 3:
        raise NMTError(f"--pairs {n} is too few for train, dev and test splits; ask for at least 3")
    return {"train": n - 2 * held_out, "dev": held_out, "test": held_out}


def write_sample_corpus(out_dir: str | Path, *, pairs: int = 6000, seed: int = 1234) -> dict[str, int]:
    """Write ``{train,dev,test}.{en,de,align}`` into ``out_dir``; returns the split sizes.

    The splits are disjoint (every sentence occurs once in the whole corpus).
    """
    sizes = split_sizes(pairs)
    drawn = generate_pairs(pairs, seed)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        start = 0
        for split, size in sizes.items():
            chunk = drawn[start : start + size]
            start += size
            for suffix, column in (("en", 0), ("de", 1), ("align", 2)):
                (out / f"{split}.{suffix}").write_text("".join(f"{p[column]}\n" for p in chunk), encoding="utf-8")
    except OSError as err:
        raise NMTError(f"{out}: cannot write the sample corpus there ({err.strerror or err})") from err
    logger.info("sample corpus in %s: %s", out, ", ".join(f"{s} {n}" for s, n in sizes.items()))
    return sizes
