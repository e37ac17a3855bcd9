"""How the RAG sets are labelled and how counterfactual passages are made (no model needed)."""

from __future__ import annotations

from latentwatch.training.rag import counterfactual, followed


def test_followed_compares_words_not_spacing_or_case():
    assert followed("The season ends on December 9, 2017.", ["December 9 , 2017"])
    assert followed("it was designed by ilse marquardt", ["Ilse Marquardt"])
    assert not followed("Alexander Graham Bell made it possible.", ["Thomas Edison"])
    assert not followed("", ["1931"])


def test_a_long_gold_clause_is_followed_when_the_answer_names_its_entity():
    gold = ["the Dutch engineer Ilse Marquardt of the Varnholt works"]
    assert followed("Ilse Marquardt designed it.", gold)
    # a run of stop words alone is no evidence
    assert not followed("It was one of the first bridges.", gold)


QUESTIONS = [
    {"question": "When was the Varnholt Bridge finished?", "answers": ["1931"], "kind": "dev",
     "context": "The Varnholt Bridge was finished in 1931. By 1931 it carried trains."},
    {"question": "When did the Osterwick ferry close?", "answers": ["1958"], "kind": "dev",
     "context": "The Osterwick ferry closed in 1958."},
    {"question": "Who designed the Varnholt Bridge?", "answers": ["Ilse Marquardt"], "kind": "dev",
     "context": "The bridge was designed by Ilse Marquardt."},
    {"question": "Who founded Osterwick?", "answers": ["Tobias Brenner"], "kind": "dev",
     "context": "Osterwick was founded by Tobias Brenner."},
    {"question": "Why did it close?", "answers": ["falling demand after the new road"], "kind": "dev",
     "context": "It closed because of falling demand after the new road."},
]  # fmt: skip


def test_counterfactual_swaps_every_mention_for_another_answer_of_the_same_type():
    swapped = {q["question"]: q for q in counterfactual(QUESTIONS)}
    assert "Why did it close?" not in swapped  # a clause has no type to swap within
    year = swapped["When was the Varnholt Bridge finished?"]
    assert year["answers"] == ["1958"] and year["replaced"] == "1931" and year["kind"] == "counterfactual"
    assert "1931" not in year["context"] and year["context"].count("1958") == 2
    name = swapped["Who designed the Varnholt Bridge?"]
    assert name["answers"] == ["Tobias Brenner"] and "Marquardt" not in name["context"]
