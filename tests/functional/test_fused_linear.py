"""fused_linear / onednn_linear: oneDNN's GEMM where it applies, torch.addmm elsewhere, same values and gradients."""

from __future__ import annotations

import pytest
import torch

from omlcore.functional.linear import fused_linear, onednn_linear, onednn_usable


def operands(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(*shape, generator=generator, dtype=dtype) for shape in ((37, 19), (23, 19), (23,)))
    return x, w, b


def test_this_pytorch_build_has_the_onednn_kernel() -> None:
    # The CPU wheels used in CI ship oneDNN; if a build lacks it, fused_linear silently uses addmm instead
    assert onednn_usable()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equals_addmm_without_gradients(dtype: torch.dtype) -> None:
    x, w, b = operands(dtype)
    with torch.no_grad():
        out = fused_linear(x, w, b)
    expected = torch.addmm(b, x, w.t())
    assert out.dtype == dtype and out.shape == (37, 23) and out.grad_fn is None
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_without_bias_is_the_product_alone(dtype: torch.dtype) -> None:
    x, w, _ = operands(dtype)
    with torch.no_grad():
        out = fused_linear(x, w)
    torch.testing.assert_close(out, x @ w.t(), rtol=1e-5, atol=1e-5)
    recorded = fused_linear(x.requires_grad_(True), w)
    assert recorded.grad_fn is not None
    torch.testing.assert_close(recorded, x @ w.t(), rtol=1e-5, atol=1e-5)


def test_non_contiguous_inputs() -> None:
    x, w, b = operands()
    big_x, big_w, big_b = (torch.cat([t, t], dim=-1) for t in (x, w, b))
    cases = [
        (x.t().contiguous().t(), w.t().contiguous().t(), b),  # column-major
        (big_x[:, ::2], big_w[:, ::2], big_b[::2]),  # strided columns: oneDNN itself rejects these
        (torch.cat([x, x])[::2], torch.cat([w, w])[::2], b),  # strided rows
    ]
    for x_view, w_view, b_view in cases:
        with torch.no_grad():
            out = fused_linear(x_view, w_view, b_view)
        torch.testing.assert_close(out, torch.addmm(b_view, x_view, w_view.t()), rtol=1e-5, atol=1e-5)


def test_gradients_flow_where_they_are_recorded() -> None:
    x, w, b = operands()
    x.requires_grad_(True)
    out = fused_linear(x, w, b)  # recorded: the addmm path, which has a backward
    assert out.grad_fn is not None
    out.square().sum().backward()
    reference = x.detach().clone().requires_grad_(True)
    torch.addmm(b, reference, w.t()).square().sum().backward()
    torch.testing.assert_close(x.grad, reference.grad)


def test_which_gemm_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    addmm = torch.addmm
    monkeypatch.setattr(torch, "addmm", lambda *args: calls.append(args) or addmm(*args))
    x, w, b = operands()
    with torch.no_grad():
        fused_linear(x, w, b)  # CPU float32 without gradients: oneDNN
        assert not calls
        fused_linear(x.double(), w.double(), b.double())  # float64: addmm
        assert len(calls) == 1
        monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
        torch.testing.assert_close(fused_linear(x, w, b), addmm(b, x, w.t()))  # oneDNN switched off: addmm
        assert len(calls) == 2
    fused_linear(x.requires_grad_(True), w, b)  # a gradient to record: addmm
    assert len(calls) == 3


def test_onednn_usable_follows_build_and_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
    assert not onednn_usable()
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", True)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert not onednn_usable()


@pytest.mark.skipif(not onednn_usable(), reason="PyTorch without oneDNN")
def test_onednn_linear_is_the_gemm_with_bias() -> None:
    x, w, b = operands()
    torch.testing.assert_close(onednn_linear(x, w, b), torch.addmm(b, x, w.t()), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(onednn_linear(x, w), x @ w.t(), rtol=1e-5, atol=1e-5)
    strided = x.repeat_interleave(2, dim=1)[:, ::2]  # oneDNN itself rejects strided columns: made contiguous
    assert torch.equal(onednn_linear(strided, w, b), onednn_linear(x, w, b))
