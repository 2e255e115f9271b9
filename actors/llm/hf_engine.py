"""transformers backend: batched ``generate`` with left padding. The light fallback, on CPU or GPU."""

from __future__ import annotations

from actors.llm.engine import (
    Continuation,
    Conversation,
    EngineConfig,
    Generation,
    LLMEngine,
    SamplingConfig,
    token_pairs,
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

    def score(self, conversations: list[Conversation], continuations: list[str]) -> list[Continuation]:
        """Consecutive pairs with the same conversation share one forward pass over its prompt (its KV cache
        repeated for each continuation, ``batch_size`` at a time): a reranker scoring K candidates after one
        history computes the history once, not K times."""
        import torch

        pairs = token_pairs(self.tokenizer, conversations, continuations)
        out: list[Continuation] = []
        i = 0
        while i < len(pairs):
            j = i + 1
            while j < len(pairs) and j - i < self.config.batch_size and conversations[j] == conversations[i]:
                j += 1
            p_ids = torch.tensor([pairs[i][0]], device=self.device)
            conts = [c for _, c in pairs[i:j]]
            width = max(len(c) for c in conts)
            ids = torch.full((len(conts), width), self.tokenizer.pad_token_id, dtype=torch.long)
            for r, c in enumerate(conts):
                ids[r, : len(c)] = torch.tensor(c)
            lp = p_ids.shape[1]
            with torch.no_grad():
                first = self.model(input_ids=p_ids, use_cache=True, logits_to_keep=1)
                cache = first.past_key_values
                cache.batch_repeat_interleave(len(conts))
                mask = torch.cat([torch.ones((len(conts), lp), dtype=torch.long),
                                  (torch.arange(width)[None] < torch.tensor([len(c) for c in conts])[:, None]).long()], 1)  # fmt: skip
                rest = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                  position_ids=(lp + torch.arange(width))[None].expand(len(conts), -1).to(self.device),
                                  past_key_values=cache).logits  # fmt: skip
            # token 0 is predicted by the prompt's last position, token t > 0 by continuation position t - 1
            logits = torch.cat([first.logits[:, -1:].expand(len(conts), -1, -1), rest[:, :-1]], dim=1)
            logp = torch.log_softmax(logits.float(), dim=-1)
            picked = logp.gather(2, ids.to(self.device).unsqueeze(-1))[..., 0]
            for r, c in enumerate(conts):
                out.append(Continuation(float(picked[r, : len(c)].sum().cpu()), len(c)))
            i = j
        return out
