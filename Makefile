# Set-up, demo and tests (lint with ruff, then pytest). The virtual environment is created on first use.
PY ?= python3
VENV := .venv
PYTHON := $(abspath $(VENV))/bin/python
STAMP := $(VENV)/.installed-$(shell cksum < requirements.txt | cut -d' ' -f1)

.PHONY: venv demo demo-strong demo-pirat benchmark-demo test clean-demo

$(STAMP): requirements.txt
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install --disable-pip-version-check -q -r requirements.txt
	rm -f $(VENV)/.installed-* && touch $(STAMP)

venv: $(STAMP)

## The benchmark (python -m evaluation.benchmark, docs/benchmark.md) on the embedded zoo, zoo/demo.yaml: the models
## of make demo-strong (run it first), clean, under DDC-AT's BIM-2 and SEA at 4/255 and 8/255 (10 iterations per
## member, a reduced budget), on the first BENCH_DEMO_IMAGES val images; exp/synthetic/benchmark/leaderboard.md.
BENCH_DEMO_IMAGES := 2
benchmark-demo: $(STAMP)
	$(PYTHON) -m tool_data.synthetic --root dataset/synthetic && mkdir -p exp/synthetic
	$(PYTHON) -m evaluation.benchmark --zoo zoo/demo.yaml --models-dir exp/synthetic --out exp/synthetic/benchmark \
	  --images $(BENCH_DEMO_IMAGES) --attacks config/attacks_benchmark_demo.yaml panels 0

## Train PSPNet-18 on the synthetic set without defense, fine-tune it with SAT, DDC-AT and SAM; evaluate each
## on the first DEMO_IMAGES val images under DEMO_ATTACKS (clean, BIM-2, SegPGD-20, worst case); picture each,
## print one table. Epochs of 50 iterations; the split keeps the demo under 15 minutes on 2 cores (docs/demo.md).
DEMO_NONE_EPOCHS := 8
DEMO_SAT := epochs 4 save_freq 4 base_lr 0.01
DEMO_DDCAT := epochs 2 save_freq 2 base_lr 0.01
DEMO_SAM := epochs 2 save_freq 2 base_lr 0.01
DEMO_IMAGES := 10
DEMO_ATTACKS := config/attacks_demo.yaml
demo: $(STAMP)
	$(PYTHON) -m tool_data.synthetic --root dataset/synthetic --overwrite
	rm -f exp/synthetic/demo/results.json
	for defense in none sat ddcat sam; do \
	  if [ $$defense = none ]; then name=demo; suffix=; \
	    extra="epochs $(DEMO_NONE_EPOCHS) save_freq $(DEMO_NONE_EPOCHS)"; \
	  else name=demo_$$defense; suffix=_$$defense; \
	    extra="weight exp/synthetic/demo/model/train_epoch_$(DEMO_NONE_EPOCHS).pth"; \
	    case $$defense in sat) extra="$$extra $(DEMO_SAT)";; ddcat) extra="$$extra $(DEMO_DDCAT)";; \
	      sam) extra="$$extra $(DEMO_SAM)";; esac; fi; \
	  PYTHON=$(PYTHON) EXP_NAME=$$name sh tool_train/synthetic/psp_train$$suffix.sh overwrite True $$extra || exit 1; \
	  PYTHON=$(PYTHON) EXP_NAME=$$name CONFIG=config/synthetic/synthetic_pspnet18$$suffix.yaml \
	    ATTACKS=$(DEMO_ATTACKS) sh tool_test/synthetic/robust_eval.sh overwrite True panels 0 \
	    index_step $(DEMO_IMAGES) || exit 1; \
	  model=$$(ls exp/synthetic/$$name/model/train_epoch_*.pth | sort -V | tail -n 1); \
	  $(PYTHON) -m evaluation.visualize --config config/synthetic/synthetic_pspnet18$$suffix.yaml \
	    --out exp/synthetic/$$name/picture.png model_path $$model || exit 1; \
	  $(PYTHON) -m evaluation.report --strong exp/synthetic/$$name/robust --defense $$defense \
	    --out exp/synthetic/demo/results.json || exit 1; \
	done

