"""Engine behaviour seen by a user: stops, seeds, n, bad input failing alone, streaming."""

from __future__ import annotations

import pytest

from intaglio import LLM, SamplingParams
from intaglio.model.config import ModelLoadError


@pytest.fixture(scope="module")
def llm(checkpoint):
    return LLM(str(checkpoint("llama")), dtype="float32")


def _greedy(**kw) -> SamplingParams:
    return SamplingParams(temperature=0.0, ignore_eos=True, **kw)


def test_stop_token_ids_and_max_tokens(llm):
    free = llm.generate([[5, 6, 7]], _greedy(max_tokens=8))[0].outputs[0]
    assert free.finish_reason == "length" and len(free.token_ids) == 8
    stop_id = free.token_ids[3]
    first = free.token_ids.index(stop_id)
    out = llm.generate([[5, 6, 7]], _greedy(max_tokens=8, stop_token_ids=[stop_id]))[0].outputs[0]
    assert out.finish_reason == "stop" and out.stop_reason == stop_id
    assert out.token_ids == free.token_ids[: first + 1]
    late = llm.generate(
        [[5, 6, 7]], _greedy(max_tokens=8, stop_token_ids=[stop_id], min_tokens=first + 2)
    )[0].outputs[0]
    # Until min_tokens the stop token is banned, so the continuation diverges and runs longer.
    assert stop_id not in late.token_ids[: first + 2]
    assert len(late.token_ids) >= first + 2


def test_eos_finishes_unless_ignored(checkpoint):
    llm = LLM(str(checkpoint("llama")), dtype="float32")
    free = llm.generate([[5, 6, 7]], _greedy(max_tokens=8))[0].outputs[0]
    # Declare the model's third greedy token its end-of-sequence token.
    eos = free.token_ids[2]
    llm.engine.eos_token_ids = (eos,)
    stopped = llm.generate([[5, 6, 7]], SamplingParams(temperature=0.0, max_tokens=8))[0]
    assert stopped.outputs[0].finish_reason == "stop"
    assert stopped.outputs[0].token_ids == free.token_ids[: free.token_ids.index(eos) + 1]
    ignored = llm.generate([[5, 6, 7]], _greedy(max_tokens=8))[0].outputs[0]
    assert ignored.finish_reason == "length" and ignored.token_ids == free.token_ids


def test_seed_reproducible_whatever_the_batch(llm):
    seeded = SamplingParams(temperature=1.0, seed=1234, max_tokens=12, ignore_eos=True)
    alone = llm.generate([[10, 11, 12]], seeded)[0].outputs[0].token_ids
    others = [SamplingParams(temperature=0.9, max_tokens=20, ignore_eos=True)] * 5
    batch = llm.generate(
        [[1, 2, 3, 4], [10, 11, 12], [9] * 7, [4, 4], [3] * 11, [8]],
        [others[0], seeded, *others[1:]],
    )
    assert batch[1].outputs[0].token_ids == alone
    other_seed = SamplingParams(temperature=1.0, seed=99, max_tokens=12, ignore_eos=True)
    assert llm.generate([[10, 11, 12]], other_seed)[0].outputs[0].token_ids != alone


def test_n_samples_are_independent_and_reported_together(llm):
    params = SamplingParams(n=3, temperature=1.0, seed=7, max_tokens=10, ignore_eos=True)
    out = llm.generate([[10, 11, 12]], params)[0]
    assert [c.index for c in out.outputs] == [0, 1, 2]
    assert len({tuple(c.token_ids) for c in out.outputs}) > 1
    assert llm.generate([[10, 11, 12]], params)[0].outputs[2].token_ids == out.outputs[2].token_ids


def test_bad_requests_fail_alone(llm):
    too_long = list(range(3, 3 + llm.engine.max_model_len))
    good = _greedy(max_tokens=6)
    outs = llm.generate(
        ["def f():", too_long, "", [5, 6], [10**6], "x = 1"],
        [good, good, good, {"temperature": -1.0}, good, {"max_tokens": 6, "bogus": 1}],
    )
    errors = [o.error for o in outs]
    assert errors[0] is None and len(outs[0].outputs[0].token_ids) == 6
    assert "max_model_len" in errors[1]
    assert "empty" in errors[2]
    assert "temperature" in errors[3]
    assert "out of range" in errors[4]
    assert "bogus" in errors[5]
    assert all(o.outputs[0].finish_reason == "error" for o in outs[1:])


def test_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        LLM(str(tmp_path / "nope"))


