# Vigia: `make run` starts the whole desk on this machine; `make test` runs the whole suite.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FASHION_MNIST := /usr/share/datasets/fashion-mnist
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

.PHONY: install compiler dataset run test test-fast lint format bench bench-classifier bench-loop bench-retrain bench-rollout bench-hashes bench-data clean

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

# The demo data: Debian's Fashion-MNIST package, installed when missing and apt is usable (root).
dataset:
	@if [ ! -d $(FASHION_MNIST) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing dataset-fashion-mnist with apt-get"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist </dev/null >/dev/null; \
	  else \
	    echo "Fashion-MNIST is not in $(FASHION_MNIST): run 'sudo apt-get install dataset-fashion-mnist'" \
	      "(online machines can also let Keras download it)." >&2; \
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
	$(PY) bench/loop.py --classes $(CLASSES) $(ARGS)

bench-rollout: $(STAMP)
	$(PY) bench/rollout.py $(ARGS)

bench-retrain: $(STAMP) dataset
	$(PY) bench/retrain.py --classes $(CLASSES) $(ARGS)

# Real photos for the hash benchmark: Debian's darknet data images (apt-get, root) and the ImageNet samples inside
# the PyPI foolbox wheel (downloaded into var/bench-data, never installed). Missing ones are skipped and named.
BENCH_DATA := var/bench-data
bench-data: $(STAMP)
	@mkdir -p $(BENCH_DATA)
	@ls $(BENCH_DATA)/foolbox-*.whl >/dev/null 2>&1 || \
	  $(PY) -m pip download --quiet --disable-pip-version-check --no-input --no-deps foolbox==3.3.4 -d $(BENCH_DATA) || \
	  echo "Could not download the foolbox wheel: its ImageNet samples are skipped." >&2
	@if [ ! -d /usr/share/darknet/data ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing darknet (its data photos) with apt-get"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq darknet </dev/null >/dev/null || true; \
	  else \
	    echo "darknet is not installed ('sudo apt-get install darknet'): its photos are skipped." >&2; \
	  fi; \
	fi

bench-hashes: $(STAMP) dataset bench-data
	$(PY) bench/hashes.py $(ARGS)

clean:
	rm -rf .pytest_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
