"""SASRec: a causal self-attention sequence model (Kang & McAuley, ICDM 2018), in PyTorch.

Training uses cross-entropy at every position of every sequence: over all items (full softmax, a chunk of
positions at a time, ``softmax_loss``) for catalogs up to ``full_softmax_max_items``, and above that over
the target and ``negatives`` items drawn by popularity per batch and shared by its positions (sampled
softmax with the log-q correction; a negative equal to a position's target is masked). It stops early on
validation NDCG@10 (on at most ``valid_sample`` users; the best epoch's weights are kept), lowering the
learning rate on a plateau when ``lr_decay`` < 1. Item embeddings are tied between input and output. Runs
are seeded and use deterministic kernels, so a fixed seed gives the same model.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Self

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from actors.cf.base import CFModel, Histories, ValidationSet, score_batch_size
from actors.cf.softmax_loss import CHUNK_SCORES, full_softmax_cross_entropy

log = logging.getLogger(__name__)


@dataclass
class SASRecConfig:
    max_len: int = 50
    hidden: int = 64
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.5
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 128
    epochs: int = 200
    patience: int = 10  # epochs without a better validation NDCG@10 before stopping
    lr_decay: float = 1.0  # < 1: the rate times this after lr_patience epochs without a better valid NDCG@10
    lr_patience: int = 2
    seed: int = 0
    device: str = "auto"  # "auto" picks CUDA when available
    threads: int = 0  # torch CPU threads; 0 keeps torch's default
    bf16: bool = True  # bfloat16 autocast while training (AMX on recent x86 CPUs, tensor cores on GPUs)
    progress: bool = True  # a tqdm bar; every epoch is also logged at INFO level
    max_memory_gb: float | None = None  # refuse a fit that needs more (None: 80% of this machine's RAM)
    loss: str = "auto"  # "full" softmax, "sampled" softmax, or "auto": full up to full_softmax_max_items
    full_softmax_max_items: int = 50_000
    negatives: int = 1024  # sampled softmax: negatives per batch, drawn by training popularity
    valid_sample: int = 10_000  # early stopping scores at most this many validation users (0: all)
    index: str = "auto"  # rank through an item index: auto (IVF above 100,000 items), flat (exact), ivf, hnsw

    def __post_init__(self) -> None:
        if not 0 < self.lr_decay <= 1:
            raise ValueError(
                f"sasrec.lr_decay must be in (0, 1] (1 keeps the rate fixed), got {self.lr_decay}"
            )


class CausalBlock(nn.Module):
    """Pre-LayerNorm transformer block: causal self-attention, then a position-wise feed-forward layer."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.qkv, self.out = nn.Linear(hidden, 3 * hidden), nn.Linear(hidden, hidden)
        self.ffn = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        x = x + self.drop(self.out(att.transpose(1, 2).reshape(b, length, d)))
        return x + self.drop(self.ffn(self.ln2(x)))


class SASRecNetwork(nn.Module):
    """Embeddings + causal transformer blocks. Id 0 is padding (left side); real items are 1..n."""

    def __init__(self, n_items: int, cfg: SASRecConfig) -> None:
        super().__init__()
        self.item_emb = nn.Embedding(n_items + 1, cfg.hidden, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.hidden)
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            CausalBlock(cfg.hidden, cfg.heads, cfg.dropout) for _ in range(cfg.blocks)
        )
        self.norm = nn.LayerNorm(cfg.hidden)
        nn.init.normal_(self.item_emb.weight, std=cfg.hidden**-0.5)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """(B, L) left-padded item ids, L <= max_len -> (B, L, hidden) states."""
        length = seq.shape[1]
        x = self.item_emb(seq) * (self.item_emb.embedding_dim**0.5) + self.pos_emb.weight[-length:][None]
        pad = seq == 0
        x = self.dropout(x) * (~pad).unsqueeze(-1)
        # Causal attention that ignores padded keys; each position also sees itself, so no row is empty.
        eye = torch.eye(length, dtype=torch.bool, device=seq.device)
        causal = torch.ones(length, length, dtype=torch.bool, device=seq.device).tril()
        allowed = (causal[None] & ~pad[:, None, :]) | eye[None]
        allowed = allowed[:, None]  # broadcast over heads
        for block in self.blocks:
            x = block(x, allowed)
        return self.norm(x)

    def logits(self, states: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, n_items) scores of every item; into ``out`` when given (under inference mode)."""
        return torch.matmul(states, self.item_emb.weight[1:].T, out=out)


def _left_pad(seqs: list[np.ndarray], length: int) -> np.ndarray:
    out = np.zeros((len(seqs), length), dtype=np.int64)
    for i, s in enumerate(seqs):
        s = s[-length:]
        if len(s):
            out[i, length - len(s) :] = s
    return out


def training_windows(sequences: Histories, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Shifted (input, target) windows of ``max_len`` in 1-based ids; long sequences give several windows."""
    inputs, targets = [], []
    for seq in sequences:
        s = np.asarray(seq, dtype=np.int64) + 1
        end = len(s)
        while end >= 2:
            start = max(0, end - max_len - 1)
            window = s[start:end]
            inputs.append(window[:-1])
            targets.append(window[1:])
            end = start + 1 if start > 0 else 0
    return _left_pad(inputs, max_len), _left_pad(targets, max_len)


