"""Test configuration shared by every test file: the `gpu` marker's skip and per-test seeding."""
import zlib

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def seed(request):
    """Seeds torch (CPU and CUDA) from the test's id: a fresh seed per case that replays on a rerun."""
    value = zlib.crc32(request.node.nodeid.encode())
    torch.manual_seed(value)
    return value
