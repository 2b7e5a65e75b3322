# Set-up, demo and tests. The virtual environment is created on first use.
PY ?= python3
VENV := .venv
PYTHON := $(abspath $(VENV))/bin/python
STAMP := $(VENV)/.installed-$(shell cksum < requirements.txt | cut -d' ' -f1)

.PHONY: venv demo test clean-demo

$(STAMP): requirements.txt
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install --disable-pip-version-check -q -r requirements.txt
	rm -f $(VENV)/.installed-* && touch $(STAMP)

venv: $(STAMP)

## Train an undefended PSPNet-18 on the built-in synthetic dataset, evaluate it clean and under BIM.
demo: $(STAMP)
	$(PYTHON) -m util.synthetic --root dataset/synthetic
	PYTHON=$(PYTHON) EXP_NAME=demo sh tool_train/synthetic/psp_train.sh overwrite True
	PYTHON=$(PYTHON) EXP_NAME=demo sh tool_test/synthetic/psp_test.sh
	$(PYTHON) -m util.report exp/synthetic/demo/result --defense none --out exp/synthetic/demo/results.json

test: $(STAMP)
	$(PYTHON) -m pytest -q tests

clean-demo:
	rm -rf exp/synthetic/demo
