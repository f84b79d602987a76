"""The CPU dropout with the cheaper mask: its keep rate and independence, gradients, seeding, and a
model that is exactly itself again outside `fast_dropout` (and exactly eager attention inside it)."""

from __future__ import annotations

import pytest
import torch

from intertask.compute.dropout import ATTENTION, FastDropout, dropout, fast_dropout, keep_mask


def test_the_mask_keeps_one_minus_p_independently_and_follows_the_seed():
    torch.manual_seed(0)
    keep = keep_mask(torch.Size([1000, 1000]), 0.1).float()
    assert keep.mean().item() == pytest.approx(0.9, abs=0.002)  # 1e6 draws: sd 0.0003
    pairs = (keep[:, :-1] * keep[:, 1:]).mean().item()  # neighbours independent: 0.9 x 0.9
    assert pairs == pytest.approx(0.81, abs=0.003)
    rows = keep.mean(1)
    assert rows.std().item() == pytest.approx((0.09 / 1000) ** 0.5, rel=0.15)  # no row pattern
    torch.manual_seed(0)
    assert torch.equal(keep_mask(torch.Size([1000, 1000]), 0.1).float(), keep)
    assert keep_mask(torch.Size([4096]), 0.5).float().mean().item() == pytest.approx(0.5, abs=0.04)


def test_forward_and_backward_scale_the_kept_elements():
    x = torch.randn(64, 128, requires_grad=True)
    torch.manual_seed(3)
    out = dropout(x, 0.25, training=True)
    kept = out != 0
    assert torch.allclose(out[kept], x[kept] / 0.75)
    out.backward(torch.ones_like(out))
    assert torch.allclose(x.grad, kept.float() / 0.75)
    assert torch.equal(dropout(x, 0.25, training=False), x)
    assert torch.equal(FastDropout(0.25).eval()(x), x)


def test_fast_dropout_is_eager_attention_and_leaves_the_model_as_it_was(tiny_model):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_model), num_labels=3).eval()
    inputs = {
        "input_ids": torch.randint(5, 300, (4, 12)),
        "attention_mask": torch.tensor([[1] * 12, [1] * 8 + [0] * 4, [1] * 12, [1] * 5 + [0] * 7]),
    }
    before = model.config._attn_implementation
    with torch.no_grad():
        reference = model(**inputs).logits
        model.set_attn_implementation("eager")
        eager = model(**inputs).logits
        model.set_attn_implementation(before)
        with fast_dropout(model):
            assert model.config._attn_implementation == ATTENTION
            assert any(isinstance(m, FastDropout) for m in model.modules())
            inside = model(**inputs).logits
    assert torch.equal(inside, eager) and torch.allclose(inside, reference, atol=1e-5)
    assert model.config._attn_implementation == before
    assert not any(isinstance(m, FastDropout) for m in model.modules())
    model.train()
    with fast_dropout(model):  # training: the masks differ from torch's, the loss is still finite
        loss = model(**inputs, labels=torch.tensor([0, 1, 2, 0])).loss
        loss.backward()
    assert torch.isfinite(loss) and model.classifier.weight.grad is not None
    with fast_dropout(model, enabled=False):
        assert not any(isinstance(m, FastDropout) for m in model.modules())
