#!/bin/sh
# The build prerequisites of securekeys on Debian/Ubuntu.  Whatever is missing
# is installed with apt-get when this runs as root on a machine that has it;
# otherwise the one `apt-get install ...` line to run is printed and the
# script fails.  Each check looks for what the build uses, not for a package
# name, so that a Python or a libsodium installed some other way counts.
#
# PYTHON: the interpreter that will make the venv and build (default python3).
set -eu
PYTHON=${PYTHON:-python3}
missing=""

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    missing="$missing python3 python3-venv python3-dev"
else
    # Debian splits ensurepip (which `python3 -m venv` needs) and Python.h
    # out of python3; a pyenv or python.org build has both.
    "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1 || missing="$missing python3-venv"
    "$PYTHON" -c 'import os, sys, sysconfig
sys.exit(not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
        || missing="$missing python3-dev"
fi
command -v gcc >/dev/null 2>&1 || missing="$missing gcc"
# gcc only recommends the C library headers.
[ -f /usr/include/stdio.h ] || missing="$missing libc6-dev"
command -v pkg-config >/dev/null 2>&1 || missing="$missing pkg-config"
if [ ! -f /usr/include/sodium.h ] && ! pkg-config --exists libsodium 2>/dev/null; then
    missing="$missing libsodium-dev"
fi
# The Argon2 reference library: password_key runs Argon2id through it so that
# its working memory can be guarded memory (libsodium's crypto_pwhash cannot).
if [ ! -f /usr/include/argon2.h ] && ! pkg-config --exists libargon2 2>/dev/null; then
    missing="$missing libargon2-dev"
fi

# For the tests only, and never a reason to fail: libfuse3 lets
# tests/kubelet_fuse.py serve a secret volume whose update happens inside the
# kernel's lookup (its binding, mfusepy, is a test extra in pyproject.toml).
# Installed with the rest where apt-get can; elsewhere those tests skip and
# their skip reason says what to install.
optional="fuse3"
for lib in /lib/*/libfuse3.so.3 /usr/lib/*/libfuse3.so.3 /usr/lib/libfuse3.so.3 /usr/lib64/libfuse3.so.3; do
    if [ -e "$lib" ]; then optional=""; fi
done
[ -e /dev/fuse ] || optional=""
if [ -n "$optional" ] && [ -z "$missing" ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "securekeys: installing test prerequisites with apt-get: $optional"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $optional >/dev/null; } \
        || echo "securekeys: could not install $optional; the FUSE tests will skip" >&2
fi

[ -z "$missing" ] && exit 0
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "securekeys: installing build prerequisites with apt-get:$missing"
    apt-get update -qq
    # The test prerequisites with them, in the same run.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing $optional >/dev/null
else
    echo "securekeys: missing build prerequisites; install them with:" >&2
    echo "  sudo apt-get install$missing" >&2
    exit 1
fi
