"""transformers backend: batched ``generate`` with left padding. The light fallback, on CPU or GPU."""

from __future__ import annotations

from actors.llm.engine import (
    Conversation,
    EngineConfig,
    Generation,
    LLMEngine,
    SamplingConfig,
    truncate_at_stop,
)

_DTYPES = {
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "float32": "float32",
    "auto": "auto",
}


class TransformersEngine(LLMEngine):
    def __init__(self, config: EngineConfig) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.config = config
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(config.model, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = _DTYPES.get(config.dtype)
        if dtype is None:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {config.dtype!r}")
        self.model = AutoModelForCausalLM.from_pretrained(
            config.model, dtype=getattr(torch, dtype) if dtype != "auto" else "auto", **config.extra
        ).to(self.device)
        self.model.eval()
        torch.manual_seed(config.seed)

    def generate(self, conversations: list[Conversation], sampling: SamplingConfig) -> list[Generation]:
        import torch

        out: list[Generation] = []
        for start in range(0, len(conversations), self.config.batch_size):
            chunk = conversations[start : start + self.config.batch_size]
            prompts = [
                self.tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False)
                for c in chunk
            ]
            enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(
                self.device
            )
            greedy = sampling.temperature <= 0
            with torch.no_grad():
                ids = self.model.generate(
                    **enc,
                    max_new_tokens=sampling.max_tokens,
                    num_return_sequences=sampling.n,  # rows come back grouped by prompt
                    do_sample=not greedy,
                    temperature=None if greedy else sampling.temperature,
                    top_p=None if greedy else sampling.top_p,
                    top_k=None,
                    repetition_penalty=sampling.repetition_penalty,
                    stop_strings=list(sampling.stop) or None,
                    tokenizer=self.tokenizer,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            new = ids[:, enc["input_ids"].shape[1] :]
            prompt_lens = enc["attention_mask"].sum(dim=1).tolist()
            for i, plen in enumerate(prompt_lens):
                rows = new[i * sampling.n : (i + 1) * sampling.n]
                n_new = sum(int((row != self.tokenizer.pad_token_id).sum()) for row in rows)
                texts = [truncate_at_stop(self.tokenizer.decode(row, skip_special_tokens=True), sampling.stop)
                         for row in rows]  # fmt: skip
                out.append(Generation(texts[0], int(plen), n_new, texts))
        return out
