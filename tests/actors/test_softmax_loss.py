import pytest
import torch
from torch import nn

from actors.cf.softmax_loss import chunk_rows, full_softmax_cross_entropy


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_cross_entropy_equals_the_plain_one_across_chunks(dtype):
    torch.manual_seed(0)
    n_items, positions = 60_000, 100  # 34 rows a chunk: three chunks, the last one short
    assert positions > 2 * chunk_rows(n_items)
    weight = nn.Parameter(torch.randn(n_items, 16) * 0.3)
    base = torch.randn(positions, 16, requires_grad=True)
    targets = torch.randint(0, n_items, (positions,))

    def run(loss_fn):
        weight.grad, base.grad = None, None
        loss = loss_fn(base.to(dtype), weight, targets)
        loss.backward()
        return loss.item(), base.grad.clone(), weight.grad.clone()

    def plain(states, w, t):
        return nn.functional.cross_entropy((states @ w.to(dtype).T).float(), t)

    loss, g_states, g_weight = run(full_softmax_cross_entropy)
    ref_loss, ref_states, ref_weight = run(plain)
    tol = 1e-5 if dtype == torch.float32 else 2e-2  # bf16: the gradient is rounded before its products
    assert loss == pytest.approx(ref_loss, rel=1e-6)
    torch.testing.assert_close(g_states, ref_states, rtol=tol, atol=tol * ref_states.abs().max().item())
    torch.testing.assert_close(g_weight, ref_weight, rtol=tol, atol=tol * ref_weight.abs().max().item())
    assert g_weight.dtype == torch.float32
