"""Delta outputs: each step hands out only what is new, so the work per step of a stream does
not grow with the length already generated; the deltas add up to the full output."""

from __future__ import annotations

from intaglio import LLM, SamplingParams


class _CountingTokenizer:
    """The real tokenizer, recording how many ids each decode call was given."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self.decode_lengths: list[int] = []

    def decode(self, ids, **kwargs):
        self.decode_lengths.append(len(ids))
        return self._tokenizer.decode(ids, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


def test_stream_work_per_step_does_not_grow_with_length(checkpoint):
    llm = LLM(str(checkpoint("llama")), dtype="float32")
    counting = _CountingTokenizer(llm.tokenizer)
    llm.engine.tokenizer = counting
    n = 400
    params = SamplingParams(
        temperature=0.0, max_tokens=n, ignore_eos=True, logprobs=1, stop=["never-seen"]
    )
    deltas = list(
        llm.stream([[5, 6, 7]], params.__class__(**{**vars(params), "output_kind": "delta"}))
    )
    sizes = [
        (len(d.outputs[0].token_ids), len(d.outputs[0].logprobs or [])) for d in deltas if d.outputs
    ]
    assert max(sizes) == (1, 1)  # one new token and its logprob per step, at step 1 and step 400
    assert len(counting.decode_lengths) > n
    # The detokenizer reads only the tokens since the last complete text (a run of byte
    # tokens may make that a few), never the whole output: late calls read no more than early.
    lengths = counting.decode_lengths
    half = len(lengths) // 2
    assert max(lengths) < 32 and max(lengths[half:]) <= max(lengths[:half])
    full = llm.generate([[5, 6, 7]], params)[0].outputs[0]
    assert [t for d in deltas for c in d.outputs for t in c.token_ids] == full.token_ids
    assert "".join(c.text for d in deltas for c in d.outputs) == full.text
    assert deltas[-1].finished and deltas[-1].outputs[0].finish_reason == "length"
