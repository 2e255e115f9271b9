"""Generate, check, and ask again only for the outputs that failed the check."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from actors.llm.engine import Conversation, Generation, LLMEngine, SamplingConfig

Check = Callable[[int, Generation, SamplingConfig], tuple[str, str | None]]


@dataclass
class Attempted:
    text: str | None  # the accepted output, or None when every attempt was rejected
    attempts: int
    prompt_tokens: int
    completion_tokens: int
    rejected: str = ""  # why the last rejected output was rejected ("" if none was)


def generate_with_retry(
    engine: LLMEngine,
    conversations: Sequence[Conversation],
    samplings: Sequence[SamplingConfig],
    check: Check,
) -> list[Attempted]:
    """One attempt per sampling config, in order; each later attempt re-asks only the rejected conversations.

    ``check(index, generation, sampling)`` returns (cleaned text, rejection reason or None). Tokens of every
    attempt are counted.
    """
    out = [Attempted(None, 0, 0, 0) for _ in conversations]
    pending = list(range(len(conversations)))
    for attempt, sampling in enumerate(samplings, start=1):
        if not pending:
            break
        gens = engine.generate([conversations[i] for i in pending], sampling)
        still = []
        for i, gen in zip(pending, gens, strict=True):
            res = out[i]
            res.attempts = attempt
            res.prompt_tokens += gen.prompt_tokens
            res.completion_tokens += gen.completion_tokens
            text, reason = check(i, gen, sampling)
            if reason is None:
                res.text = text
            else:
                res.rejected = reason
                still.append(i)
        pending = still
    return out
