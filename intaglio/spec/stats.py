"""Counters of speculative decoding, with the meaning vLLM gives its Prometheus metrics."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SpecStats:
    num_drafts: int = 0  # verification steps of one request with at least one draft token
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0
    accepted_per_position: list[int] = field(default_factory=list)  # [i]: drafts kept at i
    # [i]: verifications that reached draft i (it existed and drafts 0..i-1 were kept), so
    # accepted / tried at i is the acceptance profile the simulator replays (sim/speculation.py)
    tried_per_position: list[int] = field(default_factory=list)

    def record(self, drafts: list[int], num_accepted: int) -> None:
        self.num_drafts += 1
        self.num_draft_tokens += len(drafts)
        self.num_accepted_tokens += num_accepted
        kept = [1] * num_accepted
        _add_to(self.accepted_per_position, kept + [0] * (len(drafts) - num_accepted))
        _add_to(self.tried_per_position, [1] * min(num_accepted + 1, len(drafts)))

    def add(self, other: SpecStats) -> None:
        self.num_drafts += other.num_drafts
        self.num_draft_tokens += other.num_draft_tokens
        self.num_accepted_tokens += other.num_accepted_tokens
        _add_to(self.accepted_per_position, other.accepted_per_position)
        _add_to(self.tried_per_position, other.tried_per_position)

    @property
    def mean_acceptance_length(self) -> float | None:
        """Tokens per verification step: the accepted drafts plus the one drawn after them."""
        if not self.num_drafts:
            return None
        return 1.0 + self.num_accepted_tokens / self.num_drafts


def _add_to(counts: list[int], more: list[int]) -> None:
    """counts[i] += more[i], growing counts as needed."""
    counts += [0] * (len(more) - len(counts))
    for i, n in enumerate(more):
        counts[i] += n