## Every defense at one budget, judged by the strong attacks: an undefended model (STRONG_BASE_EPOCHS, trained
## when missing) fine-tuned STRONG_EPOCHS epochs with each defense at eps 0.03 (TRADES at beta 1: beta 6
## collapses here); each evaluated on STRONG_IMAGES val images under STRONG_ATTACKS; one table and one curve in
## exp/synthetic/strong/ (measured: docs/demo.md). STRONG_RUNS are family:defense, psp the PSPNet-18 and upernet
## the tiny UperNet-ConvNeXt (PIR-AT's family, its own base). The data step keeps an up-to-date set and refuses
## another.
STRONG_RUNS := psp:none psp:sat psp:ddcat psp:sam psp:pgd_at psp:trades upernet:none upernet:pgd_at
STRONG_BASE_EPOCHS := 12
STRONG_BASE := exp/synthetic/strong_base/model/train_epoch_$(STRONG_BASE_EPOCHS).pth
STRONG_UPERNET_BASE_EPOCHS := 40
STRONG_UPERNET_BASE := exp/synthetic/strong_base_upernet/model/train_epoch_$(STRONG_UPERNET_BASE_EPOCHS).pth
STRONG_EPOCHS := 2
STRONG_IMAGES := 4
STRONG_ADV := adv_eps 0.03 adv_steps 3 adv_step_size 0.01
STRONG_ATTACKS := config/attacks_demo_strong.yaml
demo-strong: $(STAMP)
	$(PYTHON) -m tool_data.synthetic --root dataset/synthetic
	test -f $(STRONG_BASE) || PYTHON=$(PYTHON) EXP_NAME=strong_base sh tool_train/synthetic/psp_train.sh \
	  overwrite True epochs $(STRONG_BASE_EPOCHS) save_freq $(STRONG_BASE_EPOCHS)
	test -f $(STRONG_UPERNET_BASE) || PYTHON=$(PYTHON) EXP_NAME=strong_base_upernet \
	  sh tool_train/synthetic/upernet_demo_train.sh overwrite True epochs $(STRONG_UPERNET_BASE_EPOCHS) \
	  save_freq $(STRONG_UPERNET_BASE_EPOCHS)
	rm -f exp/synthetic/strong/results.json
	for run in $(STRONG_RUNS); do \
	  family=$${run%%:*}; defense=$${run#*:}; suffix=_$$defense; \
	  case $$family in psp) script=psp; config=pspnet18; name=strong_$$defense; label=$$defense; \
	    extra="weight $(STRONG_BASE)";; \
	  upernet) script=upernet_demo; config=upernet_demo; name=strong_upernet_$$defense; label=upernet_$$defense; \
	    extra="weight $(STRONG_UPERNET_BASE)";; esac; \
	  case $$defense in none) suffix=;; pgd_at) extra="$$extra $(STRONG_ADV)";; \
	    trades) extra="$$extra $(STRONG_ADV) trades_beta 1";; esac; \
	  PYTHON=$(PYTHON) EXP_NAME=$$name sh tool_train/synthetic/$${script}_train$$suffix.sh overwrite True \
	    $$extra epochs $(STRONG_EPOCHS) save_freq $(STRONG_EPOCHS) base_lr 0.01 || exit 1; \
	  PYTHON=$(PYTHON) EXP_NAME=$$name CONFIG=config/synthetic/synthetic_$$config$$suffix.yaml \
	    ATTACKS=$(STRONG_ATTACKS) sh tool_test/synthetic/robust_eval.sh overwrite True panels 0 \
	    index_step $(STRONG_IMAGES) || exit 1; \
	  $(PYTHON) -m evaluation.report --strong exp/synthetic/$$name/robust --defense $$label \
	    --out exp/synthetic/strong/results.json --curve exp/synthetic/strong/robustness_curve.png || exit 1; \
	done

