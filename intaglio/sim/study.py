"""A Study: one model, hardware, pass list, engine settings and workload.

`step_cost` costs one step; `serve` simulates the workload (sim/sweep.py varies parameters).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from intaglio.config import MODEL_DRAFT_METHODS, EngineConfig
from intaglio.model.config import ModelConfig
from intaglio.sim.executor import SimulatedExecutor
from intaglio.sim.runner import SimResult, simulate
from intaglio.sim.speculation import DraftNetwork, eagle_config, load_profile
from intaglio.sim.workload import (
    SimRequest,
    preset_lengths,
    synthetic_workload,
    trace_workload,
)
from intaglio.toolkit.capture import capture_step
from intaglio.toolkit.cost import StepCost, cost_step
from intaglio.toolkit.hardware import Hardware, load_hardware
from intaglio.toolkit.memory import MemoryPlan, device_weight_elems, plan_memory, step_overflow
from intaglio.toolkit.ops import SeqShape
from intaglio.toolkit.passes import parse_batch, parse_passes, pass_setting
from intaglio.toolkit.presets import load_model_config
from intaglio.toolkit.step_model import StepCostModel, apply_passes


def study_engine_config(**fields: Any) -> EngineConfig:
    """The engine settings a study starts from, with `fields` (EngineConfig's) set."""
    return EngineConfig(**{"max_num_seqs": 256, "max_num_waiting": 1 << 30, **fields})


@dataclass(frozen=True)
class Study:
    model: str
    hardware: str
    passes: str = ""
    dtype: str | None = None
    hw_overrides: dict[str, Any] = field(default_factory=dict)
    model_overrides: dict[str, Any] = field(default_factory=dict)
    # The engine's own configuration: its scheduling fields, block_size and num_kv_blocks (an
    # override of the memory plan) apply. An offline batch arrives at once, so by default the
    # queue holds any workload and more sequences run together than the engine's default.
    engine: EngineConfig = field(default_factory=lambda: study_engine_config())
    memory_utilization: float = 0.9
    num_requests: int = 500
    rate: float | None = None
    input_len: str = "uniform:128:1024"
    output_len: str = "uniform:64:512"
    length_preset: str | None = None  # e.g. "sharegpt": both lengths (sim/workload.py)
    num_prefixes: int = 0
    prefix_len: int = 0
    priorities: int = 1
    trace: str | None = None
    seed: int = 0
    # Speculative decoding (engine.speculative_method set), by one of: the chance that draft i
    # is accepted after drafts 0..i-1 were; a constant alpha for every draft; or a JSON profile
    # (sim/speculation.py), e.g. `intaglio bench spec --json-out` (its rows of the method, and
    # of spec_workload when given, pooled).
    spec_acceptance: tuple[float, ...] = ()
    spec_alpha: float | None = None
    spec_profile: str | None = None
    spec_workload: str | None = None
    # The share of decode steps in which a lookup proposer finds drafts (the profile file's,
    # else 1); a draft network always drafts.
    spec_draft_rate: float | None = None
    # speculative_method draft_model: the draft's architecture (preset or config.json)
    draft_model: str | None = None

    def config(self) -> ModelConfig:
        return load_model_config(self.model, self.dtype, self.model_overrides)

    def hw(self) -> Hardware:
        hw = load_hardware(self.hardware)
        return hw.with_overrides(self.hw_overrides) if self.hw_overrides else hw

    @property
    def data_parallel(self) -> int:
        """Devices that split the batch's sequences: expert parallelism runs attention data
        parallel, so each device keeps the KV cache of 1/ep of the sequences."""
        return int(pass_setting(self.passes, "ep") or 1)

    @property
    def devices(self) -> int:
        """Chips the pass list spreads a model replica over: tp x ep x pp."""
        tp = int(pass_setting(self.passes, "tp") or 1)
        pp = int((pass_setting(self.passes, "pp") or "1").partition(":")[0])
        return tp * self.data_parallel * pp

    def economics(self, tokens: float, seconds: float) -> dict[str, float]:
        """Tokens per joule and dollars per million tokens of `tokens` made in `seconds` on
        all the replica's devices, where the description gives power and price."""
        hw, out = self.hw(), {}
        if hw.power_w:
            out["tokens_per_joule"] = tokens / (seconds * self.devices * hw.power_w)
        if hw.price_usd_per_hour:
            dollars = seconds / 3600 * self.devices * hw.price_usd_per_hour
            out["usd_per_m_tokens"] = dollars / tokens * 1e6
        return out

    def acceptance(self) -> tuple[float, ...]:
        """The acceptance profile a speculative simulation verifies drafts against."""
        given = (bool(self.spec_acceptance), self.spec_alpha is not None, bool(self.spec_profile))
        if sum(given) > 1:
            raise ValueError("give one of spec_acceptance, spec_alpha and spec_profile")
        method = self.engine.speculative_method
        if self.spec_alpha is not None:
            profile: tuple[float, ...] = (self.spec_alpha,) * self.engine.num_speculative_tokens
        elif self.spec_profile:
            profile = load_profile(self.spec_profile, method, self.spec_workload)[0]
        else:
            profile = self.spec_acceptance
        if method is None and any(given):
            raise ValueError("an acceptance profile is given but speculative_method is not set")
        if method is not None and not any(given):
            raise ValueError(
                f"speculative_method {method} needs an acceptance profile: spec_acceptance, "
                "spec_alpha or spec_profile (as `intaglio bench spec --json-out` writes)"
            )
        if not all(0 <= p <= 1 for p in profile):
            raise ValueError(f"acceptance probabilities must lie in [0, 1], got {profile}")
        return profile

    def draft_rate(self) -> float:
        """The share of decode steps a lookup proposer drafts in."""
        rate = self.spec_draft_rate
        if rate is None and self.spec_profile:
            method = self.engine.speculative_method
            rate = load_profile(self.spec_profile, method, self.spec_workload)[1]
        rate = 1.0 if rate is None else rate
        if not 0 <= rate <= 1:
            raise ValueError(f"spec_draft_rate must lie in [0, 1], got {rate}")
        return rate

    def plan(
        self, step: Sequence[SeqShape] | None = None, cfg: ModelConfig | None = None
    ) -> MemoryPlan:
        """The memory plan of the engine settings, or of one step over `step` (its tokens
        and sampled rows size the activations); of model `cfg` instead of the study's."""
        parse_passes(self.passes)  # a typo in the pass list fails here, by name
        tokens, seqs = self.engine.max_num_batched_tokens, self.engine.max_num_seqs
        if step is not None:  # one device's share of the step
            tokens = -(-sum(s.num_new_tokens for s in step) // self.data_parallel)
            seqs = -(-sum(1 for s in step if s.samples) // self.data_parallel)
        return plan_memory(
            cfg or self.config(),
            self.hw(),
            **self.split(),
            weight_dtype=pass_setting(self.passes, "w"),
            kv_dtype=pass_setting(self.passes, "kv"),
            act_dtype=pass_setting(self.passes, "a"),
            max_num_batched_tokens=tokens,
            max_num_seqs=seqs,
            block_size=self.engine.block_size,
            utilization=self.memory_utilization,
        )

    def split(self) -> dict[str, int]:
        """The tp, ep and pp degrees of the pass list."""
        return {
            "tp": int(pass_setting(self.passes, "tp") or 1),
            "ep": int(pass_setting(self.passes, "ep") or 1),
            "pp": int((pass_setting(self.passes, "pp") or "1").partition(":")[0]),
        }

    def workload(self) -> list[SimRequest]:
        vocab = self.config().vocab_size
        if self.trace:
            return trace_workload(self.trace, vocab, self.seed)
        input_len, output_len = self.input_len, self.output_len
        if self.length_preset:
            input_len, output_len = preset_lengths(self.length_preset)
        return synthetic_workload(
            self.num_requests,
            input_len,
            output_len,
            self.rate,
            self.num_prefixes,
            self.prefix_len,
            self.priorities,
            vocab,
            self.seed,
        )


def step_overflow_of(study: Study, batch: str) -> str | None:
    """Why one step of `batch` does not fit a device (weights, activations, KV), or None."""
    seqs = parse_batch(batch)
    return step_overflow(study.plan(seqs), seqs, study.data_parallel)


def step_cost(study: Study, batch: str, allow_overflow: bool = False) -> StepCost:
    """One step's cost; a step that does not fit a device is refused unless allowed."""
    cfg, hw = study.config(), study.hw()
    seqs = parse_batch(batch)
    if not allow_overflow and (why := step_overflow_of(study, batch)):
        raise ValueError(why)
    ops = apply_passes(capture_step(cfg, seqs), parse_passes(study.passes))
    return cost_step(ops, hw, study.plan().weight_bytes)


def draft_network(study: Study) -> DraftNetwork | None:
    """The draft network a speculative study runs beside the target (None for lookups), on
    the same devices and pass list."""
    method = study.engine.speculative_method
    if method not in MODEL_DRAFT_METHODS:
        return None
    target = study.config()
    shared = None  # what the draft shares with the target (EAGLE: embedding and lm_head)
    if method == "eagle":
        cfg, shared = eagle_config(target)
    elif study.draft_model is None:
        raise ValueError(
            "speculative_method draft_model needs draft_model: the draft's architecture, "
            "a preset or config.json"
        )
    else:
        cfg = load_model_config(study.draft_model, study.dtype)
        if cfg.vocab_size != target.vocab_size:
            raise ValueError(
                f"the draft model's vocabulary ({cfg.vocab_size}) differs from the target's "
                f"({target.vocab_size}); a draft must share the target's tokenizer"
            )
    plan = study.plan(cfg=cfg)
    weights = plan.weight_bytes
    if shared is not None:
        split = study.split()
        shared_share = device_weight_elems(shared, **split) / device_weight_elems(cfg, **split)
        weights *= 1 - shared_share
    model = StepCostModel(cfg, study.hw(), parse_passes(study.passes))
    return DraftNetwork(method, model, weights, plan.kv_bytes_per_token)


def serve(study: Study) -> tuple[SimResult, MemoryPlan]:
    plan = study.plan()
    engine = study.engine
    if not plan.fits and engine.num_kv_blocks is None:
        raise ValueError(plan.message)
    drafter = draft_network(study)
    blocks = plan.num_kv_blocks
    if drafter is not None:
        # The draft keeps its weights and, in the target's blocks, its own K/V of each token.
        kv_bytes = blocks * plan.block_size * plan.kv_bytes_per_token - drafter.weight_bytes
        per_block = plan.block_size * (plan.kv_bytes_per_token + drafter.kv_bytes_per_token)
        blocks = int(kv_bytes // per_block)
        if blocks < 1 and engine.num_kv_blocks is None:
            raise ValueError(f"{plan.message}, and the draft network does not fit beside it")
    model = StepCostModel(study.config(), study.hw(), parse_passes(study.passes), plan.weight_bytes)
    executor = SimulatedExecutor(
        model,
        # The engine schedules for the whole data-parallel group: its KV pools add up.
        engine.num_kv_blocks or blocks * study.data_parallel,
        engine.block_size,
        num_local_kv_blocks=plan.num_local_kv_blocks * study.data_parallel,
        acceptance=study.acceptance(),
        draft_rate=study.draft_rate(),
        seed=study.seed,
        drafter=drafter,
    )
    return simulate(study.workload(), executor, engine), plan


def without_speculation(study: Study) -> Study:
    """The same study decoding plainly: the baseline a speculative run is compared with."""
    engine = dataclasses.replace(study.engine, speculative_method=None)
    return dataclasses.replace(
        study, engine=engine, spec_acceptance=(), spec_alpha=None, spec_profile=None
    )


# EngineConfig fields that mean nothing to a simulation (the study has its own model, dtype
# and seed; the memory plan sizes the KV cache).
STUDY_SKIPS = {
    "model",
    "dtype",
    "device",
    "seed",
    "kv_cache_memory_gib",
    "num_threads",
    "fp32_weight_cache_gib",
    "speculative_model",
    "batch_invariant",  # a CPU numerics mode: the same steps, other bits
}
