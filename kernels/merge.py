"""Token similarity + bipartite matching: the inner step of token merging (ToMe-style).

For every token of set A, find its most similar token of set B (cosine similarity), optionally
only among B tokens of the same group (a tubelet, a pair of tubelets, a video). This is the
O(|A| * |B| * D) part of bipartite soft matching; choosing which matches to merge is cheap and
lives in `tokencomp/strategies/tome.py`.

Idea: Bolya et al., "Token Merging: Your ViT But Faster" (ICLR 2023), the `bipartite_soft_matching`
step; our own code.

Two implementations share one signature and one docstring (STYLE.md section 5):
- `bipartite_match_ref`: plain torch, the readable spec, also the CPU path;
- `bipartite_match_triton`: a Triton kernel that walks only the B rows of each A row's group, used
  on CUDA and tested on CPU under TRITON_INTERPRET=1.
`bipartite_match` picks one (Triton on CUDA, torch elsewhere) and logs the choice once.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os

import torch

log = logging.getLogger(__name__)

# Triton is optional (CPU-only installs run the reference) and imported only when a kernel is built:
# importing vidsieve never imports Triton, so Triton's interpreted-vs-compiled choice (made when
# triton.language is first imported) is left to whoever runs a kernel first.
HAVE_TRITON = importlib.util.find_spec("triton") is not None

_NORM_EPS = 1e-6


def _check_inputs(a, b, a_group, b_group):
    """Shared argument checks; returns groups as int64 tensors (all-zero when not given)."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"bipartite_match: a and b must be [Na, D] and [Nb, D], got {tuple(a.shape)} and {tuple(b.shape)}")
    if (a_group is None) != (b_group is None):
        raise ValueError("bipartite_match: give both a_group and b_group, or neither")
    if a_group is None:
        a_group = torch.zeros(a.shape[0], dtype=torch.int64, device=a.device)
        b_group = torch.zeros(b.shape[0], dtype=torch.int64, device=b.device)
    if a_group.shape != (a.shape[0],) or b_group.shape != (b.shape[0],):
        raise ValueError(
            f"bipartite_match: a_group must be [{a.shape[0]}] and b_group [{b.shape[0]}], "
            f"got {tuple(a_group.shape)} and {tuple(b_group.shape)}"
        )
    a_group, b_group = a_group.to(torch.int64), b_group.to(torch.int64)
    if b_group.numel() > 1 and bool((b_group[1:] < b_group[:-1]).any()):
        raise ValueError("bipartite_match: b_group must be sorted ascending (B rows grouped contiguously)")
    return a_group, b_group


def _normalize(x: torch.Tensor, already: bool = False) -> torch.Tensor:
    """[N, D] -> [N, D] float32 rows of unit length (zero rows stay zero)."""
    x = x.float()
    if already:
        return x
    return x / x.norm(dim=1, keepdim=True).clamp_min(_NORM_EPS)


def bipartite_match_ref(
    a: torch.Tensor,
    b: torch.Tensor,
    a_group: torch.Tensor | None = None,
    b_group: torch.Tensor | None = None,
    normalized: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of `a`, the most cosine-similar row of `b` within the same group.

    a: [Na, D], b: [Nb, D] (any float dtype; similarities are computed in float32).
    a_group: [Na] int64, b_group: [Nb] int64 sorted ascending; both None = one group.
    normalized: the caller promises unit-length float32 rows (skips normalizing them again).
    Returns (score [Na] float32, index [Na] int64): score = max cosine similarity, index = row of
    `b` reaching it (the lowest such row on exact ties); -inf and -1 where the group has no B row.
    """
    a_group, b_group = _check_inputs(a, b, a_group, b_group)
    score = torch.full((a.shape[0],), float("-inf"), dtype=torch.float32, device=a.device)
    index = torch.full((a.shape[0],), -1, dtype=torch.int64, device=a.device)
    if a.shape[0] == 0 or b.shape[0] == 0:
        return score, index
    an, bn = _normalize(a, normalized), _normalize(b, normalized)
    # One matmul per group: memory stays |A_g| x |B_g| instead of |A| x |B|. A is visited in group
    # order so each group's A rows are one slice (no gather when A is already grouped).
    a_order = None
    if a_group.numel() > 1 and bool((a_group[1:] < a_group[:-1]).any()):
        a_order = torch.argsort(a_group, stable=True)
        an = an[a_order]
    a_sorted = a_group if a_order is None else a_group[a_order]
    groups, counts = torch.unique_consecutive(b_group, return_counts=True)
    b_starts = torch.cumsum(counts, 0) - counts
    a_lo = torch.searchsorted(a_sorted, groups, right=False)
    a_hi = torch.searchsorted(a_sorted, groups, right=True)
    s_sorted = torch.full_like(score, float("-inf"))
    i_sorted = torch.full_like(index, -1)
    a_counts = a_hi - a_lo
    padded = groups.numel() * int(a_counts.max()) * int(counts.max())
    if groups.numel() > 1 and padded <= 2 * int((a_counts * counts).sum()) + 4096:
        # Groups of similar size (tubelets, tubelet pairs): one batched matmul instead of a loop.
        _match_padded(an, bn, a_lo, a_counts, b_starts, counts, s_sorted, i_sorted)
    else:
        _match_loop(an, bn, a_lo, a_hi, b_starts, counts, s_sorted, i_sorted)
    if a_order is None:
        return s_sorted, i_sorted
    score[a_order] = s_sorted
    index[a_order] = i_sorted
    return score, index


def _match_loop(an, bn, a_lo, a_hi, b_starts, counts, s_out, i_out) -> None:
    """Grouped matching, one matmul per group. Fills s_out/i_out [Na] (A sorted by group) in place."""
    for lo_a, hi_a, lo_b, n in zip(a_lo.tolist(), a_hi.tolist(), b_starts.tolist(), counts.tolist()):
        if hi_a == lo_a:
            continue
        sim = an[lo_a:hi_a] @ bn[lo_b : lo_b + n].T  # [|A_g|, |B_g|]
        s, j = sim.max(dim=1)
        s_out[lo_a:hi_a] = s
        i_out[lo_a:hi_a] = j + lo_b


def _match_padded(an, bn, a_lo, a_counts, b_starts, counts, s_out, i_out) -> None:
    """Grouped matching as one [G, maxA, D] x [G, D, maxB] batched matmul over zero-padded groups."""
    g = counts.numel()
    max_a, max_b = int(a_counts.max()), int(counts.max())
    if max_a == 0:
        return
    gid_a = torch.repeat_interleave(torch.arange(g), a_counts)
    rows_a = torch.cat([torch.arange(lo, lo + c) for lo, c in zip(a_lo.tolist(), a_counts.tolist())]) if g else gid_a
    slot_a = rows_a - a_lo[gid_a]
    gid_b = torch.repeat_interleave(torch.arange(g), counts)
    slot_b = torch.arange(bn.shape[0]) - b_starts[gid_b]
    pa = an.new_zeros(g, max_a, an.shape[1])
    pb = bn.new_zeros(g, max_b, bn.shape[1])
    dev = an.device
    pa[gid_a.to(dev), slot_a.to(dev)] = an[rows_a.to(dev)]
    pb[gid_b.to(dev), slot_b.to(dev)] = bn
    sim = torch.bmm(pa, pb.transpose(1, 2))  # [G, maxA, maxB]
    valid_b = torch.arange(max_b, device=dev)[None, :] < counts.to(dev)[:, None]  # [G, maxB]
    sim.masked_fill_(~valid_b[:, None, :], float("-inf"))
    s, j = sim.max(dim=2)  # first maximum on ties, as in the loop
    s_out[rows_a] = s[gid_a.to(dev), slot_a.to(dev)].to(s_out.device)
    i_out[rows_a] = (j[gid_a.to(dev), slot_a.to(dev)].cpu() + b_starts[gid_a]).to(i_out.device)


@functools.lru_cache(maxsize=2)
def _match_kernel(interpret: bool):
    """Build the Triton kernel (cached per TRITON_INTERPRET value, read by Triton when it decorates)."""
    del interpret  # only the cache key
    import triton
    import triton.language as tl

    @triton.jit
    def _bipartite_match_kernel(
        a_ptr, b_ptr, a_grp_ptr, b_grp_ptr, lo_ptr, hi_ptr, score_ptr, index_ptr,
        n_a, n_d, stride_a, stride_b,
        BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr,
    ):
        # One program = BLOCK_A rows of A; it scans only the B rows of the groups those rows use
        # ([min lo, max hi)), so grouped matching costs sum_g |A_g| |B_g|, not |A| |B|.
        pid = tl.program_id(0)
        rows = pid * BLOCK_A + tl.arange(0, BLOCK_A)
        row_ok = rows < n_a
        ga = tl.load(a_grp_ptr + rows, mask=row_ok, other=-1)
        lo = tl.load(lo_ptr + rows, mask=row_ok, other=2147483647)
        hi = tl.load(hi_ptr + rows, mask=row_ok, other=0)
        start = tl.min(lo, axis=0)
        end = tl.max(hi, axis=0)
        best = tl.full([BLOCK_A], float("-inf"), tl.float32)
        best_idx = tl.full([BLOCK_A], -1, tl.int64)
        offs_d = tl.arange(0, BLOCK_D)
        for j0 in range(start, end, BLOCK_B):
            cols = j0 + tl.arange(0, BLOCK_B)
            col_ok = cols < end
            acc = tl.zeros([BLOCK_A, BLOCK_B], tl.float32)
            for d0 in range(0, n_d, BLOCK_D):
                d_ok = (d0 + offs_d) < n_d
                av = tl.load(a_ptr + rows[:, None] * stride_a + (d0 + offs_d)[None, :],
                             mask=row_ok[:, None] & d_ok[None, :], other=0.0)
                bv = tl.load(b_ptr + cols[:, None] * stride_b + (d0 + offs_d)[None, :],
                             mask=col_ok[:, None] & d_ok[None, :], other=0.0)
                acc += tl.dot(av, tl.trans(bv))
            gb = tl.load(b_grp_ptr + cols, mask=col_ok, other=-2)
            valid = (ga[:, None] == gb[None, :]) & col_ok[None, :]
            acc = tl.where(valid, acc, float("-inf"))
            tile_best = tl.max(acc, axis=1)
            tile_arg = tl.argmax(acc, axis=1).to(tl.int64) + j0
            # Strictly greater: on exact ties the earlier tile (lower B row) wins, as in the reference.
            better = tile_best > best
            best = tl.where(better, tile_best, best)
            best_idx = tl.where(better, tile_arg, best_idx)
        tl.store(score_ptr + rows, best, mask=row_ok)
        tl.store(index_ptr + rows, best_idx, mask=row_ok)

    return _bipartite_match_kernel


def bipartite_match_triton(
    a: torch.Tensor,
    b: torch.Tensor,
    a_group: torch.Tensor | None = None,
    b_group: torch.Tensor | None = None,
    normalized: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of `a`, the most cosine-similar row of `b` within the same group.

    a: [Na, D], b: [Nb, D] (any float dtype; similarities are computed in float32).
    a_group: [Na] int64, b_group: [Nb] int64 sorted ascending; both None = one group.
    normalized: the caller promises unit-length float32 rows (skips normalizing them again).
    Returns (score [Na] float32, index [Na] int64): score = max cosine similarity, index = row of
    `b` reaching it (the lowest such row on exact ties); -inf and -1 where the group has no B row.
    """
    if not HAVE_TRITON:
        raise RuntimeError("bipartite_match_triton: triton is not installed; use bipartite_match_ref")
    a_group, b_group = _check_inputs(a, b, a_group, b_group)
    n_a, n_d = a.shape
    score = torch.full((n_a,), float("-inf"), dtype=torch.float32, device=a.device)
    index = torch.full((n_a,), -1, dtype=torch.int64, device=a.device)
    if n_a == 0 or b.shape[0] == 0:
        return score, index
    # Unit rows in float32 for every input dtype: on GPU tl.dot then runs in tf32 (fast enough for
    # a ranking), and the interpreter's bf16 dot is not trustworthy (garbage under TRITON_INTERPRET).
    an = _normalize(a, normalized).contiguous()
    bn = _normalize(b, normalized).contiguous()
    lo = torch.searchsorted(b_group, a_group, right=False)
    hi = torch.searchsorted(b_group, a_group, right=True)
    import triton

    block_d = min(128, max(16, triton.next_power_of_2(n_d)))
    block_a, block_b = 32, 64
    grid = (triton.cdiv(n_a, block_a),)
    _match_kernel(os.environ.get("TRITON_INTERPRET") == "1")[grid](
        an, bn, a_group.contiguous(), b_group.contiguous(), lo.contiguous(), hi.contiguous(), score, index,
        n_a, n_d, an.stride(0), bn.stride(0),
        BLOCK_A=block_a, BLOCK_B=block_b, BLOCK_D=block_d,
    )
    return score, index


_logged_choice: set[str] = set()


def bipartite_match(
    a: torch.Tensor,
    b: torch.Tensor,
    a_group: torch.Tensor | None = None,
    b_group: torch.Tensor | None = None,
    normalized: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dispatch: `bipartite_match_triton` for CUDA tensors when Triton is installed, else the reference.

    Same arguments and results as `bipartite_match_ref`. The choice is logged once per reason.
    """
    if a.is_cuda and HAVE_TRITON:
        impl, why = bipartite_match_triton, "triton (CUDA tensors)"
    elif a.is_cuda:
        impl, why = bipartite_match_ref, "torch reference (CUDA tensors but triton is not installed)"
    else:
        impl, why = bipartite_match_ref, f"torch reference ({a.device.type} tensors)"
    if why not in _logged_choice:
        _logged_choice.add(why)
        log.info("kernels.merge.bipartite_match: using %s", why)
    return impl(a, b, a_group, b_group, normalized)
