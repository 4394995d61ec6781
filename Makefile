# Vigia: `make run` starts the whole desk on this machine; `make test` runs the whole suite.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FASHION_MNIST := /usr/share/datasets/fashion-mnist
DARKNET_DATA := /usr/share/darknet/data
# Demo defaults: debug on (demo accounts, runserver), port 8000. `make run DEBUG=0 PORT=9000` overrides them.
DEBUG ?= 1
PORT ?= 8000
# Fashion-MNIST pair for the learning-loop simulation, prohibited class first.
CLASSES ?= Pullover,Coat
# No cache directory in the tree and a ceiling per test, so a hung worker fails one test instead of the run.
PYTEST_FLAGS ?= -p no:cacheprovider --timeout=600
# Runs a command with a Redis that answers: REDIS_URL if it does, else an embedded one stopped afterwards.
WITH_REDIS := $(PY) -m moderation.devstack with-redis --

FAST_MARKERS := not slow and not worker and not browser

.PHONY: install compiler dataset run test test-fast lint format bench bench-classifier bench-loop bench-retrain bench-rollout bench-webhooks bench-web-memory bench-hashes bench-pairs bench-ood-share bench-small-photos bench-centre-margin bench-faults bench-load clean

$(STAMP): requirements.txt
	@if [ ! -x $(PY) ]; then \
	  command -v $(PYTHON) >/dev/null 2>&1 || { echo "Python 3.11 is required ($(PYTHON) not found)." >&2; exit 2; }; \
	  echo "Creating $(VENV) with $(PYTHON)"; \
	  $(PYTHON) -m venv $(VENV); \
	fi
	@$(MAKE) --no-print-directory compiler
	@echo "Installing requirements.txt into $(VENV) (the first time downloads TensorFlow: a few minutes)"
	$(PY) -m pip install --quiet --disable-pip-version-check --no-input --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check --no-input -r requirements.txt
	@touch $(STAMP)

install: $(STAMP)

# pdqhash is built from source by pip: a C++ compiler must be there (installed with apt-get when root).
compiler:
	@if ! command -v c++ >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing g++ with apt-get (pdqhash is compiled from source)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ </dev/null >/dev/null; \
	  else \
	    echo "A C++ compiler is needed to build pdqhash: run 'sudo apt-get install g++'." >&2; exit 2; \
	  fi; \
	fi

# The demo data: Debian's Fashion-MNIST package (product photos) and darknet's sample photos (photos of other
# things: classifier/other_photos.py), installed when missing and apt is usable (root).
dataset:
	@missing=""; \
	[ -d $(FASHION_MNIST) ] || missing="$$missing dataset-fashion-mnist"; \
	[ -d $(DARKNET_DATA) ] || missing="$$missing darknet"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing$$missing with apt-get"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing </dev/null >/dev/null; \
	  else \
	    echo "Missing:$$missing. Run 'sudo apt-get install$$missing'" \
	      "(online machines can also let Keras download Fashion-MNIST; without darknet its photos are skipped)." >&2; \
	  fi; \
	fi

run: $(STAMP) dataset
	DEBUG=$(DEBUG) PORT=$(PORT) $(PY) manage.py rundesk

# pytest exits 5 when it collected nothing; for "the whole suite" that is a failure, reported as such.
run_pytest = rc=0; $(WITH_REDIS) $(PY) -m pytest $(PYTEST_FLAGS) $(1) $(ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make $@: no tests were collected" >&2; exit 1; fi; exit $$rc

test: $(STAMP)
	@$(call run_pytest,)

# The quick lane while working: no real training, no real worker, no browser (`make test` runs those too).
test-fast: $(STAMP)
	@$(call run_pytest,-m "$(FAST_MARKERS)")

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP)
	@test -f bench/pipeline.py || { echo "bench/pipeline.py is not in this checkout." >&2; exit 2; }
	$(PY) bench/pipeline.py $(ARGS)

bench-classifier: $(STAMP)
	@test -f bench/classifier.py || { echo "bench/classifier.py is not in this checkout." >&2; exit 2; }
	$(PY) bench/classifier.py $(ARGS)

bench-loop: $(STAMP)
	@test -f bench/loop.py || { echo "bench/loop.py is not in this checkout." >&2; exit 2; }
	$(PY) bench/loop.py $(if $(filter command line environment,$(origin CLASSES)),--classes $(CLASSES)) $(ARGS)

bench-rollout: $(STAMP)
	$(PY) bench/rollout.py $(ARGS)

bench-retrain: $(STAMP) dataset
	$(PY) bench/retrain.py --classes $(CLASSES) $(ARGS)

bench-webhooks: $(STAMP) dataset
	$(PY) bench/webhooks.py $(ARGS)

bench-web-memory: $(STAMP) dataset
	$(PY) bench/web_memory.py $(ARGS)

bench-hashes: $(STAMP) dataset
	$(PY) bench/hashes.py $(ARGS)

# Fashion-MNIST pairs at the defaults, every model choice by cross-validation: bench/results/pairs.json.
bench-pairs: $(STAMP) dataset
	$(PY) bench/pairs.py $(ARGS)

bench-ood-share: $(STAMP) dataset
	$(PY) bench/ood_share.py $(ARGS)

# How photos under 64 pixels on a side are hashed and whether they match, chosen on training photos.
bench-small-photos: $(STAMP) dataset
	$(PY) bench/small_photos.py $(ARGS)

# How much of a photo's borders its centre hash cuts, chosen on Fashion-MNIST training items: bench/results/centre_margin.json.
bench-centre-margin: $(STAMP) dataset
	$(PY) bench/centre_margin.py $(ARGS)

# Its own Redis, PostgreSQL (initdb) and media tmpfs; `make bench-faults ARGS="--quick --only redis"` for a smoke run.
bench-faults: $(STAMP)
	$(PY) bench/faults.py $(ARGS)

# Locust against gunicorn (DEBUG off): 50 API clients and 8 moderators for 5 minutes (`ARGS="--duration 60"`).
bench-load: $(STAMP)
	$(PY) bench/load.py $(ARGS)

clean:
	rm -rf .pytest_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
