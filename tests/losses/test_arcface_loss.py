"""ArcFace losses against a naive per-sample formula, PML's ArcFaceLoss, gradcheck and OML's MLP layout."""

from __future__ import annotations

import math

import pytest
import torch

from omlcore.losses import ArcFaceLoss, ArcFaceLossWithMLP
from omlcore.protocols import Loss


def naive_arcface(x, labels, weight, m, s, eps=0.0, label2category=None):  # type: ignore[no-untyped-def]
    total = torch.zeros((), dtype=x.dtype)
    classes = weight.shape[0]
    for i in range(len(labels)):
        y = int(labels[i])
        logits = []
        for j in range(classes):
            cos = torch.dot(x[i], weight[j]) / (torch.linalg.vector_norm(x[i]) * torch.linalg.vector_norm(weight[j]))
            if j == y:
                theta = torch.acos(cos)
                cos = torch.cos(theta + m) if theta + m < math.pi else cos - m * math.sin(m)
            logits.append(s * cos)
        log_probs = torch.log_softmax(torch.stack(logits), 0)
        if label2category is None:
            target = [(1 - eps) * (j == y) + eps / classes for j in range(classes)]
        else:
            same = [j for j in range(classes) if label2category[j] == label2category[y]]
            target = [(1 - eps) * (j == y) + (eps / len(same) if j in same else 0.0) for j in range(classes)]
        total = total - sum(t * log_probs[j] for j, t in enumerate(target))
    return total / len(labels)


def setup(classes: int = 5, dim: int = 4, batch: int = 7, seed: int = 0):  # type: ignore[no-untyped-def]
    torch.manual_seed(seed)
    loss = ArcFaceLoss(dim, classes, m=0.4, s=8.0).double()
    x = torch.randn(batch, dim, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, classes, (batch,))
    return loss, x, labels


def test_equals_the_naive_formula_and_logs_accuracy() -> None:
    loss, x, labels = setup()
    assert isinstance(loss, Loss)
    value = loss(x, labels)
    assert value.item() == pytest.approx(naive_arcface(x, labels, loss.weight, 0.4, 8.0).item(), rel=1e-10)
    cos = torch.nn.functional.normalize(x) @ torch.nn.functional.normalize(loss.weight).t()
    assert loss.last_logs["accuracy"] == pytest.approx(float((cos.argmax(1) == labels).double().mean()))


def test_the_fallback_beyond_pi_minus_m() -> None:
    loss = ArcFaceLoss(2, 2, m=0.5, s=2.0).double()
    with torch.no_grad():
        loss.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    x = torch.tensor([[-1.0, 0.05], [0.3, 1.0]], dtype=torch.float64)  # the first is ~pi away from its class
    labels = torch.tensor([0, 1])
    assert loss(x, labels).item() == pytest.approx(naive_arcface(x, labels, loss.weight, 0.5, 2.0).item(), rel=1e-10)


@pytest.mark.parametrize("categories", [None, {0: "a", 1: "b", 2: "a", 3: "b", 4: "a"}])
def test_label_smoothing_optionally_within_the_category(categories) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(1)
    loss = ArcFaceLoss(4, 5, m=0.3, s=10.0, smoothing_epsilon=0.2, label2category=categories).double()
    x = torch.randn(6, 4, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    expected = naive_arcface(x, labels, loss.weight, 0.3, 10.0, 0.2, categories)
    assert loss(x, labels).item() == pytest.approx(expected.item(), rel=1e-10)


def test_equals_pml_arcface_loss() -> None:
    pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
    loss, x, labels = setup(classes=6, dim=8, batch=12)
    theirs = pml_losses.ArcFaceLoss(num_classes=6, embedding_size=8, margin=math.degrees(0.4), scale=8.0).double()
    with torch.no_grad():
        theirs.W.copy_(loss.weight.t())  # PML stores W as (embedding_size, num_classes)
    ours_value, theirs_value = loss(x, labels), theirs(x, labels)
    assert ours_value.item() == pytest.approx(theirs_value.item(), rel=1e-6)
    (g1,) = torch.autograd.grad(ours_value, x)
    (g2,) = torch.autograd.grad(theirs_value, x)
    assert torch.allclose(g1, g2, atol=1e-6)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_gradcheck(eps: float) -> None:
    torch.manual_seed(0)
    loss = ArcFaceLoss(3, 4, m=0.5, s=4.0, smoothing_epsilon=eps).double()
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3, 1])
    weight = loss.weight.detach().clone().requires_grad_(True)

    def of(e: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(loss, {"weight": w}, (e, labels))

    assert torch.autograd.gradcheck(of, (x, weight))


def test_errors_and_empty_batch() -> None:
    loss, x, labels = setup()
    with pytest.raises(ValueError, match=r"labels \[7\] are outside 0..4 \(num_classes=5\); remap"):
        loss(x[:1], torch.tensor([7]))
    with pytest.raises(ValueError, match=r"labels must be class ids.*\[nan\] at positions \[1\]"):
        loss(x[:2], torch.tensor([1.0, float("nan")]))
    torch.testing.assert_close(loss(x[:2], torch.tensor([1.0, 3.0])), loss(x[:2], torch.tensor([1, 3])))
    with pytest.raises(ValueError, match=r"label2category has no category for 1 of the 5 classes, e.g. \[4\]"):
        ArcFaceLoss(4, 5, label2category={0: 0, 1: 0, 2: 1, 3: 1})
    with pytest.raises(ValueError, match=r"smoothing_epsilon must be in \[0, 1\)"):
        ArcFaceLoss(4, 5, smoothing_epsilon=1.0)
    empty = loss(x[:0], labels[:0])
    assert empty.item() == 0.0
    empty.backward()
    assert loss.weight.grad is not None and not loss.weight.grad.any()


def test_mlp_variant_has_oml_layout_and_trains() -> None:
    torch.manual_seed(0)
    loss = ArcFaceLossWithMLP(8, 5, mlp_features=[16, 6], m=0.4, s=8.0)
    assert list(loss.state_dict()) == ["mlp.0.weight", "mlp.0.bias", "mlp.3.weight", "mlp.3.bias", "arcface.weight"]
    x, labels = torch.randn(10, 8), torch.randint(0, 5, (10,))
    expected = naive_arcface(loss.mlp(x), labels, loss.arcface.weight, 0.4, 8.0)
    value = loss(x, labels)
    assert value.item() == pytest.approx(expected.item(), rel=1e-5) and "accuracy" in loss.last_logs
    value.backward()
    assert all(p.grad is not None for p in loss.parameters())
