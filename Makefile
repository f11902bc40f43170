# The README's two Quick start commands are `make demo` and `make test`; .ci/run runs `make test`.
.PHONY: setup demo test bench-decode
PY := .venv/bin/python

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/vidsieve demo

test: setup
	bash scripts/setup-browser.sh
	$(PY) -m pytest -q

bench-decode: setup
	.venv/bin/vidsieve bench-decode
