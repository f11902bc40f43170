"""kernels/merge.py: the Triton bipartite-match kernel against its torch reference.

The Triton kernel runs on CPU through the interpreter: TRITON_INTERPRET must be set before Triton
is first imported (kernels.merge imports it lazily, when the kernel is first built), so it is set
here before anything else; tests/conftest.py does the same for the whole suite.
"""

import importlib
import os
import sys

os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

triton = pytest.importorskip("triton")

if "kernels.merge" in sys.modules:
    merge = importlib.reload(sys.modules["kernels.merge"])
else:
    merge = importlib.import_module("kernels.merge")


def test_triton_path_is_interpreted():
    from triton.runtime.interpreter import InterpretedFunction

    kernel = merge._match_kernel(True)
    assert isinstance(kernel, InterpretedFunction), type(kernel)


def _groups(n: int, n_groups: int, gen: torch.Generator) -> torch.Tensor:
    return torch.sort(torch.randint(0, n_groups, (n,), generator=gen)).values


def _check_same(a, b, ga, gb, atol):
    s_ref, i_ref = merge.bipartite_match_ref(a, b, ga, gb)
    s_tri, i_tri = merge.bipartite_match_triton(a, b, ga, gb)
    assert torch.equal(torch.isinf(s_ref), torch.isinf(s_tri)), f"no-match rows differ: ref {s_ref} triton {s_tri}"
    fin = torch.isfinite(s_ref)
    assert torch.allclose(s_ref[fin], s_tri[fin], atol=atol), f"scores differ: max |diff| {(s_ref[fin] - s_tri[fin]).abs().max()}"
    # Indices may differ only on near-ties; the chosen B row must then score as well.
    an, bn = merge._normalize(a), merge._normalize(b)
    for r in (i_ref != i_tri).nonzero().flatten().tolist():
        assert i_tri[r] >= 0, f"row {r}: triton found no match, ref found {int(i_ref[r])}"
        assert int(gb[i_tri[r]]) == int(ga[r]), f"row {r}: triton matched outside the group"
        got = float(an[r] @ bn[i_tri[r]])
        assert got >= float(s_ref[r]) - atol, f"row {r}: triton match {got} worse than ref {float(s_ref[r])}"
    assert torch.equal(i_ref == -1, i_tri == -1)


@pytest.mark.parametrize(
    "n_a,n_b,d,n_groups",
    [(1, 1, 1, 1), (7, 5, 3, 1), (33, 65, 17, 1), (50, 40, 130, 3), (100, 97, 64, 7), (5, 3, 8, 4)],
)
def test_triton_matches_reference_random(n_a, n_b, d, n_groups):
    gen = torch.Generator().manual_seed(n_a * 1000 + n_b * 10 + d)
    a = torch.randn(n_a, d, generator=gen)
    b = torch.randn(n_b, d, generator=gen)
    ga, gb = _groups(n_a, n_groups, gen), _groups(n_b, n_groups, gen)
    _check_same(a, b, ga, gb, atol=1e-4)


def test_triton_matches_reference_without_groups_and_unsorted_a():
    gen = torch.Generator().manual_seed(3)
    a, b = torch.randn(41, 24, generator=gen), torch.randn(19, 24, generator=gen)
    _check_same(a, b, torch.zeros(41, dtype=torch.int64), torch.zeros(19, dtype=torch.int64), atol=1e-4)
    # a_group need not be sorted (only B must be contiguous per group).
    ga = torch.randint(0, 3, (41,), generator=gen)
    gb = _groups(19, 3, gen)
    _check_same(a, b, ga, gb, atol=1e-4)
    s, i = merge.bipartite_match_triton(a, b)
    s_ref, i_ref = merge.bipartite_match_ref(a, b)
    assert torch.allclose(s, s_ref, atol=1e-4)


def test_triton_bf16_inputs():
    gen = torch.Generator().manual_seed(5)
    a, b = torch.randn(20, 32, generator=gen), torch.randn(30, 32, generator=gen)
    s_ref, _ = merge.bipartite_match_ref(a.bfloat16(), b.bfloat16())
    s_tri, _ = merge.bipartite_match_triton(a.bfloat16(), b.bfloat16())
    assert torch.allclose(s_ref, s_tri, atol=2e-2), (s_ref - s_tri).abs().max()


