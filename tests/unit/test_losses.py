"""KD losses: definitions against direct computation, JSD ends, masking, chunked = unchunked."""

from __future__ import annotations

import pytest
import torch

from recslm.train.losses import distill_loss, token_divergence


def direct_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(p) || softmax(q)) per row, written out term by term in float64."""
    p = torch.softmax(p_logits.double(), -1)
    q = torch.softmax(q_logits.double(), -1)
    return (p * (p.log() - q.log())).sum(-1)


@pytest.fixture
def logits():
    torch.manual_seed(0)
    return torch.randn(7, 50) * 2, torch.randn(7, 50) * 2  # student, teacher


def test_kls_match_direct_computation(logits):
    s, t = logits
    assert torch.allclose(token_divergence(s, t, "forward_kl").double(), direct_kl(t, s), atol=1e-5)
    assert torch.allclose(token_divergence(s, t, "reverse_kl").double(), direct_kl(s, t), atol=1e-5)
    assert (token_divergence(s, s, "forward_kl").abs() < 1e-6).all()


def test_jsd_matches_its_definition_and_meets_the_kls_at_its_ends(logits):
    s, t = logits
    beta = 0.3
    p, q = torch.softmax(t.double(), -1), torch.softmax(s.double(), -1)
    m = beta * p + (1 - beta) * q
    expected = (beta * (p * (p / m).log()).sum(-1) + (1 - beta) * (q * (q / m).log()).sum(-1)) / (beta * (1 - beta))
    assert torch.allclose(token_divergence(s, t, "jsd", beta=beta).double(), expected, atol=1e-5)
    # exactly at the ends: the two KLs; near the ends: continuous with them
    assert torch.equal(token_divergence(s, t, "jsd", beta=0.0), token_divergence(s, t, "forward_kl"))
    assert torch.equal(token_divergence(s, t, "jsd", beta=1.0), token_divergence(s, t, "reverse_kl"))
    forward, reverse = token_divergence(s, t, "forward_kl"), token_divergence(s, t, "reverse_kl")

    def gap(beta: float) -> tuple[float, float]:
        near0 = ((token_divergence(s, t, "jsd", beta=beta) - forward).abs() / forward).max().item()
        near1 = ((token_divergence(s, t, "jsd", beta=1 - beta) - reverse).abs() / reverse).max().item()
        return near0, near1

    far, near = gap(1e-2), gap(1e-4)
    assert near[0] < far[0] and near[1] < far[1]  # the gap closes towards the ends
    assert max(near) < 2e-2


def test_temperature_softens_and_scales_by_t_squared(logits):
    s, t = logits
    hot = token_divergence(s, t, "forward_kl", temperature=4.0)
    assert torch.allclose(hot.double(), direct_kl(t / 4, s / 4) * 16, atol=1e-4)
    with pytest.raises(ValueError, match="beta"):
        token_divergence(s, t, "jsd", beta=1.5)


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
def test_chunked_equals_unchunked_in_value_and_gradient(kind):
    torch.manual_seed(1)
    B, T, H, V = 3, 11, 16, 97
    head_s, head_t = torch.nn.Linear(H, V, bias=False), torch.nn.Linear(H, V, bias=False)
    hidden_t = torch.randn(B, T, H)
    mask = torch.rand(B, T) > 0.3
    results = []
    for chunk in (None, 5, -1):
        hidden_s = torch.randn(B, T, H, generator=torch.Generator().manual_seed(2)).requires_grad_()
        head_s.zero_grad()
        loss = distill_loss(hidden_s, hidden_t, head_s, head_t, mask, kind=kind, chunk_size=chunk)
        loss.backward()
        results.append((loss.detach(), hidden_s.grad.clone(), head_s.weight.grad.clone()))
    (a, ga, wa) = results[0]
    for b, gb, wb in results[1:]:
        assert torch.allclose(a, b, atol=1e-6) and torch.allclose(ga, gb, atol=1e-6) and torch.allclose(wa, wb, atol=1e-6)
    assert head_t.weight.grad is None  # the teacher is never trained
    # the mask really selects: unmasked positions get no gradient
    assert ga[~mask].abs().max() == 0 and ga[mask].abs().max() > 0


def test_loss_is_the_mean_over_masked_tokens():
    torch.manual_seed(3)
    head = torch.nn.Linear(8, 20, bias=False)
    hs, ht = torch.randn(2, 4, 8), torch.randn(2, 4, 8)
    mask = torch.tensor([[1, 0, 0, 1], [0, 0, 1, 0]], dtype=torch.bool)
    per_token = token_divergence(head(hs[mask]), head(ht[mask]), "forward_kl")
    assert torch.allclose(distill_loss(hs, ht, head, head, mask, chunk_size=2), per_token.mean(), atol=1e-6)
    empty = distill_loss(hs, ht, head, head, torch.zeros(2, 4, dtype=torch.bool))
    assert empty.item() == 0.0
