"""LLM engines behind one batched chat interface (see ``actors.llm.engine``)."""

from actors.llm.engine import EngineConfig, Generation, LLMEngine, SamplingConfig, make_engine

__all__ = ["EngineConfig", "Generation", "LLMEngine", "SamplingConfig", "make_engine"]
