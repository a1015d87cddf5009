"""The sample corpus: determinism, disjoint splits, alignments in range, hand-checked constructions."""

from __future__ import annotations

import random
import re

import pytest

from nmt.cli.sample import main
from nmt.sample import (
    ADVERBS,
    DESTINATIONS,
    MAX_WORDS,
    MIN_WORDS,
    NOUNS,
    PLACES,
    VERB_GROUPS,
    VERBS,
    Clause,
    Generator,
    Tok,
    _capitalised,
    _links,
    _written,
    generate_pairs,
    split_sizes,
    write_sample_corpus,
)

LINK = re.compile(r"(\d+)([-?])(\d+)")


def noun(en: str):
    return next(n for n in [*NOUNS, *PLACES] if n.en == en)


def verb(en: str):
    return next(v for v in VERBS if v.en[0] == en)


def texts(words) -> str:
    return " ".join(t.text for t in words)


@pytest.fixture
def g() -> Generator:
    return Generator(random.Random(0))


def test_same_seed_same_corpus_other_seed_other_corpus() -> None:
    assert generate_pairs(300, seed=5) == generate_pairs(300, seed=5)
    assert generate_pairs(300, seed=5) != generate_pairs(300, seed=6)


def test_the_text_is_written_as_text_is_with_no_space_before_punctuation() -> None:
    for pair in generate_pairs(300, seed=5):
        for text in (pair.en, pair.de):
            assert re.search(r"\s[,.]", text) is None, text  # "Katze, weil", not "Katze , weil"
            assert text.endswith(".") and text[0].isupper() and "  " not in text


def test_written_splits_are_disjoint_and_aligned(tmp_path) -> None:
    sizes = write_sample_corpus(tmp_path, pairs=600, seed=3)
    assert sizes == {"train": 500, "dev": 50, "test": 50}
    sides = {}
    for split, size in sizes.items():
        en, de, align = (
            (tmp_path / f"{split}.{ext}").read_text(encoding="utf-8").split("\n") for ext in ("en", "de", "align")
        )
        assert en[-1] == de[-1] == align[-1] == ""  # every line ends with a newline
        en, de, align = en[:-1], de[:-1], align[:-1]
        assert len(en) == len(de) == len(align) == size
        sides[split] = (set(en), set(de))
        for src, tgt, links in zip(en, de, align, strict=True):
            n_src, n_tgt = len(src.split()), len(tgt.split())
            assert MIN_WORDS <= n_src <= MAX_WORDS and MIN_WORDS <= n_tgt <= MAX_WORDS
            parsed = [LINK.fullmatch(link) for link in links.split()]
            assert all(parsed), links
            pairs = [(int(m[1]), int(m[3])) for m in parsed]
            assert all(0 <= i < n_src and 0 <= j < n_tgt for i, j in pairs)
            assert len(set(pairs)) == len(pairs)  # no link twice, not both sure and possible
            # every word on either side has a counterpart, sure or possible
            assert {i for i, _ in pairs} == set(range(n_src)) and {j for _, j in pairs} == set(range(n_tgt))
    for side in (0, 1):
        train, dev, test = (sides[s][side] for s in ("train", "dev", "test"))
        assert len(train) == 500 and not (train & test) and not (train & dev) and not (dev & test)


def test_cli_writes_the_same_corpus(tmp_path) -> None:
    assert main([str(tmp_path / "cli"), "--pairs", "120", "--seed", "9", "--quiet"]) == 0
    write_sample_corpus(tmp_path / "lib", pairs=120, seed=9)
    for name in ("train.en", "dev.de", "test.align"):
        assert (tmp_path / "cli" / name).read_bytes() == (tmp_path / "lib" / name).read_bytes()


def test_cli_user_errors_exit_1_with_one_line(tmp_path, capsys) -> None:
    assert main([str(tmp_path), "--pairs", "2"]) == 1
    assert "too few" in capsys.readouterr().err
    (tmp_path / "file").write_text("not a directory")
    assert main([str(tmp_path / "file"), "--pairs", "12"]) == 1
    err = capsys.readouterr().err
    assert "cannot write the sample corpus there" in err and "Traceback" not in err


def test_split_sizes() -> None:
    assert split_sizes(6000) == {"train": 5000, "dev": 500, "test": 500}
    assert split_sizes(3) == {"train": 1, "dev": 1, "test": 1}


