"""Build an LLM engine from an ``EngineConfig``: the one module that knows every backend.

The backends import only ``actors.llm.engine`` (the interface); this factory imports them lazily, so a
machine without vLLM never imports it.
"""

from __future__ import annotations

import importlib.util
from typing import Literal

from actors.llm.engine import Backend, EngineConfig, LLMEngine


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def resolve_backend(backend: Backend) -> Literal["vllm", "transformers", "openai"]:
    if backend == "auto":
        return "vllm" if vllm_available() else "transformers"
    if backend not in ("vllm", "transformers", "openai"):
        raise ValueError(f"engine backend must be auto, vllm, transformers or openai; got {backend!r}")
    return backend


def make_engine(config: EngineConfig) -> LLMEngine:
    """Build the configured engine. The packaged default model is used when ``config.model`` is None."""
    backend = resolve_backend(config.backend)
    if backend == "openai":
        from actors.llm.openai_engine import OpenAIEngine

        return OpenAIEngine(config)
    if config.model is None:
        from actors.llm.packaged import default_llm_dir

        config = EngineConfig(**{**config.__dict__, "model": str(default_llm_dir())})
    if backend == "vllm":
        from actors.llm.vllm_engine import VLLMEngine

        return VLLMEngine(config)
    from actors.llm.hf_engine import TransformersEngine

    return TransformersEngine(config)
