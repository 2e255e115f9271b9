"""OpenAI-compatible HTTP backend (a vLLM server on a GPU box, or any /v1/chat/completions endpoint).

Requests go out concurrently (``max_concurrency``), one per conversation, with the standard library's HTTP
client. Errors name the endpoint and the HTTP status.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from actors.llm.engine import Conversation, EngineConfig, EngineError, Generation, LLMEngine, SamplingConfig


class OpenAIEngine(LLMEngine):
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.url = config.base_url.rstrip("/") + "/chat/completions"

    def _one(self, conversation: Conversation, sampling: SamplingConfig) -> Generation:
        body = {
            "model": self.config.model or "default",
            "messages": conversation,
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "seed": self.config.seed,
        }
        if sampling.n > 1:
            body["n"] = sampling.n
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if sampling.repetition_penalty != 1.0:
            body["repetition_penalty"] = sampling.repetition_penalty  # vLLM's extension of the API
        headers = {"Content-Type": "application/json"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        req = urllib.request.Request(self.url, json.dumps(body).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.config.timeout_s) as resp:
                payload = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise EngineError(f"{self.url}: HTTP {exc.code}: {exc.read()[:200]!r}") from exc
        except (urllib.error.URLError, TimeoutError) as exc:
            raise EngineError(f"{self.url}: {exc}") from exc
        try:
            texts = [c["message"]["content"] or "" for c in payload["choices"]]
        except (KeyError, TypeError) as exc:
            raise EngineError(f"{self.url}: unexpected response {str(payload)[:200]}") from exc
        if not texts:
            raise EngineError(f"{self.url}: no choices in {str(payload)[:200]}")
        usage = payload.get("usage") or {}
        return Generation(texts[0], int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)),
                          texts)  # fmt: skip

    def generate(self, conversations: list[Conversation], sampling: SamplingConfig) -> list[Generation]:
        if not conversations:
            return []
        with ThreadPoolExecutor(max_workers=min(self.config.max_concurrency, len(conversations))) as pool:
            return list(pool.map(lambda c: self._one(c, sampling), conversations))