def test_exact_ties_pick_lowest_row_in_both():
    # Static backgrounds give identical embeddings: both paths must agree on the first equal row.
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]).repeat(20, 1)  # 80 rows, > BLOCK_B
    a = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    for fn in (merge.bipartite_match_ref, merge.bipartite_match_triton):
        s, i = fn(a, b)
        assert i.tolist() == [0, 1], f"{fn.__name__}: {i.tolist()}"
        assert torch.allclose(s, torch.ones(2))


def test_reference_against_bruteforce():
    gen = torch.Generator().manual_seed(9)
    a, b = torch.randn(12, 6, generator=gen), torch.randn(9, 6, generator=gen)
    ga, gb = torch.randint(0, 2, (12,), generator=gen), torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1])
    s, i = merge.bipartite_match_ref(a, b, ga, gb)
    for r in range(12):
        best, arg = -2.0, -1
        for c in range(9):
            if gb[c] == ga[r]:
                v = float(torch.nn.functional.cosine_similarity(a[r], b[c], dim=0))
                if v > best:
                    best, arg = v, c
        assert int(i[r]) == arg and abs(float(s[r]) - best) < 1e-5


def test_empty_and_missing_groups():
    a, b = torch.randn(4, 8), torch.randn(0, 8)
    for fn in (merge.bipartite_match_ref, merge.bipartite_match_triton):
        s, i = fn(a, b)
        assert torch.isinf(s).all() and (i == -1).all()
        s, i = fn(torch.randn(0, 8), torch.randn(3, 8))
        assert s.shape == (0,) and i.shape == (0,)
        # Group 5 has no B rows.
        s, i = fn(torch.randn(2, 8), torch.randn(3, 8), torch.tensor([0, 5]), torch.tensor([0, 0, 1]))
        assert i[1] == -1 and torch.isinf(s[1]) and i[0] in (0, 1)


def test_bad_arguments():
    with pytest.raises(ValueError, match="sorted"):
        merge.bipartite_match_ref(torch.randn(2, 4), torch.randn(3, 4), torch.tensor([0, 1]), torch.tensor([1, 0, 0]))
    with pytest.raises(ValueError, match=r"\[Na, D\]"):
        merge.bipartite_match(torch.randn(2, 4), torch.randn(3, 5))
    with pytest.raises(ValueError, match="both"):
        merge.bipartite_match(torch.randn(2, 4), torch.randn(3, 4), torch.tensor([0, 1]), None)


def test_dispatch_uses_reference_on_cpu(caplog):
    caplog.set_level("INFO", logger="kernels.merge")
    merge._logged_choice.clear()
    a, b = torch.randn(5, 4), torch.randn(6, 4)
    s, i = merge.bipartite_match(a, b)
    s2, i2 = merge.bipartite_match(a, b)
    assert torch.equal(i, merge.bipartite_match_ref(a, b)[1])
    msgs = [r.getMessage() for r in caplog.records if "bipartite_match" in r.getMessage()]
    assert len(msgs) == 1 and "reference" in msgs[0], msgs


@pytest.mark.parametrize("sizes", [[(40, 30)] * 6, [(200, 200)] + [(1, 1)] * 30, [(5, 0), (3, 4), (0, 6)]])
def test_reference_batched_and_looped_groups_match_dense(sizes):
    # Similar group sizes take the padded batched matmul, very unequal ones the per-group loop.
    gen = torch.Generator().manual_seed(len(sizes))
    ga = torch.cat([torch.full((na,), g) for g, (na, _) in enumerate(sizes)])
    gb = torch.cat([torch.full((nb,), g) for g, (_, nb) in enumerate(sizes)])
    a, b = torch.randn(ga.numel(), 16, generator=gen), torch.randn(gb.numel(), 16, generator=gen)
    perm = torch.randperm(ga.numel(), generator=gen)  # A need not be grouped
    a, ga = a[perm], ga[perm]
    s, i = merge.bipartite_match_ref(a, b, ga, gb)
    sim = merge._normalize(a) @ merge._normalize(b).T
    sim[ga[:, None] != gb[None, :]] = float("-inf")
    s_dense, i_dense = sim.max(dim=1)
    i_dense[torch.isinf(s_dense)] = -1
    assert torch.allclose(s, s_dense, atol=1e-5) and torch.equal(i, i_dense)
