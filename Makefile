# Conveniences; the commands themselves need only Python: see dev.py.
.PHONY: demo test lint soak

demo:
	python3 dev.py demo

test:
	python3 dev.py test

lint:
	.venv/bin/pip install -q -e ".[test,dev]" && .venv/bin/ruff check rqcluster workers tests benchmarks examples && .venv/bin/mypy rqcluster workers benchmarks

# A longer chaos run (MINUTES=10 by default): random kills of slaves, master, redis.
soak:
	python3 dev.py test --co -q >/dev/null && .venv/bin/python -m tests.chaos.soak --minutes $${MINUTES:-10}
