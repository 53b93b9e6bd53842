"""The reasoning splitter: exact in one go and in every way of cutting the text into pieces."""

from __future__ import annotations

import pytest

from intaglio.api.reasoning import ReasoningSplitter, split_reasoning, starts_in_reasoning

S, E = "<think>", "</think>"


@pytest.mark.parametrize(
    ("text", "opened", "reasoning", "content"),
    [
        ("<think>plan</think>answer", False, "plan", "answer"),
        ("plan</think>\n\nanswer", True, "plan", "\n\nanswer"),
        ("just an answer", False, "", "just an answer"),
        ("still thinking <thi", True, "still thinking <thi", ""),
        ("a <think>b</think> c <think>d</think>e", False, "bd", "a  c e"),
        ("<<think>x</think>>", False, "x", "<>"),
        ("no end </thin", False, "", "no end </thin"),
    ],
)
def test_split(text, opened, reasoning, content):
    assert split_reasoning(text, S, E, opened) == (reasoning, content)
    # Any cut of the text into two or three pieces gives the same split.
    for i in range(len(text) + 1):
        for j in range(i, len(text) + 1):
            splitter = ReasoningSplitter(S, E, opened)
            parts = [splitter.feed(p) for p in (text[:i], text[i:j], text[j:])]
            parts.append(splitter.finish())
            assert "".join(r for r, _ in parts) == reasoning
            assert "".join(c for _, c in parts) == content


def test_the_prompt_decides_where_the_output_starts():
    assert starts_in_reasoning("<|assistant|>\n<think>\n", S, E)
    assert not starts_in_reasoning("<think>a</think> answer. <|assistant|>", S, E)
    assert not starts_in_reasoning("plain prompt", S, E)