## PIR-AT's claim in miniature: the tiny UperNet-ConvNeXt pre-trained on a different synthetic set (another seed,
## the class colour hint at half its rate: the stand-in for ImageNet), adversarially (PGD-AT, PIR-AT's PGD-5 at
## 4/255) or clean, for PIRAT_PRE_EPOCHS; then fine-tuned PIRAT_EPOCHS on the demo's set with PGD-AT from each of them and
## from scratch, PIR-AT's recipe (AdamW, warm-up then poly) throughout; each judged on PIRAT_IMAGES val images by
## SegPGD and SEA at 4/255 and 8/255 (exp/synthetic/pirat/results.json; measured: docs/demo.md).
PIRAT_DATA := dataset/synthetic_pretrain
PIRAT_DATA_OPTS := --seed 7 --colour-hint 0.5
PIRAT_PRE_EPOCHS := 24
PIRAT_EPOCHS := 4
PIRAT_IMAGES := 10
PIRAT_RECIPE := optimizer adamw base_lr 0.001 weight_decay 0.01 head_lr_mult 1 warmup_epochs 1 \
  warmup_ratio 0.00001 power 1.0 adv_eps 0.0157 adv_steps 5 adv_step_size 0.01 adv_random_start False \
  adv_keep best_batch_loss
PIRAT_ATTACKS := config/attacks_demo_pirat.yaml
demo-pirat: $(STAMP)
	$(PYTHON) -m tool_data.synthetic --root dataset/synthetic
	$(PYTHON) -m tool_data.synthetic --root $(PIRAT_DATA) $(PIRAT_DATA_OPTS)
	for pre in robust clean; do \
	  model=exp/synthetic/pirat_pre_$$pre/model/train_epoch_$(PIRAT_PRE_EPOCHS).pth; \
	  suffix=; [ $$pre = robust ] && suffix=_pgd_at; \
	  test -f $$model || PYTHON=$(PYTHON) EXP_NAME=pirat_pre_$$pre sh tool_train/synthetic/upernet_demo_train$$suffix.sh \
	    overwrite True data_root $(PIRAT_DATA) train_list $(PIRAT_DATA)/list/train.txt \
	    val_list $(PIRAT_DATA)/list/val.txt epochs $(PIRAT_PRE_EPOCHS) save_freq $(PIRAT_PRE_EPOCHS) \
	    $(PIRAT_RECIPE) || exit 1; \
	done
	rm -f exp/synthetic/pirat/results.json
	for start in robust clean scratch; do \
	  init="pretrained True init_path exp/synthetic/pirat_pre_$$start/model/train_epoch_$(PIRAT_PRE_EPOCHS).pth"; \
	  [ $$start = scratch ] && init="pretrained False"; \
	  PYTHON=$(PYTHON) EXP_NAME=pirat_$$start sh tool_train/synthetic/upernet_demo_train_pgd_at.sh overwrite True \
	    $$init epochs $(PIRAT_EPOCHS) save_freq $(PIRAT_EPOCHS) $(PIRAT_RECIPE) || exit 1; \
	  PYTHON=$(PYTHON) EXP_NAME=pirat_$$start CONFIG=config/synthetic/synthetic_upernet_demo_pgd_at.yaml \
	    ATTACKS=$(PIRAT_ATTACKS) sh tool_test/synthetic/robust_eval.sh overwrite True panels 0 \
	    index_step $(PIRAT_IMAGES) || exit 1; \
	  $(PYTHON) -m evaluation.report --strong exp/synthetic/pirat_$$start/robust --defense pgd_at_from_$$start \
	    --out exp/synthetic/pirat/results.json --curve exp/synthetic/pirat/robustness_curve.png || exit 1; \
	done

test: $(STAMP)
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m pytest -q tests

clean-demo:
	rm -rf exp/synthetic/demo exp/synthetic/demo_sat exp/synthetic/demo_ddcat exp/synthetic/demo_sam \
	  exp/synthetic/strong exp/synthetic/strong_* exp/synthetic/pirat exp/synthetic/pirat_*
