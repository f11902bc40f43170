"""The `vidsieve` entry point: subcommand help, unknown commands, and errors as one line."""

import subprocess
import sys

from pipeline.cli import SUBCOMMANDS, main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, timeout=120)


def test_subcommand_help_lists_its_arguments():
    r = run_cli("ask", "--help")
    assert r.returncode == 0
    assert "--keep-ratio" in r.stdout and "--tokens-per-frame" in r.stdout


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    assert all(name in out for name in SUBCOMMANDS)


def test_every_subcommand_module_imports_and_adds_arguments():
    import argparse
    import importlib

    for name, (module, _) in SUBCOMMANDS.items():
        mod = importlib.import_module(module)
        mod.add_arguments(argparse.ArgumentParser(prog=name))
        assert callable(mod.run), name


def test_user_error_is_one_line_without_traceback(tmp_path):
    r = run_cli("ask", str(tmp_path / "missing.mp4"), "what?", "--model", str(tmp_path))
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vidsieve: error:") and "Traceback" not in r.stderr
