"""kernels/rotary.py: the Triton kernel against the torch reference, and the reference against the math.

Without CUDA the Triton kernel runs in Triton's interpreter: TRITON_INTERPRET=1 is set here, before
anything builds the kernel (the kernel is built lazily, keyed on the flag), and a test checks the
kernel object really is Triton's InterpretedFunction.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

import importlib.metadata
import subprocess
import sys

import pytest

from kernels import rotary
from kernels.rotary import apply_rotary, apply_rotary_ref, apply_rotary_triton

triton = pytest.importorskip("triton")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: 2e-6, torch.bfloat16: 3e-2, torch.float16: 4e-3}


def _inputs(n, hq, hk, d, dtype, coord_dtype=torch.int64, max_coord=1000, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, hq, d, generator=g).to(dtype)
    k = torch.randn(n, hk, d, generator=g).to(dtype)
    coords = torch.randint(0, max_coord, (n, 3), generator=g).to(coord_dtype)
    inv_freq = torch.rand(d // 2, generator=g)
    pair_axis = torch.randint(0, 3, (d // 2,), generator=g)
    return [x.to(DEVICE) for x in (q, k, coords, inv_freq, pair_axis)]


def test_kernel_is_really_triton():
    kernel, _ = rotary._rotary_kernel(os.environ.get("TRITON_INTERPRET", "0") == "1")
    if DEVICE == "cpu":
        from triton.runtime.interpreter import InterpretedFunction

        assert isinstance(kernel, InterpretedFunction), type(kernel)
    else:
        from triton.runtime.jit import JITFunction

        assert isinstance(kernel, JITFunction), type(kernel)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    "n,hq,hk,d",
    [(1, 1, 1, 2), (7, 3, 1, 10), (33, 4, 4, 64), (19, 5, 2, 80), (5, 17, 17, 6), (3, 2, 2, 18)],
)
def test_triton_matches_reference(n, hq, hk, d, dtype):
    q, k, coords, inv_freq, pair_axis = _inputs(n, hq, hk, d, dtype, seed=n * 100 + d)
    rq, rk = apply_rotary_ref(q, k, coords, inv_freq, pair_axis)
    tq, tk = apply_rotary_triton(q, k, coords, inv_freq, pair_axis)
    assert tq.dtype == dtype and tk.dtype == dtype and tq.shape == q.shape and tk.shape == k.shape
    for name, r, t in (("q", rq, tq), ("k", rk, tk)):
        err = (r.float() - t.float()).abs().max().item()
        assert err <= TOL[dtype] * max(1.0, r.float().abs().max().item()), f"{name}: triton vs ref max diff {err}"


@pytest.mark.parametrize("coord_dtype", [torch.int32, torch.float32])
def test_triton_coordinate_dtypes_and_strided_inputs(coord_dtype):
    # q and k as strided views of a fused qkv projection, as the encoder produces them.
    g = torch.Generator().manual_seed(3)
    qkv = torch.randn(11, 3, 3, 12, generator=g).to(DEVICE)
    q, k, _ = qkv.unbind(1)
    assert not q.is_contiguous()
    coords = torch.randint(0, 500, (11, 3), generator=g).to(coord_dtype).to(DEVICE)
    inv_freq = torch.rand(6, generator=g).to(DEVICE)
    pair_axis = torch.tensor([0, 0, 1, 1, 2, 2], device=DEVICE)
    rq, rk = apply_rotary_ref(q, k, coords, inv_freq, pair_axis)
    tq, tk = apply_rotary_triton(q, k, coords, inv_freq, pair_axis)
    assert (rq - tq).abs().max() <= 1e-5 and (rk - tk).abs().max() <= 1e-5


def test_reference_matches_explicit_rotation():
    # Pair i of D/2 rotates channels (i, i + D/2) by coords[:, pair_axis[i]] * inv_freq[i].
    q, k, coords, inv_freq, pair_axis = (x.cpu() for x in _inputs(4, 2, 2, 8, torch.float32))
    rq, _ = apply_rotary_ref(q, k, coords, inv_freq, pair_axis)
    for n in range(4):
        for i in range(4):
            a = float(coords[n, pair_axis[i]]) * float(inv_freq[i])
            c, s = torch.tensor(a).cos().item(), torch.tensor(a).sin().item()
            x1, x2 = q[n, :, i].double(), q[n, :, i + 4].double()
            torch.testing.assert_close(rq[n, :, i].double(), x1 * c - x2 * s, atol=1e-4, rtol=0)
            torch.testing.assert_close(rq[n, :, i + 4].double(), x2 * c + x1 * s, atol=1e-4, rtol=0)


def test_reference_is_relative_per_axis():
    # <R(a) q, R(b) k> depends only on a - b: shifting every coordinate by a constant changes nothing.
    q, k, coords, inv_freq, pair_axis = (x.cpu() for x in _inputs(6, 1, 1, 16, torch.float32, max_coord=50))
    q, k, inv_freq = q.double(), k.double(), inv_freq.double()
    rq, rk = apply_rotary_ref(q, k, coords, inv_freq, pair_axis)
    sq, sk = apply_rotary_ref(q, k, coords + torch.tensor([7, 11, 13]), inv_freq, pair_axis)
    torch.testing.assert_close(rq[:, 0] @ rk[:, 0].T, sq[:, 0] @ sk[:, 0].T, atol=1e-4, rtol=1e-4)
    zero = torch.zeros_like(coords)
    zq, _ = apply_rotary_ref(q, k, zero, inv_freq, pair_axis)
    torch.testing.assert_close(zq, q)  # position 0 is the identity


def test_half_precision_coordinates_are_refused():
    q, k, coords, inv_freq, pair_axis = _inputs(3, 1, 1, 4, torch.float32)
    for fn in (apply_rotary_ref, apply_rotary_triton):
        with pytest.raises(TypeError, match="bf16/fp16"):
            fn(q, k, coords.to(torch.bfloat16), inv_freq, pair_axis)


def test_dispatch_uses_reference_on_cpu():
    assert rotary.rotary_impl("cpu") == "ref"
    q, k, coords, inv_freq, pair_axis = (x.cpu() for x in _inputs(5, 2, 2, 8, torch.float32))
    out = apply_rotary(q, k, coords, inv_freq, pair_axis)
    ref = apply_rotary_ref(q, k, coords, inv_freq, pair_axis)
    assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])


def test_importing_vidsieve_imports_neither_triton_nor_xformers():
    code = ("import sys, encoders.vit, encoders.load, kernels.rotary; "
            "print('triton' in sys.modules, 'xformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"], out


def test_our_kernels_package_does_not_pose_as_huggingface_kernels():
    try:
        importlib.metadata.version("kernels")
        pytest.skip("Hugging Face's kernels distribution is installed here")
    except importlib.metadata.PackageNotFoundError:
        pass
    from transformers.utils.import_utils import is_kernels_available

    assert is_kernels_available() is False
