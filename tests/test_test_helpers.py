"""The helpers the op tests share (tests/_shared.py) fail where they must."""
import pytest
import torch

from _shared import MaxError, check_compile_fullgraph, check_cuda_graph


def test_max_error_bound():
    ref = torch.tensor([1.0, -2.0], dtype=torch.float64)
    eager = ref + 1e-3  # the baseline's error: 1e-3
    ulp = torch.finfo(torch.bfloat16).eps
    err = MaxError("y", torch.bfloat16, floor_ulps=2)
    err.add(ref + 2e-3 + 2 * ulp * 2 * 0.99, eager, ref)  # 2 x 1e-3 + 2 ulps of |ref| = 2, just inside
    err.check()
    err.add(ref + 2e-3 + 2 * ulp * 2 * 1.01, eager, ref)  # just outside
    with pytest.raises(AssertionError, match="y: max"):
        err.check()
    err.slack = 1e-3
    err.check()


def test_max_error_floor_by_dtype_and_scale():
    ref = torch.zeros(3, dtype=torch.float64)
    err = MaxError("dx", torch.float32, floor_ulps={torch.float32: 4})
    err.add(ref + 3.5 * torch.finfo(torch.float32).eps, ref, ref, scale=torch.ones(3))
    err.check()
    assert MaxError("dx", torch.float16, floor_ulps={torch.float32: 4}).floor_ulps == 2
    err.add(ref + 4.5 * torch.finfo(torch.float32).eps, ref, ref, scale=torch.ones(3))
    with pytest.raises(AssertionError):
        err.check()


def test_max_error_non_finite_baseline():
    ref = torch.ones(2, dtype=torch.float64)
    eager = torch.tensor([1.0, float("inf")], dtype=torch.float64)
    strict = MaxError("y", torch.float32, floor_ulps=2)
    strict.add(ref + 0.5, eager, ref)  # an overflowing baseline sets no bound
    with pytest.raises(AssertionError):
        strict.check()
    raw = MaxError("y", torch.float32, floor_ulps=2, finite_eager=False)
    raw.add(ref + 0.5, eager, ref)
    raw.check()


def test_check_compile_fullgraph_catches_a_difference():
    def skewed(gm, example_inputs):  # a dynamo backend whose outputs are off by 1e-3
        def run(*args):
            return [o + 1e-3 for o in gm(*args)]
        return run

    def f(x):
        return x * 2.0

    cases = [((torch.randn(3),), (0,), torch.ones(3))]
    check_compile_fullgraph(f, cases, "aot_eager", False)
    with pytest.raises(AssertionError):
        check_compile_fullgraph(f, cases, skewed, False)


@pytest.mark.gpu
def test_check_cuda_graph_catches_a_difference():
    x = torch.randn(8, 16, device="cuda")
    check_cuda_graph(lambda: (x * 2,), (x,), lambda new_x: (new_x * 2,))
    with pytest.raises(AssertionError, match="output 0"):
        check_cuda_graph(lambda: (x * 2,), (x,), lambda new_x: (new_x * 3,))
    stale = x.clone()  # a step that reads a copy of its input: its replays keep the captured values
    with pytest.raises(AssertionError, match="output 0"):
        check_cuda_graph(lambda: (stale * 2,), (x,), lambda new_x: (new_x * 2,))
    with pytest.raises(AssertionError):  # an output missing
        check_cuda_graph(lambda: (x * 2,), (x,), lambda new_x: (new_x * 2, new_x))
    seen = []
    check_cuda_graph(lambda: (x + 1,), (x,), lambda new_x: (new_x + 1,), check=lambda out, new_x: seen.append(1))
    assert len(seen) == 3
