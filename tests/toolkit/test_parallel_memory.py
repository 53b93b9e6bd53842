"""The partitioning passes and the memory plan agree on what one device holds."""

from __future__ import annotations

import pytest

from intaglio.toolkit import ops as K
from intaglio.toolkit.capture import capture_step
from intaglio.toolkit.hardware import load_hardware
from intaglio.toolkit.memory import plan_memory
from intaglio.toolkit.ops import SeqShape
from intaglio.toolkit.parallel import expert_parallel, tensor_parallel
from intaglio.toolkit.presets import PRESETS, load_model_config

DENSE_SPLITS = [(1, 1), (2, 1), (8, 1)]
MOE_SPLITS = DENSE_SPLITS + [(1, 8), (2, 4)]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_captured_weights_per_device_equal_the_memory_plan(name):
    cfg = load_model_config(name)
    # 4096 tokens touch every expert (for 128 experts and top-1, all but e^-32 of the time).
    ops = capture_step(cfg, [SeqShape(4096, 4096)])
    moe = any(o.kind == K.EXPERT_MATMUL for o in ops)
    hw = load_hardware("h200")
    for tp, ep in MOE_SPLITS if moe else DENSE_SPLITS:
        device = expert_parallel(ep)(tensor_parallel(tp)(ops))
        # The embedding op reads only the looked-up rows; a device holds its vocabulary shard.
        held = sum(o.weight_bytes for o in device if o.kind != K.EMBEDDING)
        if not cfg.tie_word_embeddings:
            held += cfg.vocab_size * cfg.hidden_size * 2 / tp
        planned = plan_memory(cfg, hw, tp=tp, ep=ep).weight_bytes
        assert held == pytest.approx(planned, rel=1e-9), (name, tp, ep)