def length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    """Batches of similar-length rows, so little compute goes to padding.

    With ``rng``: shuffle, sort by length inside chunks of 16 batches, then shuffle the batch order.
    Without: plain sort by length (for scoring).
    """
    if rng is None:
        order = np.argsort(lengths, kind="stable")
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    perm = rng.permutation(len(lengths))
    chunk = batch_size * 16
    batches = []
    for start in range(0, len(perm), chunk):
        part = perm[start : start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


class SASRec(CFModel):
    name = "sasrec"
    Config = SASRecConfig
    WEIGHTS = "weights.pt"
    RUNTIME_FIELDS = ("progress", "threads", "max_memory_gb", "index")
    FACTORISED = True
    too_large_hint = (
        "lower sasrec.batch_size, sasrec.max_len or sasrec.negatives (a sampled softmax holds batch_size x "
        "max_len x (negatives + 1) scores at once; the full softmax scores a chunk of positions at a time)"
    )

    def softmax_width(self, n_items: int) -> int:
        """Scores per training position: the catalog (full softmax) or target + negatives (sampled)."""
        cfg = self.config
        if cfg.loss not in ("auto", "full", "sampled"):
            raise ValueError(f"sasrec.loss must be 'auto', 'full' or 'sampled', got {cfg.loss!r}")
        sampled = cfg.loss == "sampled" or (cfg.loss == "auto" and n_items > cfg.full_softmax_max_items)
        return cfg.negatives + 1 if sampled else n_items

    def memory_needed(self, n_users: int, n_items: int) -> int:
        """The softmax of one training batch (sampled: bf16 logits, their float32 copy and both gradients,
        12 bytes per position and score; full: a chunk of scores at a time, see ``softmax_loss``),
        validation scoring (a ``score_batch_size`` batch of rows and a masked copy), the item embeddings
        with their gradient and Adam state, and the training windows."""
        cfg = self.config
        width = self.softmax_width(n_items)
        softmax = (
            12 * max(CHUNK_SCORES, 16 * width)
            if width == n_items
            else 12 * cfg.batch_size * cfg.max_len * width
        )
        scoring = score_batch_size(n_items) * n_items * 8
        return softmax + scoring + 16 * (n_items + 1) * cfg.hidden + 16 * n_users * cfg.max_len

    @classmethod
    def for_remote_fit(cls, config: SASRecConfig, num_cpus: float) -> SASRecConfig:
        """Threads = the task's CPUs unless set; no bar (it cannot cross the process), each epoch is logged."""
        return replace(config, threads=config.threads or max(int(num_cpus), 1), progress=False)

    def _device(self) -> torch.device:
        if self.config.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.config.device)

    def _build(self, n_items: int) -> None:
        self.n_items = n_items
        self.net = SASRecNetwork(n_items, self.config).to(self._device())

    def fit(self, sequences: Histories, n_items: int, valid: ValidationSet | None = None) -> Self:
        self.check_fits(len(sequences), n_items)
        cfg = self.config
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
        rng = np.random.default_rng(cfg.seed)
        self._build(n_items)
        device = self._device()
        inputs, targets = training_windows(sequences, cfg.max_len)
        lengths = (inputs > 0).sum(axis=1)
        if len(inputs) == 0:
            raise ValueError("SASRec.fit: no sequence has two or more items")
        opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        width = self.softmax_width(n_items)
        sampled = width != n_items
        if sampled:  # negatives by training popularity (add-one); logits corrected by log(negatives * q)
            counts = np.bincount(np.concatenate(list(sequences)), minlength=n_items).astype(np.float64) + 1
            self._neg_q = torch.tensor(counts / counts.sum(), dtype=torch.float32, device=device)
            self._neg_logq = torch.log(self._neg_q * cfg.negatives)
        if valid is not None:
            valid = valid.sample(cfg.valid_sample, cfg.seed)
        plateau = None
        if valid is not None and cfg.lr_decay < 1:
            plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode="max", factor=cfg.lr_decay, patience=cfg.lr_patience
            )
        best_ndcg, best_state, best_epoch, history = -1.0, None, 0, []
        bar = tqdm(range(1, cfg.epochs + 1), desc="SASRec", unit="epoch", disable=not cfg.progress)
        for epoch in bar:
            self.net.train()
            total, count = 0.0, 0
            for idx in length_batches(lengths, cfg.batch_size, rng):
                width = int(lengths[idx].max())
                seq = torch.from_numpy(inputs[idx, -width:]).to(device)
                tgt = torch.from_numpy(targets[idx, -width:]).to(device)
                keep = tgt > 0
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                    states = self.net(seq)[keep]
                    if sampled:
                        logits, labels = self._sampled_logits(states, tgt[keep] - 1, cfg.negatives)
                if sampled:
                    loss = nn.functional.cross_entropy(logits.float(), labels)
                else:  # every item's score, a chunk of positions at a time (no positions x items matrix)
                    loss = full_softmax_cross_entropy(states, self.net.item_emb.weight[1:], tgt[keep] - 1)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * int(keep.sum())
                count += int(keep.sum())
            row = {"epoch": epoch, "loss": total / max(count, 1)}
            if valid is not None:
                row["valid_ndcg10"] = valid.ndcg10(self)
                if plateau is not None:
                    plateau.step(row["valid_ndcg10"])
                    row["lr"] = opt.param_groups[0]["lr"]
                if row["valid_ndcg10"] > best_ndcg:
                    best_ndcg, best_epoch = row["valid_ndcg10"], epoch
                    best_state = copy.deepcopy(self.net.state_dict())
            history.append(row)
            shown = {k: float(f"{v:.4g}") for k, v in row.items() if k != "epoch"}
            log.info("SASRec epoch %d/%d: %s", epoch, cfg.epochs, shown)
            bar.set_postfix(shown | {"best": best_epoch})
            if valid is not None and epoch - best_epoch >= cfg.patience:
                break
        bar.close()
        if best_state is not None:
            self.net.load_state_dict(best_state)
        self.fit_info = {"best_epoch": best_epoch, "best_valid_ndcg10": best_ndcg, "epochs_run": len(history),
                         "softmax": "sampled" if sampled else "full", "history": history}  # fmt: skip
        log.info("SASRec: best epoch %d, valid NDCG@10 %.4f", best_epoch, best_ndcg)
        return self

    def _sampled_logits(
        self, states: torch.Tensor, targets: torch.Tensor, negatives: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(P, 1 + negatives) logits, column 0 each position's target, and labels (all 0). The negatives
        are drawn by training popularity, shared by the batch, and every logit is corrected by
        log(negatives * q) (sampled softmax, so it estimates the full one); a negative equal to a
        position's target is masked."""
        weight = self.net.item_emb.weight
        neg = torch.multinomial(self._neg_q, negatives, replacement=True)
        pos = (states * weight[targets + 1]).sum(-1, keepdim=True) - self._neg_logq[targets][:, None]
        neg_logits = states @ weight[neg + 1].T - self._neg_logq[neg][None, :]
        neg_logits = neg_logits.masked_fill(neg[None, :] == targets[:, None], -torch.inf)
        labels = torch.zeros(len(states), dtype=torch.long, device=states.device)
        return torch.cat([pos, neg_logits], dim=1), labels

    @torch.inference_mode()
    def user_vectors(self, histories: Histories, batch_size: int = 512) -> np.ndarray:
        """(len(histories), hidden) float32: each history's last transformer state (its scores are the inner
        products with ``item_vectors``)."""
        self._check_histories(histories)
        if self.net.training:  # eval() walks every module: a third of a one-user call's time
            self.net.eval()
        device = self._device()
        out = np.zeros((len(histories), self.config.hidden), dtype=np.float32)
        lengths = np.fromiter((min(len(h), self.config.max_len) for h in histories), dtype=np.int64)
        for idx in length_batches(lengths, batch_size, None):
            width = max(int(lengths[idx].max()), 1)
            seq = torch.from_numpy(
                _left_pad([np.asarray(histories[i], dtype=np.int64) + 1 for i in idx], width)
            )
            out[idx] = self.net(seq.to(device))[:, -1].float().cpu().numpy()
        return out

    def item_vectors(self) -> np.ndarray:
        """(n_items, hidden) float32: the item embeddings (row 0 of the table, the padding id, left out)."""
        return self.net.item_emb.weight.detach()[1:].float().cpu().numpy()  # no copy of float32 on CPU

    @torch.inference_mode()
    def score(self, histories: Histories, batch_size: int = 512) -> np.ndarray:
        states = torch.from_numpy(self.user_vectors(histories, batch_size)).to(self._device())
        out = np.empty((len(histories), self.n_items), dtype=np.float32)
        in_place = states.device.type == "cpu" and self.net.item_emb.weight.dtype == torch.float32
        for start in range(0, len(states), batch_size):
            rows = states[start : start + batch_size]
            if in_place:  # the product written straight into the rows returned (no copy; same values)
                self.net.logits(rows, out=torch.from_numpy(out[start : start + len(rows)]))
            else:
                out[start : start + len(rows)] = self.net.logits(rows).float().cpu().numpy()
        return out

    def _state(self) -> dict[str, np.ndarray]:
        raise NotImplementedError  # weights are a torch state dict; see _save_weights

    def _set_state(self, state: dict) -> None:
        self._build(self.n_items)
        self.net.load_state_dict(state)

    def _save_weights(self, file: Path) -> None:
        torch.save(self.net.state_dict(), file)

    def _load_weights(self, file: Path) -> dict:
        return torch.load(file, map_location=self._device(), weights_only=True)
