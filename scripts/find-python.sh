#!/bin/sh
# find-python.sh X.Y: the path of a CPython X.Y interpreter, for `make wheels`
# and `make matrix`.  First python3.Y on PATH (run, not just found: a pyenv
# shim is on PATH for every installed version but fails outside it), then
# `pyenv which` (the newest X.Y pyenv has).  None: an error naming it, never
# a silent skip.
set -u
version=$1
probe='import sys; print(sys.executable) if "%d.%d" % sys.version_info[:2] == sys.argv[1] else sys.exit(1)'
if command -v "python$version" >/dev/null 2>&1; then
    found=$("python$version" -c "$probe" "$version" 2>/dev/null) && { echo "$found"; exit 0; }
fi
if command -v pyenv >/dev/null 2>&1; then
    candidate=$(PYENV_VERSION=$version pyenv which python 2>/dev/null) &&
        found=$("$candidate" -c "$probe" "$version" 2>/dev/null) && { echo "$found"; exit 0; }
fi
echo "securekeys: no Python $version found: neither python$version on PATH nor through pyenv" \
     "(\`pyenv install $version\`, or put python$version on PATH)" >&2
exit 1
