# Conveniences; the commands themselves need only Python: see dev.py.
.PHONY: demo test lint

demo:
	python3 dev.py demo

test:
	python3 dev.py test

lint:
	.venv/bin/pip install -q -e ".[test,dev]" && .venv/bin/ruff check rqcluster workers tests benchmarks && .venv/bin/mypy rqcluster workers benchmarks
