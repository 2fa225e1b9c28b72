"""Helpers shared by the test files."""
import pytest


def opcheck_params(samples):
    """pytest params (device, index) for each of samples(device)'s cases: on CPU, and on CUDA marked `gpu`.

    samples(device) returns (op name, args, needs grad) tuples; the ids name the op and whether it differentiates.
    """
    params = []
    for device, marks in (("cpu", []), ("cuda", [pytest.mark.gpu])):
        for i, (name, _, grad) in enumerate(samples("cpu")):
            params.append(pytest.param(device, i, marks=marks, id=f"{device}-{i}-{name}" + ("-grad" if grad else "")))
    return params


def compile_params():
    """(device, backend, dynamic) for the torch.compile tests: aot_eager on CPU (static and dynamic shapes),
    inductor on CUDA (marked `gpu`)."""
    return [pytest.param("cpu", "aot_eager", False), pytest.param("cpu", "aot_eager", True),
            pytest.param("cuda", "inductor", None, marks=pytest.mark.gpu)]
