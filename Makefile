# The two commands a newcomer needs: `make demo` and `make test` (both set everything up first).
.PHONY: demo test setup lock bench lint

setup:
	bash scripts/setup.sh

# after editing pyproject.toml or requirements/*.in: regenerate uv.lock and requirements/*.txt
lock:
	bash scripts/lock.sh

demo: setup
	.venv/bin/sensorium demo

test:
	bash scripts/test.sh

bench: setup
	.venv/bin/python -m benchmarks

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .
