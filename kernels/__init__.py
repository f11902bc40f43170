"""Fused ops, each a plain-torch reference beside a Triton version (see kernels/rotary.py).

Named `kernels` like Hugging Face's hub-kernels package: transformers' `is_kernels_available()`
looks a `kernels` distribution up by version and only trusts [0.18.2, 0.19.0), so this package
(shipped in the `vidsieve` distribution, no `__version__`) reads as "not available" and is
never used by transformers. Keep this file import-free so a probe that imports it stays cheap;
tests/test_rotary_kernel.py checks that transformers still says "not available".
"""
