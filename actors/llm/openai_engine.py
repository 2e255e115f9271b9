"""OpenAI-compatible HTTP backend (a vLLM server on a GPU box, or any /v1/chat/completions endpoint).

Requests go out through the ``openai`` client, concurrently (``max_concurrency``), one per conversation,
with the config's timeout and retries (``timeout_s``, ``max_retries``: the client retries connection errors,
429 and 5xx with backoff). Errors name the endpoint and the HTTP status.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from actors.llm.engine import Conversation, EngineConfig, EngineError, Generation, LLMEngine, SamplingConfig


class OpenAIEngine(LLMEngine):
    def __init__(self, config: EngineConfig) -> None:
        import openai

        self.config = config
        self.url = config.base_url.rstrip("/") + "/chat/completions"  # what errors name
        # a server without auth ignores the key; the client insists on one
        self.client = openai.OpenAI(base_url=config.base_url, api_key=config.api_key or "none",
                                    timeout=config.timeout_s, max_retries=config.max_retries)  # fmt: skip

    def _one(self, conversation: Conversation, sampling: SamplingConfig) -> Generation:
        import openai

        options = {"n": sampling.n} if sampling.n > 1 else {}  # one sample: left out, as servers expect
        if sampling.stop:
            options["stop"] = list(sampling.stop)
        if sampling.repetition_penalty != 1.0:  # vLLM's extension of the API
            options["extra_body"] = {"repetition_penalty": sampling.repetition_penalty}
        try:
            resp = self.client.chat.completions.create(
                model=self.config.model or "default", messages=conversation, max_tokens=sampling.max_tokens,
                temperature=sampling.temperature, top_p=sampling.top_p, seed=self.config.seed, **options,
            )  # fmt: skip
        except openai.APIStatusError as exc:
            raise EngineError(f"{self.url}: HTTP {exc.status_code}: {exc.response.text[:200]!r}") from exc
        except openai.APIError as exc:  # connection refused, timeout
            raise EngineError(f"{self.url}: {exc}") from exc
        texts = [c.message.content or "" for c in resp.choices or []]
        if not texts:
            raise EngineError(f"{self.url}: no choices in {resp.model_dump_json()[:200]}")
        usage = resp.usage
        return Generation(texts[0], usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0,
                          texts)  # fmt: skip

    def generate(self, conversations: list[Conversation], sampling: SamplingConfig) -> list[Generation]:
        if not conversations:
            return []
        with ThreadPoolExecutor(max_workers=min(self.config.max_concurrency, len(conversations))) as pool:
            return list(pool.map(lambda c: self._one(c, sampling), conversations))
