"""Library checks: safe templates and the context budget (no service needed beyond a tokenizer)."""

from __future__ import annotations

import pytest

from prompts.assemble import ContextOverflow, PromptParts, assemble_chat, assemble_text
from prompts.optimize import ensemble_predict, exact_match, f1, label_set, split
from prompts.rag import Passage
from prompts.template import PromptTemplate, TemplateError


@pytest.mark.parametrize(
    "bad",
    [
        "{question.__class__.__init__.__globals__}",
        "{question[0]}",
        "{question!r}",
        "{question:>99999}",
        "{os}",
        "{{question}}",  # escaped braces: no {question} placeholder left
        "{question",
        "{0}{question}",
        "{}{question}",
    ],
)
def test_unsafe_or_broken_templates_are_rejected(bad: str) -> None:
    with pytest.raises(TemplateError):
        PromptTemplate.parse(bad)


def test_template_substitutes_values_literally() -> None:
    t = PromptTemplate.parse("Q: {question}\n{{literal}}\n{context}")
    assert (
        t.render(question="{context} {0.__class__}", context="C")
        == "Q: {context} {0.__class__}\n{literal}\nC"
    )


def parts(
    n_passages: int = 0, n_turns: int = 0, template: str = "{context}\n\nQuestion: {question}"
) -> PromptParts:
    return PromptParts(
        template=PromptTemplate.parse(template),
        question="When must the invoice be paid?",
        system="You are a legal assistant.",
        passages=[
            Passage(f"Passage {i}. " + "The buyer pays within thirty days. " * 40, f"doc{i}")
            for i in range(n_passages)
        ],
        history=[
            {"role": "user" if i % 2 == 0 else "assistant", "content": f"Turn {i}. " + "blah " * 60}
            for i in range(n_turns)
        ],
    )


def test_budget_drops_lowest_passages_first(engine) -> None:
    assembled = assemble_chat(engine.tokenizer, parts(n_passages=8, n_turns=2), window=1500, reserve=200)
    assert 0 < assembled.passages_used < 8 and assembled.turns_dropped == 0
    assert len(assembled.prompt.token_ids) + 200 <= 1500
    text = assembled.prompt.text
    assert "Passage 0." in text and "Passage 7." not in text
    assert "When must the invoice be paid?" in text and "You are a legal assistant." in text


def test_budget_then_drops_oldest_turns(engine) -> None:
    assembled = assemble_chat(engine.tokenizer, parts(n_passages=3, n_turns=30), window=1000, reserve=200)
    assert assembled.passages_used == 0 and 0 < assembled.turns_dropped < 30
    text = assembled.prompt.text
    assert "Turn 29." in text and "Turn 0." not in text
    assert len(assembled.prompt.token_ids) + 200 <= 1000


def test_budget_never_drops_question_or_system(engine) -> None:
    with pytest.raises(ContextOverflow):
        assemble_chat(engine.tokenizer, parts(), window=40, reserve=20)
    text = assemble_text(engine.tokenizer, parts(n_passages=5), window=700, reserve=100)
    assert text.passages_used < 5 and "When must the invoice be paid?" in text.prompt.text


def test_examples_become_turns_or_text(engine) -> None:
    p = parts()
    p.examples = [("Is it late?", "yes")]
    as_turns = assemble_chat(engine.tokenizer, p, 2048, 10)
    assert as_turns.messages[1:3] == [
        {"role": "user", "content": "Is it late?"},
        {"role": "assistant", "content": "yes"},
    ]
    p.template = PromptTemplate.parse("{examples}\n\nInput: {question}\nOutput:")
    inline = assemble_chat(engine.tokenizer, p, 2048, 10)
    assert len(inline.messages) == 2 and "Input: Is it late?\nOutput: yes" in inline.messages[1]["content"]


def test_optimizer_helpers() -> None:
    train, held = split(10, 0.3, seed=1)
    assert len(held) == 3 and sorted(train + held) == list(range(10)) and split(10, 0.3, 1) == (train, held)
    assert exact_match("Paris.", "paris") == 1.0 and exact_match("Lyon", "Paris") == 0.0
    assert f1("the cat sat", "a cat sat down") == pytest.approx(2 * (2 / 3) * (2 / 4) / (2 / 3 + 2 / 4))
    assert label_set(["pos", "neg", "pos", "neg"]) == ["neg", "pos"] and label_set(["a", "b", "c"]) is None
    assert ensemble_predict([[-1.0, -2.0], [-3.0, -0.5], [-0.1, -4.0]]) == 0
