"""Intaglio: a readable LLM inference engine and hardware co-design toolkit."""

from intaglio.api.llm import LLM
from intaglio.config import EngineConfig
from intaglio.engine.outputs import CompletionOutput, RequestOutput
from intaglio.sampling.params import SamplingParams

__all__ = ["LLM", "EngineConfig", "SamplingParams", "RequestOutput", "CompletionOutput"]
__version__ = "0.1.0"
