"""At vm.max_map_count: destroy and the end of a borrow never abort and never
leave a key readable; a protection that cannot be raised is an OSError.

Each case runs in a fresh interpreter that first fills its own mapping count
with one-page mappings of alternating protection (none merges with its
neighbour), then does the operation under test.
"""

from __future__ import annotations

import json

from conftest import run_python
from test_fatal import FILL_FUNCTION

PRELUDE = """
import ctypes, errno, gc, json, os
import securekeys
""" + FILL_FUNCTION + """
mem = os.open("/proc/self/mem", os.O_RDONLY)
def wiped(key):
    return os.pread(mem, key.size, key._data_address()) == bytes(key.size)

def permissions(address):
    with open("/proc/self/maps") as maps:
        for line in maps:
            span, perms = line.split()[:2]
            lo, hi = (int(x, 16) for x in span.split("-"))
            if lo <= address < hi:
                return perms[:3]
    return None
"""


def run(code: str) -> dict[str, object]:
    result = run_python(PRELUDE + code)
    assert result.returncode == 0, result
    return json.loads(result.stdout.decode().strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_destroying_many_keyring_keys_at_the_limit_wipes_each_and_never_aborts() -> None:
    # Keys on alternate pages of a ring, READONLY pages separated by
    # NOACCESS ones: every wipe must lift a page in the middle of a mapping,
    # far more times than there are spares.
    facts = run("""
ring = securekeys.KeyRing(2000)
keys = [ring.create_key() for _ in range(60)]
for k in keys[::4]:
    k.noaccess()
assert fill() > 1000
for k in keys:
    fill()
    k.destroy()
print(json.dumps({"wiped": sum(wiped(k) for k in keys), "keys": len(keys), "left": len(ring)}))
""")
    assert facts == {"wiped": 60, "keys": 60, "left": 0}


def test_keyring_destroy_at_the_limit_wipes_every_key() -> None:
    facts = run("""
ring = securekeys.KeyRing(2000)
keys = [ring.create_key() for _ in range(40)]
for k in keys[1::3]:
    k.noaccess()
assert fill() > 1000
ring.destroy()
print(json.dumps({"wiped": sum(wiped(k) for k in keys), "noaccess": sorted({permissions(k._data_address()) for k in keys})}))
""")
    assert facts == {"wiped": 40, "noaccess": ["---"]}


def test_the_end_of_a_borrow_at_the_limit_makes_a_noaccess_ring_key_unreadable() -> None:
    # Three adjacent ring pages, all readable through borrows, merge into one
    # mapping; ending the middle borrow must split it twice.  The spares held
    # for the page when it was raised make that possible.
    facts = run("""
from securekeys import crypto
ring = securekeys.KeyRing(2000)
keys = [ring.create_key() for _ in range(6)]   # two per page: pages 0, 1, 2
for k in keys:
    k.noaccess()
views = [keys[i].reading() for i in (0, 2, 4)]
for v in views:
    v.__enter__()
middle = keys[2]._data_address()
before = permissions(middle)
assert fill() > 1000
fill()
error = None
try:
    views[1].__exit__(None, None, None)
except BaseException as e:
    error = type(e).__name__
print(json.dumps({"before": before, "after": permissions(middle), "error": error}))
""")
    assert facts == {"before": "r--", "after": "---", "error": None}


def test_a_borrow_that_cannot_raise_the_protection_at_the_limit_is_an_oserror() -> None:
    facts = run("""
ring = securekeys.KeyRing(2000)
keys = [ring.create_key() for _ in range(6)]
for k in keys:
    k.noaccess()
assert fill() > 1000
fill()
outcome = None
try:
    with keys[2].reading():
        outcome = "borrowed"
except OSError as e:
    outcome = [type(e).__name__, e.errno == errno.ENOMEM]
print(json.dumps({"outcome": outcome, "still": permissions(keys[2]._data_address()),
                  "destroyed": keys[2].destroyed}))
""")
    # Either it was had (the process freed a mapping meanwhile) or it failed
    # cleanly: an OSError, not a MemoryError, and nothing left readable.
    assert facts["outcome"] in ("borrowed", ["OSError", True]), facts
    assert facts["still"] == "---" and facts["destroyed"] is False, facts
