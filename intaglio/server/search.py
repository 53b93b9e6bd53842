"""The `search` field of chat and completion requests: a search program instead of one
generation. The program runs on the engine thread beside every other request; its choice comes
back as the response's one choice, and what it cost as the response's `search` object."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from intaglio.engine.outputs import CompletionOutput, RequestMetrics, RequestOutput
from intaglio.sampling.params import SamplingParams
from intaglio.search import Budget, Search, best_of_n, judge, mean_logprob, self_consistency
from intaglio.search.program import Branch
from intaglio.server.errors import bad_request
from intaglio.server.protocol import SearchSpec
from intaglio.server.state import ServerState

_LAST_NUMBER = r"-?\d+(?:\.\d+)?"
_OWN_FIELDS = ("n", "logprobs", "output_kind")  # the runner sets these per gen


def check_search(spec: SearchSpec, params: SamplingParams, stream: bool) -> re.Pattern[str]:
    """Refuse what a search cannot honour; return the answer pattern."""
    if stream:
        raise bad_request("search does not stream its choice; use stream=false", "search")
    if params.n != 1 or params.use_beam_search:
        raise bad_request("search makes its own samples; leave n and beam search unset", "search")
    try:
        return re.compile(spec.answer_regex or _LAST_NUMBER)
    except re.error as e:
        raise bad_request(f"search.answer_regex is not a valid regex: {e}", "search") from None


def extractor(pattern: re.Pattern[str]) -> Any:
    def extract(text: str) -> str | None:
        matches = list(pattern.finditer(text))
        if not matches:
            return None
        last = matches[-1]
        return (last.group(1) if pattern.groups else last.group(0)).strip()

    return extract


async def run_search(
    state: ServerState,
    spec: SearchSpec,
    pattern: re.Pattern[str],
    request_id: str,
    token_ids: list[int],
    params: SamplingParams,
) -> tuple[RequestOutput, dict[str, Any]]:
    """Run the program; its choice as a one-sample RequestOutput, and its accounting."""
    fields = {
        f.name: getattr(params, f.name)
        for f in dataclasses.fields(params)
        if f.name not in _OWN_FIELDS
    }
    extract = extractor(pattern)
    votes: dict[str, float] = {}

    async def program(s: Search) -> Branch | None:
        root = s.root(token_ids)
        if spec.method == "best_of_n":
            scorer = judge(spec.judge_question) if spec.scorer == "judge" else mean_logprob
            return await best_of_n(s, root, spec.n, scorer, **fields)
        vote = await self_consistency(
            s, root, spec.n, extract, spec.weighted, spec.early_stop, **fields
        )
        votes.update(vote.weights)
        agreeing = [b for b in vote.branches if extract(b.text) == vote.answer]
        return (agreeing or vote.branches)[0] if vote.branches else None

    budget = Budget(spec.max_search_tokens, spec.max_search_seconds)
    result = await state.engine.run_program(program, budget)
    if result.error is not None:
        raise bad_request(result.error.split(": ", 1)[-1], "search")
    branch = result.value
    chosen = CompletionOutput(0, "", [], "abort")
    if branch is not None:
        generated = list(branch.token_ids[branch.num_root_tokens :])
        chosen = CompletionOutput(0, branch.text, generated, branch.finish_reason)
    metrics = RequestMetrics(0.0)
    out = RequestOutput(request_id, None, token_ids, [chosen], True, metrics)
    stats = dataclasses.asdict(result.stats)
    info = {"method": spec.method, "n": spec.n, **stats}
    if spec.method == "self_consistency":
        info["votes"] = votes
    return out, info
