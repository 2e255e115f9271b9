"""LLM engines behind one batched chat interface (see ``actors.llm.engine``)."""

from actors.llm.engine import EngineConfig, EngineError, Generation, LLMEngine, SamplingConfig
from actors.llm.factory import make_engine

__all__ = ["EngineConfig", "EngineError", "Generation", "LLMEngine", "SamplingConfig", "make_engine"]
