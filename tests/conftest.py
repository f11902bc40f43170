"""Shared test setup. Fixtures that belong to one area live in that area's test module or in
tests/fixtures/; this file holds only what every test needs."""

import os

import pytest
import torch

# Tests compare against references at tight tolerances: keep them deterministic and single-process.
torch.manual_seed(0)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