@pytest.mark.parametrize(
    ("en", "case", "definite", "adjective", "expected"),
    [
        ("dog", "nom", True, ("big", "groß"), "der große Hund"),
        ("dog", "acc", False, ("big", "groß"), "einen großen Hund"),
        ("child", "nom", False, ("small", "klein"), "ein kleines Kind"),
        ("cat", "dat", True, ("tired", "müde"), "der müden Katze"),
        ("apple", "acc", False, None, "einen Apfel"),
        ("apple tree", "dat", False, ("old", "alt"), "einem alten Apfelbaum"),
    ],
)
def test_articles_and_adjective_endings(g, en, case, definite, adjective, expected) -> None:
    np_en, np_de = g.noun_phrase(noun(en), case, definite=definite, adjective=adjective)
    assert texts(np_de) == expected
    # one English word per German word, except the compound's two for one
    assert _links(np_en, np_de) == (
        "0-0 1-1 2-2 3-2" if en == "apple tree" else " ".join(f"{i}-{i}" for i in range(len(np_en)))
    )


def test_a_or_an(g) -> None:
    assert texts(g.noun_phrase(noun("apple"), "nom", definite=False, adjective=None)[0]) == "an apple"
    assert texts(g.noun_phrase(noun("apple"), "nom", definite=False, adjective=("red", "rot"))[0]) == "a red apple"


def clause(g: Generator, tense: str, verb_en: str, negated: bool, *, obj: str | None) -> Clause:
    """A clause built from fixed choices: "the dog" + verb group + "the <obj>" (accusative)."""
    v = verb(verb_en)
    subj_en, subj_de = g.noun_phrase(noun("dog"), "nom", definite=True, adjective=None)
    group = VERB_GROUPS[tense](g, v, negated)
    obj_en, obj_de = g.noun_phrase(noun(obj), "acc", definite=True, adjective=None) if obj else ([], [])
    return Clause(subj_en + group.en + obj_en, subj_de, group.finite, obj_de + group.nicht, group.final)


def test_hand_checked_verb_final_subordinate_clause(g) -> None:
    c = clause(g, "perfect", "sees", False, obj="cat")
    assert texts(c.en) == "the dog has seen the cat"
    assert texts(c.subordinate()) == "der Hund die Katze gesehen hat"
    # the-der dog-Hund has-hat(5) seen-gesehen(4) the-die(2) cat-Katze(3)
    assert _links(c.en, c.subordinate()) == "0-0 1-1 2-5 3-4 4-2 5-3"
    assert texts(c.main()) == "der Hund hat die Katze gesehen"
    assert texts(c.inverted()) == "hat der Hund die Katze gesehen"


def test_hand_checked_negation(g) -> None:
    c = clause(g, "simple", "sees", True, obj="cat")
    assert texts(c.en) == "the dog does not see the cat"
    assert texts(c.main()) == "der Hund sieht die Katze nicht"
    # "does" has no German word of its own: a possible link to "sieht"
    assert _links(c.en, c.main()) == "0-0 1-1 2?2 3-5 4-2 5-3 6-4"
    cannot = clause(g, "can", "swims", True, obj=None)
    assert (texts(cannot.en), texts(cannot.subordinate())) == ("the dog cannot swim", "der Hund nicht schwimmen kann")
    assert _links(cannot.en, cannot.subordinate()) == "0-0 1-1 2-2 2-4 3-3"


def test_hand_checked_wants_to(g) -> None:
    c = clause(g, "wants", "reads", False, obj="book")
    assert (texts(c.en), texts(c.main())) == ("the dog wants to read the book", "der Hund will das Buch lesen")
    assert _links(c.en, c.main()) == "0-0 1-1 2-2 3?5 4-5 5-3 6-4"


def test_hand_checked_phrases(g) -> None:
    assert _links(*g.place(noun("garden"))) == "0-0 1-0 2-1"  # in the garden -> im Garten
    kitchen_en, kitchen_de = g.place(noun("kitchen"))
    assert (texts(kitchen_en), texts(kitchen_de)) == ("in the kitchen", "in der Küche")
    school = next(d for d in DESTINATIONS if d[0] == "to school")
    assert _links(*g.phrase(*school)) == "0-0 1?1 1-2"  # to school -> in die Schule
    morning = next(a for a in ADVERBS if a[0] == "in the morning")
    assert _links(*g.phrase(*morning)) == "0-0 1-0 2-0"


def test_hand_checked_punctuation_joins_the_word_before_it_and_the_links_count_written_words(g) -> None:
    main = clause(g, "simple", "sleeps", False, obj=None)
    conj_en, conj_de = g.pair("because", "weil")
    sub = clause(g, "simple", "sees", False, obj="cat")
    en = _written([*_capitalised(main.en + conj_en + sub.en), Tok(".")])
    de = _written([*_capitalised([*main.main(), Tok(","), *conj_de, *sub.subordinate()]), Tok(".")])
    assert texts(en) == "The dog sleeps because the dog sees the cat."
    assert texts(de) == "Der Hund schläft, weil der Hund die Katze sieht."
    # the marks have no links of their own: "cat." is still the cat (7 in German), "sieht." still sees (6)
    assert _links(en, de) == "0-0 1-1 2-2 3-3 4-4 5-5 6-8 7-6 8-7"
