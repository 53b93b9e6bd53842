"""Incremental detokenization and stop strings, one request at a time.

Byte-level tokens may end inside a UTF-8 character, so text is only released once the decoded
tail no longer ends in the replacement character. Stop strings are searched in the new text
plus enough of the old to catch a stop that spans token boundaries.
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
        self.text = ""
        self._prefix_offset = 0  # tokens before this never change the decoded tail
        self._read_offset = 0  # tokens up to here are already in self.text
        # Streaming holds back a tail that might still turn into a stop string.
        self._hold = max((len(s) for s in stop), default=1) - 1

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
        search_from = max(len(self.text) - self._hold, 0)
        self.text += new_text
        for stop in self.stop:
            at = self.text.find(stop, search_from)
            if at != -1:
                self.text = self.text[: at + len(stop) if self.include_stop else at]
                return stop
        return None

    def stream_text(self, finished: bool) -> str:
        """The text that is safe to show now: all of it once finished."""
        if finished or not self.stop:
            return self.text
        return self.text[: max(len(self.text) - self._hold, 0)]
