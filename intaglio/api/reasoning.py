"""Splitting a reasoning model's output into its thinking and its answer, by text markers.

The model thinks between a start and an end marker (`<think>` ... `</think>`). A chat template
may open the thinking itself (the prompt ends inside a think block), in which case the output
starts in reasoning. The split is exact: reasoning + content, with the markers put back where
they were, is the text. Streaming holds back only what could be the start of a marker.
"""

from __future__ import annotations


def starts_in_reasoning(prompt: str, start: str, end: str) -> bool:
    """True when the prompt leaves a think block open (the template began the thinking)."""
    return prompt.rfind(start) > prompt.rfind(end)


class ReasoningSplitter:
    """One sample's text, fed in pieces, as (reasoning, content) pieces."""

    def __init__(self, start: str, end: str, in_reasoning: bool = False) -> None:
        self.start, self.end = start, end
        self.in_reasoning = in_reasoning
        self._held = ""  # a tail that may be the beginning of the next marker

    def feed(self, text: str) -> tuple[str, str]:
        reasoning: list[str] = []
        content: list[str] = []
        pending = self._held + text
        while True:
            marker = self.end if self.in_reasoning else self.start
            out = reasoning if self.in_reasoning else content
            at = pending.find(marker)
            if at < 0:
                keep = _partial_suffix(pending, marker)
                out.append(pending[: len(pending) - keep])
                self._held = pending[len(pending) - keep :]
                return "".join(reasoning), "".join(content)
            out.append(pending[:at])
            pending = pending[at + len(marker) :]
            self.in_reasoning = not self.in_reasoning

    def finish(self) -> tuple[str, str]:
        """The text held back at the end: it was no marker after all."""
        held, self._held = self._held, ""
        return (held, "") if self.in_reasoning else ("", held)


def split_reasoning(text: str, start: str, end: str, in_reasoning: bool = False) -> tuple[str, str]:
    """(reasoning, content) of a whole text."""
    splitter = ReasoningSplitter(start, end, in_reasoning)
    r1, c1 = splitter.feed(text)
    r2, c2 = splitter.finish()
    return r1 + r2, c1 + c2


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of text that is a proper prefix of marker."""
    for n in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0


def message_fields(reasoning: str, content: str, stream: bool) -> dict[str, str | None]:
    """Chat message (or streamed delta) fields: the thinking under SGLang's name
    (reasoning_content) and vLLM's (reasoning); content holds only the answer. A delta carries
    only the fields that grew."""
    if stream:
        fields: dict[str, str | None] = {}
        if reasoning:
            fields = {"reasoning_content": reasoning, "reasoning": reasoning}
        return {**fields, "content": content} if content else fields
    return {
        "content": content,
        "reasoning_content": reasoning or None,
        "reasoning": reasoning or None,
    }