def test_unsupported_architecture_and_missing_weights(checkpoint, tmp_path):
    import json
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(checkpoint("llama"), folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architectures": ["GPT2LMHead"]}))
    with pytest.raises(ModelLoadError, match="unsupported architecture"):
        LLM(str(folder))
    (folder / "config.json").write_text(json.dumps({**config, "hidden_size": 32}))
    with pytest.raises(ModelLoadError, match="shape"):
        LLM(str(folder))
    (folder / "config.json").write_text(json.dumps(config))
    for f in folder.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(ModelLoadError, match="safetensors"):
        LLM(str(folder))


def test_stream_yields_growing_outputs(llm):
    params = _greedy(max_tokens=6)
    final = llm.generate(["hello"], params)[0].outputs[0]
    seen = [o.outputs[0].token_ids for o in llm.stream(["hello"], params)]
    assert seen[-1] == final.token_ids
    assert [len(s) for s in seen] == list(range(1, 7))


def test_timings_and_logprobs_reported(llm):
    out = llm.generate(["import os"], _greedy(max_tokens=5, logprobs=3))[0]
    assert out.metrics.time_to_first_token > 0 and out.metrics.decode_time >= 0
    for token, entry in zip(out.outputs[0].token_ids, out.outputs[0].logprobs):
        assert next(iter(entry)) == token
        assert len(entry) <= 4 and all(lp <= 0 for lp in entry.values())
        # Greedy: the sampled token is the most likely one.
        assert entry[token] == pytest.approx(max(entry.values()))


def test_queue_limit_is_explicit(checkpoint):
    from intaglio.engine.engine import QueueFullError

    llm = LLM(str(checkpoint("llama")), dtype="float32", max_num_waiting=2)
    engine = llm.engine
    engine.add_request("a", [5, 6], _greedy(max_tokens=2))
    engine.add_request("b", [5, 6], _greedy(max_tokens=2))
    with pytest.raises(QueueFullError, match="full"):
        engine.add_request("c", [5, 6], _greedy(max_tokens=2))
    finished = [o.request_id for _ in range(10) for o in engine.step() if o.finished]
    assert sorted(finished) == ["a", "b"]
    engine.add_request("c", [5, 6], _greedy(max_tokens=2))  # room again


def test_out_of_vocab_stop_and_bias_ids_fail_alone(llm):
    good = _greedy(max_tokens=3)
    outs = llm.generate(
        [[5, 6], [5, 6], [5, 6]],
        [
            good,
            _greedy(max_tokens=3, min_tokens=1, stop_token_ids=[10**6]),
            _greedy(max_tokens=3, logit_bias={10**6: 1.0}),
        ],
    )
    assert outs[0].error is None and len(outs[0].outputs[0].token_ids) == 3
    assert "stop_token_ids out of range" in outs[1].error
    assert "logit_bias out of range" in outs[2].error


def test_n_samples_report_prompt_logprobs_once(llm):
    params = SamplingParams(n=3, temperature=1.0, max_tokens=2, prompt_logprobs=1)
    out = llm.generate([[5, 6, 7, 8]], params)[0]
    single = llm.generate([[5, 6, 7, 8]], SamplingParams(max_tokens=2, prompt_logprobs=1))[0]
    for ours, ref in zip(out.prompt_logprobs[1:], single.prompt_logprobs[1:]):
        assert list(ours) == list(ref)
        assert list(ours.values()) == pytest.approx(list(ref.values()), abs=1e-5)
    assert len(out.prompt_logprobs) == 4 and out.prompt_logprobs[0] is None


def test_stop_string_beats_length_in_the_same_step(llm):
    free = llm.generate(["def f():"], _greedy(max_tokens=6))[0].outputs[0]
    last = free.text[-1]  # appears by the 6th token at the latest
    out = llm.generate(["def f():"], _greedy(max_tokens=6, stop=[last]))[0].outputs[0]
    assert out.finish_reason == "stop" and out.stop_reason == last
    assert out.text == free.text[: free.text.find(last)]


def test_stop_strings_wait_for_min_tokens(llm):
    free = llm.generate(["def f():"], _greedy(max_tokens=12))[0].outputs[0]
    first = free.text[0]
    out = llm.generate(["def f():"], _greedy(max_tokens=16, stop=[first], min_tokens=12))[0]
    # Without min_tokens the first token would already stop it.
    assert len(out.outputs[0].token_ids) >= 12


def test_stream_abandoned_early_leaves_nothing_running(llm):
    stream = llm.stream([[5, 6], [7, 8]], _greedy(max_tokens=20))
    next(stream)
    stream.close()
    assert not llm.engine.has_unfinished()
    assert llm.engine.block_manager.num_free_blocks == llm.engine.block_manager.num_blocks


def test_params_with_wrong_types_fail_alone(llm):
    outs = llm.generate([[5, 6], [5, 6]], [_greedy(max_tokens=2), {"temperature": "hot"}])
    assert outs[0].error is None and outs[1].error is not None


def test_detokenizer_failure_fails_its_request_alone(llm, monkeypatch):
    from intaglio.engine.detokenizer import IncrementalDetokenizer

    real = IncrementalDetokenizer.update

    def flaky(self, token_ids, final=False):
        if self.stop == ("boom",):
            raise RuntimeError("tokenizer exploded")
        return real(self, token_ids, final)

    monkeypatch.setattr(IncrementalDetokenizer, "update", flaky)
    outs = llm.generate(["a", "b"], [_greedy(max_tokens=4), _greedy(max_tokens=4, stop=["boom"])])
    assert outs[0].error is None and len(outs[0].outputs[0].token_ids) == 4
    assert "exploded" in outs[1].error and outs[1].outputs[0].finish_reason == "error"
