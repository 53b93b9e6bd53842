"""The programming model for search: branches of text that a program grows, forks and prunes.

A search program is an `async def` function that takes a `Search` and awaits its operations:

    async def best_of_4(s: Search) -> Branch:
        root = s.root(messages)
        answers = await s.gen_all(s.fork(root, 4), temperature=0.8, max_tokens=64)
        return max(answers, key=lambda b: b.mean_logprob)

Programs are plain coroutines, but no asyncio event loop runs them: the `ProgramRunner`
(runner.py) resumes every program whose operations are ready, then runs one engine step for all
of them together, so the branches of many programs share the engine's batches, its prefix cache
and its copy-on-write forks. Branches are immutable values; growing one gives a new one.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from intaglio.api.chat_prompt import Conversation

if TYPE_CHECKING:
    from intaglio.search.runner import ProgramState


class ForkGroup:
    """Branches forked together: their next gens run as one n-sample engine request, so the KV
    they share is computed and held once."""


@dataclass(frozen=True)
class Branch:
    """A context (prompt and everything generated on it) and what its gens produced."""

    token_ids: tuple[int, ...]
    num_root_tokens: int  # the root prompt's length: the rest was generated or appended
    text: str = ""  # everything after the root prompt, as text
    logprob: float = 0.0  # summed log-probabilities of the generated tokens (raw model)
    num_generated: int = 0
    finish_reason: str | None = None  # of the last gen: stop, length, abort (pruned or budget)
    stop_reason: str | int | None = None  # the stop string or token id that ended it
    fork_group: ForkGroup | None = field(default=None, compare=False)

    @property
    def mean_logprob(self) -> float:
        return self.logprob / self.num_generated if self.num_generated else 0.0


@dataclass
class Pending:
    """A launched gen: `n` samples of one context, filled as the engine produces them."""

    request_id: str
    branch: Branch
    n: int
    token_ids: list[list[int]] = field(default_factory=list)
    texts: list[list[str]] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reasons: list[str | None] = field(default_factory=list)
    stop_reasons: list[str | int | None] = field(default_factory=list)
    done: bool = False
    # Beam search: its width, and the tokens it may generate (held against a token budget,
    # since beams report only at the end).
    beam_width: int = 0
    reserved_tokens: int = 0
    # select/score requests: the log-probabilities of the last num_scored context tokens.
    prompt_logprobs: list[float] | None = None
    num_scored: int = 0

    def __post_init__(self) -> None:
        self.token_ids = [[] for _ in range(self.n)]
        self.texts = [[] for _ in range(self.n)]
        self.logprobs = [0.0] * self.n
        self.finish_reasons = [None] * self.n
        self.stop_reasons = [None] * self.n

    @property
    def num_live(self) -> int:
        return 0 if self.done else sum(r is None for r in self.finish_reasons)

    @property
    def num_finished(self) -> int:
        return self.n - self.num_live

    def results(self) -> list[Branch]:
        """One grown branch per sample (what it has so far, if it was pruned)."""
        b = self.branch
        return [
            Branch(
                (*b.token_ids, *tokens),
                b.num_root_tokens,
                b.text + "".join(texts),
                b.logprob + lp,
                b.num_generated + len(tokens),
                reason,
                stop,
            )
            for tokens, texts, lp, reason, stop in zip(
                self.token_ids, self.texts, self.logprobs, self.finish_reasons, self.stop_reasons
            )
        ]

    def finished_results(self) -> list[tuple[int, Branch]]:
        """(sample index, branch) of the samples that have finished."""
        return [(i, b) for i, b in enumerate(self.results()) if b.finish_reason is not None]


@dataclass
class Wait:
    """What a program awaits: `num_samples` finished samples among some pendings (all of them
    when None), or the first pending to finish."""

    pendings: list[Pending]
    first: bool = False
    num_samples: int | None = None

    def ready(self) -> bool:
        if self.first:
            return any(p.done for p in self.pendings)
        if self.num_samples is None:
            return all(p.done for p in self.pendings)
        return sum(p.num_finished for p in self.pendings) >= self.num_samples

    def __await__(self) -> Generator[Wait, None, None]:
        yield self


class Search:
    """What a program holds: operations on branches, run by its ProgramRunner."""

    def __init__(self, state: ProgramState) -> None:
        self._state = state

    # ------------------------------------------------------------ building branches
    def root(self, prompt: str | Sequence[int] | Conversation) -> Branch:
        """A branch holding a prompt: text, token ids, or chat messages (the chat template)."""
        ids = self._state.runner.encode_prompt(prompt)
        return Branch(tuple(ids), len(ids))

    def extend(self, branch: Branch, text: str) -> Branch:
        """The branch with `text` appended (tokenized on its own)."""
        ids = self._state.runner.encode_text(text)
        return replace(branch, token_ids=(*branch.token_ids, *ids), text=branch.text + text)

    def join(self, parent: Branch, branches: Sequence[Branch], separator: str = "\n") -> Branch:
        """The parent with the text each branch added to it, in order, appended."""
        added = [b.text[len(parent.text) :] for b in branches]
        return self.extend(parent, separator.join(added))

    @staticmethod
    def fork(branch: Branch, n: int) -> list[Branch]:
        """n copies whose next gens share the branch's KV (one engine request of n samples)."""
        group = ForkGroup()
        return [replace(branch, fork_group=group) for _ in range(n)]

    # ------------------------------------------------------------ generating
    def launch(self, branches: Sequence[Branch], **params: Any) -> list[Pending]:
        """Start a gen on every branch (forks of one branch go together); do not wait."""
        return self._state.launch(branches, params)

    async def gen(self, branch: Branch, **params: Any) -> Branch:
        """Generate on one branch with SamplingParams fields (stop, max_tokens, structured...)."""
        return (await self.gen_all([branch], **params))[0]

    async def gen_all(self, branches: Sequence[Branch], **params: Any) -> list[Branch]:
        pendings = self.launch(branches, **params)
        await Wait(pendings)
        return [b for p in pendings for b in p.results()]

    async def first(self, pendings: Sequence[Pending]) -> Pending:
        """Wait for the first of `pendings` to finish (one already finished counts)."""
        await Wait(list(pendings), first=True)
        return next(p for p in pendings if p.done)

    async def wait(self, pendings: Sequence[Pending], num_samples: int | None = None) -> None:
        """Wait until `num_samples` of their samples have finished (all when None)."""
        await Wait(list(pendings), num_samples=num_samples)

    def prune(self, pending: Pending) -> None:
        """Abort a gen: its samples end as they are and their KV returns to the pool now."""
        self._state.prune(pending)

    # ------------------------------------------------------------ judging
    async def score(self, branch: Branch, text: str) -> float:
        """Summed log-probability of `text` following the branch (e.g. a judge's "Yes")."""
        return sum((await self._scores(branch, [text]))[0])

    async def select(
        self, branch: Branch, options: Sequence[str], normalize: bool = True
    ) -> tuple[Branch, int]:
        """Append the option the model finds likeliest after the branch (mean log-probability
        per token when normalize, else summed); returns the grown branch and its index."""
        scores = await self._scores(branch, options)
        values = [sum(s) / len(s) if normalize else sum(s) for s in scores]
        best = max(range(len(options)), key=lambda i: values[i])
        return self.extend(branch, options[best]), best

    async def _scores(self, branch: Branch, texts: Sequence[str]) -> list[list[float]]:
        pendings = [self._state.launch_score(self.extend(branch, t), branch) for t in texts]
        await Wait(pendings)
        return [p.prompt_logprobs or [0.0] for p in pendings]

    # ------------------------------------------------------------ budgets
    @property
    def exhausted(self) -> bool:
        """The program's compute budget ran out: gens launched now return nothing new."""
        return self._state.exhausted

    @property
    def tokens_left(self) -> int | None:
        return self._state.tokens_left
