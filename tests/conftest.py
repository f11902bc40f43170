"""Shared test setup. Fixtures that belong to one area live in that area's test module or in
tests/fixtures/; this file holds only what every test needs."""

import glob
import os

# Triton picks interpreted vs compiled mode when `triton.language` is first imported, for the whole
# process: any test module that imports a kernel module before the Triton tests run would freeze
# compiled mode, and the interpreted kernels then fail ("Cannot call @triton.jit'd outside of the
# scope of a kernel"). Without an NVIDIA device the interpreter is the only way to run them, so set it
# before anything imports Triton. With a GPU, the kernels compile for it and the CPU-interpreter tests
# set it themselves.
if "TRITON_INTERPRET" not in os.environ and not glob.glob("/dev/nvidia[0-9]*"):
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

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
