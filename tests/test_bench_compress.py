"""bench/compress.py runs end to end on a tiny size (encoder timing passed in, so no ViT runs)."""

import argparse

from bench import compress as bench


def test_bench_compress_tiny(capsys):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--tokens", "256", "512", "--width", "64", "--repeats", "1",
                              "--strategies", "codec", "tome", "divprune", "--divprune-max", "256",
                              "--encoder-seconds", "1.0", "2.0", "--device", "cpu"])
    assert bench.run(args) == 0
    out = capsys.readouterr().out
    assert "## Compression" in out and "| tome |" in out
    assert "| divprune |" in out and "not run" in out  # 512 > --divprune-max
    assert "(3.91 ms/token)" in out  # 2.0 s / 512 tokens


def test_synthetic_pack_matches_its_signals():
    tokens, signals, query = bench.synthetic_pack(512, 32, "cpu")
    assert tokens.grids.tolist() == [[2, 16, 16]] and signals.num_frames == 4 and query.shape == (12, 32)
    moving = signals.motion.reshape(2, 2, 16, 16).max(1) > 0  # the blob's cells per tubelet
    assert moving.sum() == 2 * 16
