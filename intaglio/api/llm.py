"""LLM: the offline API. Give it prompts, get completions; or stream them as they grow."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import torch
from tqdm import tqdm

from intaglio.api.chat_prompt import Conversation, render_conversation
from intaglio.config import EngineConfig
from intaglio.engine.engine import LLMEngine
from intaglio.engine.outputs import RequestOutput
from intaglio.executor.model_executor import ModelExecutor
from intaglio.model.checkpoint import generation_defaults, load_tokenizer, resolve_model_path
from intaglio.sampling.params import SamplingParams
from intaglio.sampling.pooling import Pooling
from intaglio.search.runner import Budget, Program, ProgramResult, run_programs

logger = logging.getLogger(__name__)

Prompt = str | list[int]
ParamsLike = SamplingParams | dict[str, Any]
T = TypeVar("T")


class LLM:
    def __init__(self, model: str | None = None, **engine_args: Any) -> None:
        self.config = EngineConfig(model=model, **engine_args)
        if self.config.num_threads:
            torch.set_num_threads(self.config.num_threads)
        torch.manual_seed(self.config.seed)
        path = resolve_model_path(model)
        self.model_path = path
        self.tokenizer = load_tokenizer(path)
        executor = ModelExecutor(path, self.config)
        cfg = executor.model.cfg
        defaults, gen_eos = generation_defaults(path)
        self.default_sampling_params = SamplingParams(**defaults)
        eos = [*cfg.eos_token_ids, *gen_eos]
        if self.tokenizer.eos_token_id is not None:
            eos.append(self.tokenizer.eos_token_id)
        eos = [t for t in eos if 0 <= t < cfg.vocab_size]  # some configs name ids past the vocab
        self.engine = LLMEngine(
            self.config,
            executor,
            self.tokenizer,
            tuple(dict.fromkeys(eos)),
            max_model_len_limit=cfg.sliding_window,  # beyond it our attention would differ
        )
        self._ids = itertools.count()

    def generate(
        self,
        prompts: Prompt | Sequence[Prompt],
        sampling_params: ParamsLike | Sequence[ParamsLike] | None = None,
        use_tqdm: bool = False,
        priority: int | Sequence[int] = 0,
        cache_salt: str | None = None,
    ) -> list[RequestOutput]:
        """Complete every prompt; a bad prompt or bad params fail that request alone.

        `priority` (one value or one per prompt) matters under scheduling_policy="priority",
        lower first; `cache_salt` keeps these prompts' cached KV apart from other salts'.
        """
        final: dict[str, RequestOutput] = {}
        order = self._submit(prompts, sampling_params, final, priority, cache_salt, "final_only")
        bar = tqdm(total=len(order), disable=not use_tqdm, desc="generating", unit="req")
        bar.update(len(final))
        try:
            while self.engine.has_unfinished():
                for out in self.engine.step():
                    final[out.request_id] = out
                    bar.update(1)
        finally:
            bar.close()
            self._abort_unfinished(order, final)
        return [final[rid] for rid in order]

    def embed(
        self,
        prompts: Prompt | Sequence[Prompt],
        pooling: str = "last",
        normalize: bool = True,
        use_tqdm: bool = False,
        priority: int | Sequence[int] = 0,
        cache_salt: str | None = None,
    ) -> list[RequestOutput]:
        """Embed every prompt: `RequestOutput.embedding` is its final hidden states pooled,
        the last token's ("last", vLLM's default for decoder models) or their mean ("mean"),
        scaled to unit length when `normalize`. A bad prompt fails its request alone."""
        params = SamplingParams(pooling=Pooling(pooling, normalize))
        return self.generate(prompts, params, use_tqdm, priority, cache_salt)

    def run_programs(
        self, programs: Sequence[Program[T]], budget: Budget | None = None
    ) -> list[ProgramResult[T]]:
        """Run search programs (intaglio.search) together on this engine's shared batches."""
        return run_programs(self.engine, programs, budget)

    def chat(
        self,
        conversations: Conversation | Sequence[Conversation],
        sampling_params: ParamsLike | Sequence[ParamsLike] | None = None,
        use_tqdm: bool = False,
    ) -> list[RequestOutput]:
        """Answer each conversation ([{"role": ..., "content": ...}, ...]) as the assistant."""
        one = bool(conversations) and isinstance(conversations[0], dict)
        batch = [conversations] if one else list(conversations)
        prompts = [self.chat_prompt(c) for c in batch]  # type: ignore[arg-type]
        return self.generate(prompts, sampling_params, use_tqdm)

    def chat_prompt(self, conversation: Conversation) -> list[int]:
        """The prompt token ids of a conversation, through the model's chat template."""
        text, add_special = render_conversation(self.tokenizer, conversation)
        return list(self.tokenizer(text, add_special_tokens=add_special)["input_ids"])

    def stream(
        self,
        prompts: Prompt | Sequence[Prompt],
        sampling_params: ParamsLike | Sequence[ParamsLike] | None = None,
        priority: int | Sequence[int] = 0,
        cache_salt: str | None = None,
    ) -> Iterator[RequestOutput]:
        """Yield each request's output every time it grows; the last one has finished=True.

        Outputs hold everything so far, unless the params ask for output_kind="delta" (only
        what is new each step, which keeps long streams cheap).
        """
        done: dict[str, RequestOutput] = {}
        order = self._submit(prompts, sampling_params, done, priority, cache_salt, None)
        yield from list(done.values())
        try:
            while self.engine.has_unfinished():
                for out in self.engine.step():
                    if out.finished:
                        done[out.request_id] = out
                    yield out
        finally:  # a caller that stops iterating early leaves nothing running
            self._abort_unfinished(order, done)

    def _abort_unfinished(self, order: list[str], done: dict[str, RequestOutput]) -> None:
        for request_id in order:
            if request_id not in done:
                self.engine.abort(request_id)
        # Let the engine release the aborted requests now rather than on a later call.
        while self.engine.has_unfinished() and any(rid not in done for rid in order):
            for out in self.engine.step():
                done[out.request_id] = out

    def _submit(
        self,
        prompts: Prompt | Sequence[Prompt],
        sampling_params: ParamsLike | Sequence[ParamsLike] | None,
        failed: dict[str, RequestOutput],
        priority: int | Sequence[int],
        cache_salt: str | None,
        output_kind: str | None,
    ) -> list[str]:
        if isinstance(prompts, str) or (
            isinstance(prompts, list) and prompts and isinstance(prompts[0], int)
        ):
            prompts = [prompts]  # type: ignore[list-item]
        prompts = list(prompts)  # type: ignore[arg-type]
        if sampling_params is None or isinstance(sampling_params, (SamplingParams, dict)):
            params_list = [sampling_params] * len(prompts)
        else:
            params_list = list(sampling_params)
            if len(params_list) != len(prompts):
                raise ValueError(
                    f"got {len(params_list)} sampling params for {len(prompts)} prompts"
                )
        priorities = [priority] * len(prompts) if isinstance(priority, int) else list(priority)
        if len(priorities) != len(prompts):
            raise ValueError(f"got {len(priorities)} priorities for {len(prompts)} prompts")
        order = []
        for prompt, params, prio in zip(prompts, params_list, priorities):
            request_id = str(next(self._ids))
            order.append(request_id)
            try:
                resolved = self._params(params)
                if output_kind is not None:
                    resolved = replace(resolved, output_kind=output_kind)
                self.engine.add_request(request_id, prompt, resolved, prio, cache_salt)
            except (ValueError, TypeError) as e:  # bad prompt or params: this request alone
                logger.warning("request %s rejected: %s", request_id, e)
                failed[request_id] = RequestOutput.failed(request_id, str(e), prompt)
        return order

    def _params(self, params: ParamsLike | None) -> SamplingParams:
        if params is None:
            return self.default_sampling_params
        if isinstance(params, dict):
            return SamplingParams.from_dict(params)
        return params

    def with_defaults(self, **overrides: Any) -> SamplingParams:
        """The model's default sampling params (generation_config.json) with some fields set."""
        return replace(self.default_sampling_params, **overrides)
