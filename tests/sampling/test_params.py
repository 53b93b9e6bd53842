"""SamplingParams validation: bad user input fails loudly with a message that names the field."""

from __future__ import annotations

import pytest

from intaglio.sampling.params import SamplingParams


def test_defaults_are_valid_and_types_are_checked() -> None:
    assert SamplingParams().temperature == 1.0
    for bad in ({"n": 2.5}, {"max_tokens": 1.5}, {"temperature": "hot"}, {"seed": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SamplingParams(**bad)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.01}, "top_p"),
        ({"top_k": -2}, "top_k"),
    ],
)
def test_invalid_values_raise(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SamplingParams(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [{"temperature": 0.0}, {"top_p": 1.0}, {"top_p": 1e-3}, {"top_k": -1}, {"top_k": 0}],
)
def test_boundary_values_accepted(kwargs: dict[str, float]) -> None:
    SamplingParams(**kwargs)


def test_from_dict_names_unknown_field() -> None:
    with pytest.raises(ValueError, match="tempurature"):
        SamplingParams.from_dict({"tempurature": 0.5, "top_p": 0.9})


def test_from_dict_builds_known_fields() -> None:
    params = SamplingParams.from_dict({"temperature": 0.5, "stop": ["\n"]})
    assert params.temperature == 0.5 and params.stop == ("\n",)
