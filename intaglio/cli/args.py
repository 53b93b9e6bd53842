"""Argparse flags generated from the frozen config dataclasses, so flags map 1:1 to fields."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from typing import Any

from intaglio.config import EngineConfig
from intaglio.sampling.params import SamplingParams


def _flag_type(annotation: Any) -> tuple[Any, bool]:
    """(element type, is a tuple) for an annotation such as `int | None` or `tuple[str, ...]`."""
    if isinstance(annotation, str):
        annotation = eval(annotation, vars(typing) | {"types": types})  # noqa: S307 (own hints)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is tuple:
        return args[0], True
    if args:
        return _flag_type(args[0]) if typing.get_origin(args[0]) is tuple else (args[0], False)
    return annotation, False


def add_dataclass_flags(parser: argparse.ArgumentParser, cls: type, skip: set[str]) -> None:
    group = parser.add_argument_group(cls.__name__)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind, many = _flag_type(f.type)
        if kind is Any:  # free-form fields (SamplingParams.structured) take JSON text
            kind = str
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            group.add_argument(flag, type=kind, nargs="+" if many else None, default=None)


def collect(args: argparse.Namespace, cls: type, skip: set[str]) -> dict[str, Any]:
    """The fields the user actually set, so the dataclass defaults apply to the rest."""
    names = {f.name for f in dataclasses.fields(cls)} - skip
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


# --seed is the engine's; logit_bias (token -> bias pairs) has no natural flag form.
# output_kind is how the API hands outputs over, not a choice for the command line; pooling
# (embeddings) generates no text (`intaglio bench embed` and the server's --pooling take it).
_SAMPLING_SKIP = {"seed", "logit_bias", "output_kind", "pooling"}


def add_engine_flags(parser: argparse.ArgumentParser) -> None:
    add_dataclass_flags(parser, EngineConfig, skip=set())


def add_sampling_flags(parser: argparse.ArgumentParser) -> None:
    add_dataclass_flags(parser, SamplingParams, skip=_SAMPLING_SKIP)


def load_llm(args: argparse.Namespace) -> tuple[Any, SamplingParams] | None:
    """The LLM and sampling params the flags ask for; None (after saying why) if they are bad."""
    from intaglio.api.llm import LLM

    try:
        llm = LLM(args.model, **engine_args(args))
        return llm, llm.with_defaults(**sampling_args(args))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return None


def engine_args(args: argparse.Namespace) -> dict[str, Any]:
    return collect(args, EngineConfig, skip={"model"})


def sampling_args(args: argparse.Namespace) -> dict[str, Any]:
    return collect(args, SamplingParams, skip=_SAMPLING_SKIP)
