# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Set-up = libsodium headers (apt-get when root, else the command to run),
# a local venv in .venv, and an editable build of the extension.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.securekeys-built
SOURCES := setup.py pyproject.toml $(wildcard securekeys/*.pyx securekeys/*.pxd securekeys/includes/*.pxd securekeys/*.pxi)

.PHONY: all demo test bench sodium setup clean

all: setup

sodium:
	@if [ -f /usr/include/sodium.h ] || pkg-config --exists libsodium 2>/dev/null; then \
	    :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "securekeys: installing libsodium-dev with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libsodium-dev >/dev/null; \
	else \
	    echo "securekeys needs the libsodium headers; install them with:  sudo apt-get install libsodium-dev" >&2; \
	    exit 1; \
	fi

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(SOURCES) | sodium $(PY)
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

setup: sodium $(STAMP)

demo: setup
	$(PY) -m securekeys.demo

test: setup
	$(PY) -m pytest -q
	$(PY) -m mypy --strict securekeys tests/typed_usage.py
	$(PY) -m mypy.stubtest securekeys --allowlist tests/stubtest-allowlist.txt

bench: setup
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info securekeys/*.c securekeys/*.so
