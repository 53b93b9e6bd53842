"""Speculative decoding: proposers of draft tokens, the adaptive draft length, the accept walk.

The engine core asks a proposer for draft tokens after each step; the scheduler gives a decode
1 + k tokens of the step's budget; the executor verifies all k + 1 positions in one forward
pass and `accepted_tokens` keeps the drafts the target would have drawn itself (verify.py).
"""

from intaglio.spec.controller import DraftLengthController, acceptance_rate
from intaglio.spec.proposer import Proposer, build_proposer
from intaglio.spec.stats import SpecStats
from intaglio.spec.verify import accepted_tokens, position_seed

__all__ = [
    "DraftLengthController",
    "Proposer",
    "SpecStats",
    "acceptance_rate",
    "accepted_tokens",
    "build_proposer",
    "position_seed",
]
