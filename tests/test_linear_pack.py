"""liger_aot.nn.LinearPack: q/k/v (or gate/up) as one matrix product where autograd does not record.

CPU only (it is plain PyTorch: F.linear on a tensor the layers' parameters are views of); the GPU decode path that
uses it is covered by tests/test_deploy.py (decode vs the full forward) and measured by benchmarks/bench_decode.py.
"""
import copy

import pytest
import torch
from torch import nn

import liger_aot


class Block(nn.Module):
    def __init__(self, bias: bool, dtype=torch.float32):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.q_proj = nn.Linear(24, 16, bias=bias, dtype=dtype)
        self.k_proj = nn.Linear(24, 8, bias=bias, dtype=dtype)
        self.v_proj = nn.Linear(24, 8, bias=bias, dtype=dtype)
        with torch.no_grad():
            for p in self.parameters():  # random, not the default init (which a wrong row order could still match)
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
        self.pack = liger_aot.nn.LinearPack(self, ("q_proj", "k_proj", "v_proj"))


def _reference(block, x):
    """float64 x @ W.T + b per layer, from the parameters as they are now."""
    out = []
    for name in ("q_proj", "k_proj", "v_proj"):
        layer = getattr(block, name)
        y = x.double() @ layer.weight.double().T
        out.append(y + layer.bias.double() if layer.bias is not None else y)
    return out


def _x(*shape):
    return torch.randn(*shape, 24, generator=torch.Generator().manual_seed(1))


def _is_packed(block) -> bool:
    w = [getattr(block, n).weight for n in ("q_proj", "k_proj", "v_proj")]
    return w[0].untyped_storage().data_ptr() == w[1].untyped_storage().data_ptr() == w[2].untyped_storage().data_ptr()


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(1, 1), (2, 5), (7,)])
def test_packed_outputs_match_each_layer(bias, shape):
    block = Block(bias)
    x = _x(*shape)
    with torch.no_grad():
        outs = block.pack(x)
    assert _is_packed(block)
    assert [o.shape[-1] for o in outs] == [16, 8, 8]
    for out, ref in zip(outs, _reference(block, x)):
        assert out.shape == ref.shape
        torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)


def test_state_dict_and_loading_write_through_the_pack():
    block, other = Block(True), Block(True)
    with torch.no_grad():
        other.q_proj.weight.mul_(-3.0)  # other weights than block's
    keys = list(block.state_dict())
    x = _x(3)
    with torch.no_grad():
        block.pack(x)  # packs
    assert list(block.state_dict()) == keys  # names unchanged, no extra entries
    for name, p in block.named_parameters():
        assert isinstance(p, nn.Parameter) and p.is_contiguous(), name
    block.load_state_dict(other.state_dict())  # copy_ into the views
    assert _is_packed(block)
    with torch.no_grad():
        outs = block.pack(x)
    for out, ref in zip(outs, _reference(other, x)):
        torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(block.state_dict()["q_proj.weight"], other.state_dict()["q_proj.weight"])


def test_with_grad_each_layer_runs_and_gradients_reach_the_parameters():
    block = Block(True)
    x = _x(4)
    with torch.no_grad():
        block.pack(x)  # packed first: the gradients must still reach every parameter
    outs = block.pack(x)
    sum(o.square().sum() for o in outs).backward()
    ref_block = copy.deepcopy(block)
    for p in ref_block.parameters():
        p.grad = None
    ref = [getattr(ref_block, n)(x) for n in ("q_proj", "k_proj", "v_proj")]
    sum(o.square().sum() for o in ref).backward()
    for (name, p), q in zip(block.named_parameters(), ref_block.parameters()):
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_repacks_after_a_dtype_change_and_keeps_the_new_weights():
    block = Block(False)
    x = _x(2)
    with torch.no_grad():
        block.pack(x)
    block.to(torch.float64)  # replaces every parameter's data: the pack must not serve the old fp32 copy
    assert not _is_packed(block)
    with torch.no_grad():
        block.k_proj.weight.add_(1.0)
        outs = block.pack(x.double())
    assert _is_packed(block) and outs[0].dtype == torch.float64
    for out, ref in zip(outs, _reference(block, x)):
        torch.testing.assert_close(out, ref)


def test_inference_mode_packs_normal_tensors():
    block = Block(False)
    with torch.inference_mode():
        outs = block.pack(_x(2))
    assert not block.q_proj.weight.is_inference()  # training later must still work
    assert outs[0].is_inference()
    block.pack(_x(2))[0].sum().backward()
    assert block.q_proj.weight.grad is not None


def test_falls_back_for_hooks_replaced_layers_and_mixed_dtypes():
    x = _x(2)
    block = Block(False)
    calls = []
    handle = block.k_proj.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        block.pack(x)
    assert calls == [1] and not _is_packed(block)  # the hook ran: each layer on its own
    handle.remove()

    calls.clear()
    handle = torch.nn.modules.module.register_module_forward_hook(lambda *a: calls.append(1))
    try:
        with torch.no_grad():
            block.pack(x)
    finally:
        handle.remove()
    assert calls == [1, 1, 1] and not _is_packed(block)  # a global hook sees each layer

    block.v_proj = nn.Sequential(nn.Linear(24, 8))  # replaced (a wrapper): looked up at each call
    with torch.no_grad():
        outs = block.pack(x)
    torch.testing.assert_close(outs[2], block.v_proj(x))
    assert block.q_proj.weight.untyped_storage().data_ptr() != block.k_proj.weight.untyped_storage().data_ptr()

    block = Block(False)
    block.v_proj.to(torch.float64)
    assert not block.pack._pack(block.pack.layers())  # one weight fp64, the others fp32: not packed
    assert not _is_packed(block)


def test_needs_two_layers():
    with pytest.raises(ValueError, match="at least two"):
        liger_aot.nn.LinearPack(nn.Module(), ("q_proj",))
