"""Delta outputs that queue up while a stream is busy are merged before the next chunk: every
per-token field of both must survive the merge."""

from __future__ import annotations

import asyncio

from intaglio.engine.outputs import CompletionOutput, RequestMetrics, RequestOutput
from intaglio.server.streams import next_outputs


def _delta(tokens: list[int], confidences: list[float]) -> RequestOutput:
    sample = CompletionOutput(
        index=0,
        text="".join(f"<{t}>" for t in tokens),
        token_ids=tokens,
        logprobs=[{t: -0.5} for t in tokens],
        confidences=confidences,
    )
    return RequestOutput("r", None, [1, 2], [sample], False, RequestMetrics(arrival_time=0.0))


def test_merged_deltas_keep_every_token_s_text_logprobs_and_confidences() -> None:
    async def drain() -> list[RequestOutput]:
        queue: asyncio.Queue[RequestOutput] = asyncio.Queue()
        queue.put_nowait(_delta([7], [1.5]))
        queue.put_nowait(_delta([8, 9], [2.5, 3.5]))
        return await next_outputs(queue)

    (merged,) = asyncio.run(drain())
    (sample,) = merged.outputs
    assert sample.token_ids == [7, 8, 9]
    assert sample.text == "<7><8><9>"
    assert sample.logprobs == [{7: -0.5}, {8: -0.5}, {9: -0.5}]
    assert sample.confidences == [1.5, 2.5, 3.5]
