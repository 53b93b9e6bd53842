"""Target: the distribution each row of a step samples from, kept compact where it can be.

When every random row keeps at most its top-k tokens, the chain runs on those candidates only
and the target stays [B, k] (token ids ascending per row, -inf for the ones a row dropped); the
whole [B, V] tensor is built only when asked for (`full`: processed logprobs, tests).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Target:
    logits: torch.Tensor  # [B, C] float32 logits of each row's candidates
    index: torch.Tensor | None  # [B, C] int64 token ids; None: the whole vocabulary in id order
    vocab_size: int
    # Greedy rows in a mixed batch take the argmax of the chain's result before temperature;
    # None when no row is greedy (an all-greedy batch's `logits` are that result).
    greedy: torch.Tensor | None = None  # [B] bool
    untempered: torch.Tensor | None = None  # [B, V] float32

    def full(self) -> torch.Tensor:
        """[B, V] float32 logits, -inf where a row's token is not a candidate."""
        out = self.logits
        if self.index is not None:
            shape = (self.logits.shape[0], self.vocab_size)
            out = self.logits.new_full(shape, float("-inf")).scatter_(1, self.index, self.logits)
        if self.greedy is not None and self.untempered is not None:
            out = torch.where(self.greedy[:, None], self.untempered, out)
        return out

    def log_prob(self, token_ids: torch.Tensor) -> torch.Tensor:
        """[B] log-probability of each row's token under its (random) row's target."""
        logp = self.logits.log_softmax(dim=-1)
        if self.index is None:
            column = token_ids[:, None]
        else:  # a token outside a row's candidates reads column 0 (only greedy rows do)
            column = (self.index == token_ids[:, None]).to(torch.uint8).argmax(dim=-1, keepdim=True)
        return logp.gather(1, column).squeeze(1)
