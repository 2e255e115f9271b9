"""Full-softmax cross-entropy over a whole catalog, computed in row chunks.

``cross_entropy(states @ weight.T, targets)`` the plain way holds the (positions, items) logits, their
float32 copy, the log-softmax, its gradient and the gradient's copy back: five passes over a matrix far
larger than the caches, each into freshly allocated memory (about half of six SASRec training steps
profiled on ML-1M, 3,706 items; over a whole epoch the chunks gained only 4%). Here each chunk of rows is
scored into a reused buffer, reduced to its log-sum-exp and dropped; the backward pass scores the chunk
again and turns it into its gradient in place (softmax minus the one-hot target), so only one chunk of the
matrix exists at a time and the memory does not grow with the batch. The same loss and gradients, up to
the order of float32 sums.
"""

from __future__ import annotations

import torch

CHUNK_SCORES = 1 << 21  # scores per chunk (8 MB of float32): chunk rows = CHUNK_SCORES // items


def chunk_rows(n_items: int) -> int:
    """Positions scored at once for a catalog of ``n_items``."""
    return max(16, CHUNK_SCORES // max(n_items, 1))


class _ChunkedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, states: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        scores = _Scores(states, weight)
        lse = torch.empty(len(states), dtype=torch.float32, device=states.device)
        hit = torch.empty_like(lse)
        for s, e, logits in scores:
            hit[s:e] = logits.gather(1, targets[s:e, None])[:, 0]
            top = logits.amax(dim=1, keepdim=True)
            lse[s:e] = logits.sub_(top).exp_().sum(dim=1).log_().add_(top[:, 0])
        ctx.save_for_backward(states, weight, targets, lse)
        return (lse - hit).mean()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        states, weight, targets, lse = ctx.saved_tensors
        scores = _Scores(states, weight)
        grad_states = torch.empty_like(states)
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        scale = grad.float() / len(states)
        rows = torch.arange(scores.step, device=states.device)
        for s, e, probs in scores:
            probs.sub_(lse[s:e, None]).exp_()  # the softmax, in place
            probs[rows[: e - s], targets[s:e]] -= 1.0
            g = scores.low(probs.mul_(scale), e - s)
            grad_states[s:e] = g @ scores.w
            grad_weight += (g.T @ states[s:e]).float()
        return grad_states, grad_weight.to(weight.dtype), None


class _Scores:
    """Chunks of ``states @ weight.T`` in float32, in two buffers reused for every chunk (a fresh
    allocation per chunk costs its page faults, as much as the product)."""

    def __init__(self, states: torch.Tensor, weight: torch.Tensor) -> None:
        self.states, self.w = states, weight.to(states.dtype)
        self.wt = self.w.T.contiguous()
        self.step = chunk_rows(len(weight))
        shape = (min(self.step, len(states)), len(weight))
        self.raw = torch.empty(shape, dtype=states.dtype, device=states.device)
        self.full = (
            self.raw if states.dtype == torch.float32 else torch.empty_like(self.raw, dtype=torch.float32)
        )

    def __iter__(self):
        for s in range(0, len(self.states), self.step):
            chunk = self.states[s : s + self.step]
            n = len(chunk)
            torch.mm(chunk, self.wt, out=self.raw[:n])
            if self.full is not self.raw:
                self.full[:n].copy_(self.raw[:n])
            yield s, s + n, self.full[:n]

    def low(self, probs: torch.Tensor, n: int) -> torch.Tensor:
        """``probs`` in the states' dtype (the raw buffer when it is another one)."""
        if self.full is self.raw:
            return probs
        return self.raw[:n].copy_(probs)


def full_softmax_cross_entropy(
    states: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """Mean cross-entropy of ``states @ weight.T`` (positions × items) against ``targets`` (item rows).

    ``states`` (P, d) may be bfloat16 (the scores are then computed in bfloat16 and reduced in float32,
    as autocast does); ``weight`` (items, d) gets its gradient in its own dtype. Call it outside autocast.
    """
    return _ChunkedCrossEntropy.apply(states, weight, targets)
