"""Incremental detokenization and stop strings, one request at a time.

Byte-level tokens may end inside a UTF-8 character, so text is only released once the decoded
tail no longer ends in the replacement character. Stop strings are searched in the new text
plus enough of the old to catch a stop that spans token boundaries.

Each update costs O(new tokens): the text is kept as the pieces each update added (joined only
when the whole text is asked for), and only a tail as long as the longest stop string is kept
for the search.
"""

from __future__ import annotations

from typing import Any


class IncrementalDetokenizer:
    def __init__(
        self, tokenizer: Any, stop: tuple[str, ...], include_stop: bool, skip_special: bool
    ) -> None:
        self.tokenizer = tokenizer
        self.stop = stop
        self.include_stop = include_stop
        self.skip_special = skip_special
        self._pieces: list[str] = []
        self.length = 0  # characters of text so far
        self._prefix_offset = 0  # tokens before this never change the decoded tail
        self._read_offset = 0  # tokens up to here are already in the text
        # Streaming holds back a tail that might still turn into a stop string.
        self._hold = max((len(s) for s in stop), default=1) - 1
        self._tail = ""  # the text's last `_hold` characters, where a stop may begin

    @property
    def text(self) -> str:
        """The whole text so far (joined once, then kept as one piece)."""
        if len(self._pieces) > 1:
            self._pieces = ["".join(self._pieces)]
        return self._pieces[0] if self._pieces else ""

    def update(self, token_ids: list[int], final: bool = False) -> str | None:
        """Take the request's output tokens (all so far); return the stop string hit, if any.

        `final` releases a trailing partial character too, as the replacement character.
        """
        decode = self.tokenizer.decode
        prefix = decode(
            token_ids[self._prefix_offset : self._read_offset],
            skip_special_tokens=self.skip_special,
        )
        full = decode(token_ids[self._prefix_offset :], skip_special_tokens=self.skip_special)
        if (full.endswith("\ufffd") and not final) or len(full) <= len(prefix):
            return None  # an incomplete character, or a token that decodes to nothing yet
        new_text = full[len(prefix) :]
        self._prefix_offset, self._read_offset = self._read_offset, len(token_ids)
        window = self._tail + new_text
        self._pieces.append(new_text)
        self.length += len(new_text)
        for stop in self.stop:
            at = window.find(stop)
            if at != -1:
                end = at + len(stop) if self.include_stop else at
                self._truncate(self.length - len(window) + end)
                return stop
        self._tail = window[len(window) - self._hold :] if self._hold else ""
        return None

    def _truncate(self, length: int) -> None:
        self._pieces = [self.text[:length]]
        self.length = length

    def safe_length(self, finished: bool) -> int:
        """How much of the text is safe to show now: all of it once finished."""
        if finished or not self.stop:
            return self.length
        return max(self.length - self._hold, 0)

    def stream_text(self, finished: bool) -> str:
        """The text that is safe to show now."""
        return self.text[: self.safe_length(finished)]

    def text_range(self, start: int, end: int) -> str:
        """text[start:end] for a range near the end, reading only the pieces it spans."""
        parts = []
        pos = self.length
        for piece in reversed(self._pieces):
            if pos <= start:
                break
            lo = pos - len(piece)
            parts.append(piece[max(start - lo, 0) : max(min(end, pos) - lo, 0)])
            pos = lo
        return "".join(reversed(parts))
