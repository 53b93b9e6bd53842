"""SimulatedExecutor: the Executor seam with a cost model in place of the model.

It receives the scheduler's real SchedulerOutput, costs the step on a hardware description
(toolkit StepCostModel), advances a virtual clock by that time, and returns a synthetic token
for every request whose step reaches its end, exactly where ModelExecutor would sample one:
`synthetic_token`, or for a structured request the lowest token its grammar allows.

Requests that ask for logprobs (beam search ranks by them) get synthetic ones: the emitted
token likeliest, random others after it.

Speculative decoding is simulated with an acceptance profile measured by the real engine
(`acceptance[i]`: the chance that draft i is accepted when every draft before it was): each
verification keeps a random number of its drafts drawn from the profile, then one token. The
verification rows are costed as the target's rows; with a draft network (sim/speculation.py)
the executor also drafts, as ModelExecutor does, and adds the network's cost to the step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from intaglio.sim.speculation import DraftNetwork
from intaglio.step import ExecutorOutput, SchedulerOutput, SequenceView
from intaglio.toolkit.step_model import StepCostModel


@dataclass
class StepRecord:
    start_s: float
    duration_s: float
    num_seqs: int
    num_tokens: int
    num_prefill_tokens: int
    num_sampled: int  # tokens emitted (under speculation, several per request)
    flops: float
    bytes: float  # memory traffic
    draft_s: float = 0.0  # of duration_s, the draft network's share


class SimulatedExecutor:
    def __init__(
        self,
        step_model: StepCostModel,
        num_kv_blocks: int,
        block_size: int,
        synthetic_token: int = 0,
        num_local_kv_blocks: int = 0,
        acceptance: tuple[float, ...] = (),
        seed: int = 0,
        drafter: DraftNetwork | None = None,
        draft_rate: float = 1.0,
    ) -> None:
        cfg = step_model.cfg
        self.device = torch.device("cpu")
        self.num_kv_blocks = num_kv_blocks
        self.block_size = block_size
        self.vocab_size = cfg.vocab_size
        self.max_position_embeddings = cfg.max_position_embeddings
        # Chunked-attention layers' own pool (Llama 4, engine/chunked_kv.py), as planned.
        self.num_local_kv_blocks = num_local_kv_blocks
        self.attention_chunk_size = cfg.attention_chunk_size if num_local_kv_blocks else None
        self.step_model = step_model
        self.synthetic_token = synthetic_token
        self.clock_s = 0.0
        self.steps: list[StepRecord] = []
        self.acceptance = acceptance
        self.drafter = drafter
        self.draft_rate = draft_rate  # a lookup proposer's share of decode steps with drafts
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def execute(self, out: SchedulerOutput[SequenceView]) -> ExecutorOutput:
        n = len(out.scheduled)
        q = np.empty(n, dtype=np.int64)
        c = np.empty(n, dtype=np.int64)
        sampled: dict[str, list[int]] = {}
        logprobs: dict[str, list[dict[int, float]]] = {}
        prefill = num_rows = 0
        for i, s in enumerate(out.scheduled):
            r = s.request
            q[i] = s.num_new_tokens
            c[i] = r.num_computed_tokens + s.num_new_tokens
            # Tokens still inside the known sequence (prompt, or a recompute after preemption).
            prefill += max(0, min(s.num_new_tokens, r.num_tokens - 1 - r.num_computed_tokens))
            if s.samples:  # the step reaches the end: tokens are drawn (one per verified row)
                sampled[r.request_id] = self._tokens(r, s.spec_token_ids)
                num_rows += len(s.spec_token_ids) + 1
                if r.params.logprobs is not None:
                    logprobs[r.request_id] = self._logprobs(
                        sampled[r.request_id], r.params.logprobs
                    )
        duration, flops, traffic = self.step_model.estimate(q, c, num_rows)
        result = ExecutorOutput(sampled=sampled, logprobs=logprobs)
        draft_s = 0.0
        if self.drafter is not None:
            # Each sampling request's context once its emitted tokens are in.
            after = np.array(
                [
                    s.request.num_computed_tokens
                    + s.num_new_tokens
                    - len(s.spec_token_ids)
                    + len(sampled[s.request.request_id])
                    for s in out.scheduled
                    if s.request.request_id in sampled
                ],
                dtype=np.int64,
            )
            num = out.num_draft_tokens
            draft_s, draft_flops, draft_bytes = self.drafter.cost(q, c, after, num)
            duration += draft_s
            flops += draft_flops
            traffic += draft_bytes
            result.draft_token_ids = {rid: [self.synthetic_token] * num for rid in sampled}
        num_emitted = sum(len(tokens) for tokens in sampled.values())
        self.steps.append(
            StepRecord(
                self.clock_s,
                duration,
                n,
                int(q.sum()),
                prefill,
                num_emitted,
                flops,
                traffic,
                draft_s,
            )
        )
        self.clock_s += duration
        result.duration_s = duration
        return result

    def _logprobs(self, tokens: list[int], n: int) -> list[dict[int, float]]:
        """Synthetic logprob entries (what beam search ranks by): the emitted token first and
        likeliest, then n other random tokens, probabilities from a flat Dirichlet."""
        entries = []
        for token in tokens:
            others = self._rng.choice(
                self.vocab_size, size=min(n + 1, self.vocab_size), replace=False
            )
            top = [token, *[int(t) for t in others if t != token][:n]]
            probs = np.sort(self._rng.dirichlet(np.ones(len(top))))[::-1]
            entries.append({t: float(np.log(p)) for t, p in zip(top, probs)})
        return entries

    def _tokens(self, request: SequenceView, drafts: list[int]) -> list[int]:
        num_kept = 0
        while num_kept < min(len(drafts), len(self.acceptance)):
            if self._rng.random() >= self.acceptance[num_kept]:
                break
            num_kept += 1
        kept = drafts[:num_kept]
        matcher = request.matcher
        if matcher is None:
            return [*kept, self.synthetic_token]
        for token in kept:  # the speculator checked that the grammar accepts them
            matcher.accept_token(token)
        packed = np.zeros(-(-self.vocab_size // 8), dtype=np.uint8)
        matcher.fill_next_token_bitmask(packed)
        matcher.rollback(len(kept))
        allowed = np.flatnonzero(np.unpackbits(packed, bitorder="little"))
        return [*kept, int(allowed[0]) if len(allowed) else self.synthetic_token]
