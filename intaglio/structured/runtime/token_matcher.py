"""TokenMatcher: what the engine and the executor call on a structured request's matcher.

Every backend's matcher has these three methods (ours is runtime/matcher.py's GrammarMatcher,
xgrammar's is wrapped in backends/xgrammar_backend.py); nothing else is called from outside
`intaglio.structured`.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class TokenMatcher(Protocol):
    def accept_token(self, token_id: int) -> bool:
        """Advance by one sampled token; False (state unchanged) if the grammar forbids it."""
        ...

    def is_terminated(self) -> bool:
        """True once nothing but the end can follow (or EOS was accepted)."""
        ...

    def rollback(self, num_tokens: int) -> None:
        """Undo the last num_tokens accepted tokens (speculative drafts that were only tried)."""
        ...

    def fill_next_token_bitmask(self, out: np.ndarray) -> None:
        """Write the allowed next tokens into out: [>= ceil(vocab_size / 8)] uint8, bit t of
        byte t // 8 is token t (little bit order)."""
        ...
