"""The sampler flags of `intaglio generate`: every new SamplingParams field is a flag."""

from __future__ import annotations

from intaglio.cli.args import sampling_args
from intaglio.cli.main import build_parser
from intaglio.sampling.params import SAMPLER_FIELDS, SamplingParams


def test_sampler_flags_reach_sampling_params():
    args = build_parser().parse_args(
        [
            "generate",
            "--mirostat-tau", "5",
            "--dry-multiplier", "0.8",
            "--dry-sequence-breakers", "\n", ";",
            "--allowed-token-ids", "3", "4",
            "--bad-words", "foo", "bar baz",
            "--extra-args", '{"token": 13}',
            "--logprobs-mode", "processed_logprobs",
            "--thinking-token-budget", "64",
            "--confidence-top-k", "5",
            "hi",
        ]
    )  # fmt: skip
    params = SamplingParams(**sampling_args(args))
    assert params.mirostat_tau == 5.0 and params.dry_multiplier == 0.8
    assert params.dry_sequence_breakers == ("\n", ";")
    assert params.allowed_token_ids == (3, 4)
    assert params.bad_words == ("foo", "bar baz")
    assert dict(params.extra_args) == {"token": 13}
    assert params.logprobs_mode == "processed_logprobs"
    assert params.thinking_token_budget == 64 and params.confidence_top_k == 5


def test_every_sampler_field_has_a_flag():
    flags = build_parser().parse_args(["generate", "hi"])
    assert all(hasattr(flags, name) for name in SAMPLER_FIELDS)
