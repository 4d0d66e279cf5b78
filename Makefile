# The README's two commands: `make demo` (the whole pipeline on the embedded demo data) and
# `make test` (the test suite). Both create or reuse .venv and install everything pinned.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.soco_d2-installed
DEMO_OUT ?= demo_output

.PHONY: env test test-portable demo bench bench-loader bench-proposals bench-transfer bench-methods bench-methods-fulllabel bench-data-real bench-real clean-env

$(STAMP): requirements.txt setup.py tools/setup_env.sh
	bash tools/setup_env.sh $(VENV)
	touch $(STAMP)

env: $(STAMP)

test: $(STAMP)
	$(PYTHON) -m pytest -q tests

# the tests that compare with stored numbers, under each CPU kernel choice (dev/test_portable.sh)
test-portable: $(STAMP)
	bash dev/test_portable.sh $(PYTHON)

demo: $(STAMP)
	$(PYTHON) tools/pipeline.py --preset demo --output $(DEMO_OUT)

bench: $(STAMP)
	$(PYTHON) tools/benchmark.py --config-file configs/pretrain/soco_R50_FPN_100ep.yaml --iters 3 --batch 8

# each method's full data loader (decode included) on 500x375 JPEGs, 1 and 2 workers, the data
# path before and after its speed-ups side by side (docs/benchmarks.md, "Data loader")
bench-loader: $(STAMP)
	$(PYTHON) tools/benchmark_loader.py --methods soco,mocov2 --workers 1,2 --seconds 6 --rounds 3 --compare

bench-proposals: $(STAMP)
	# the official pipeline's algorithm (AlpacaDB's selective search), measured side by side
	$(PYTHON) -m pip install -q --no-deps selectivesearch==0.4
	$(PYTHON) tools/benchmark_proposals.py

bench-transfer: $(STAMP)
	$(PYTHON) tools/pipeline.py --preset bench-transfer --output bench_transfer_output

# every pretraining method vs scratch on the demo data in the low-label protocol: 12 of the 120
# train images labelled (one seeded subset for every init and seed), the 600 unlabeled images for
# pretraining, 3 paired seeds (soco_d2/pipeline/presets.py)
bench-methods: $(STAMP)
	$(PYTHON) tools/pipeline.py --preset bench-methods --output bench_methods_output

# the same pretrainings, every fine-tune on all 120 labelled images (800 iterations), 3 seeds
bench-methods-fulllabel: $(STAMP)
	$(PYTHON) tools/pipeline.py --preset bench-methods-fulllabel --output bench_methods_fulllabel_output

# real photographs for the method comparison: NEON tree crowns shipped by the deepforest
# package (docs/real_data.md), tiled into $DETECTRON2_DATASETS/neon_trees
bench-data-real: $(STAMP)
	$(PYTHON) -m pip install -q --no-deps -r requirements-bench.txt
	$(PYTHON) datasets/prepare_neon_trees.py

# the low-label protocol on those photographs: 20 of the 106 train tiles labelled, the 243
# unlabeled windows for pretraining, SoCo, MoCo v2, DenseCL, DetCo and scratch, 3 paired seeds;
# the detector configs/real/faster_rcnn_R18_FPN_neon_trees_lowlabel.yaml
bench-real: bench-data-real
	$(PYTHON) tools/pipeline.py --preset bench-real --output bench_real_output

clean-env:
	rm -rf $(VENV)
