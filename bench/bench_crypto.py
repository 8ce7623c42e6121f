"""Benchmark securekeys.crypto.aead_encrypt against the Python peers.

Same key, same 64-byte message, same nonce, in one run:

* ``aead_encrypt`` with a READONLY SecureKey (the key is borrowed per call,
  no protection change);
* ``aead_encrypt`` with a NOACCESS SecureKey (two ``mprotect`` calls per call);
* pysodium's ``crypto_aead_xchacha20poly1305_ietf_encrypt`` (ctypes) and
  PyNaCl's ``nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt``
  (cffi), both with a ``bytes`` key.

Rounds are interleaved (every operation once per round, order rotated) and
each operation's time is the median over rounds, so that drift in CPU
frequency or load hits all of them alike.  ``ratio`` is baseline time / our
time: above 1 means securekeys is faster.

    python bench/bench_crypto.py            # markdown table
    python bench/bench_crypto.py --json F   # also write the rows to F

Importable: ``run()`` returns the rows as dicts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import timeit
from typing import Any, Callable

MESSAGE_SIZE = 64
ROUNDS = 21
ROUND_SECONDS = 0.02   # target length of one timing sample


def _calls_per_sample(timer: timeit.Timer) -> int:
    number = 1
    while True:
        if timer.timeit(number) >= ROUND_SECONDS / 4:
            return max(1, int(number * 4))
        number *= 2


def _measure(stmts: dict[str, str], env: dict[str, Any], rounds: int) -> dict[str, float]:
    """Median µs per call of each statement, over interleaved rounds."""
    timers = {name: timeit.Timer(stmt, globals=env) for name, stmt in stmts.items()}
    numbers = {name: _calls_per_sample(t) for name, t in timers.items()}
    samples: dict[str, list[float]] = {name: [] for name in stmts}
    names = list(stmts)
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            seconds = timers[name].timeit(numbers[name])
            samples[name].append(seconds / numbers[name] * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


def run(rounds: int = ROUNDS) -> list[dict[str, Any]]:
    """Measure and return rows {operation, ours_us, baseline, baseline_us, ratio, goal}."""
    import nacl.bindings
    import pysodium  # type: ignore[import-untyped]

    from securekeys import create_key
    from securekeys.crypto import aead_encrypt

    key = create_key(32)
    with key.reading() as view:
        key_bytes = bytes(view)          # the baselines' plain-bytes key
    noaccess_key = _copy_key(key)        # the same key, kept NOACCESS
    noaccess_key.noaccess()
    nonce = os.urandom(24)
    message = os.urandom(MESSAGE_SIZE)

    ps_encrypt = pysodium.crypto_aead_xchacha20poly1305_ietf_encrypt
    nacl_encrypt = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt
    expected = ps_encrypt(message, None, nonce, key_bytes)
    checks: dict[str, Callable[[], bytes]] = {
        "ours": lambda: aead_encrypt(key, message, nonce),
        "ours_noaccess": lambda: aead_encrypt(noaccess_key, message, nonce),
        "pynacl": lambda: nacl_encrypt(message, None, nonce, key_bytes),
    }
    for name, check in checks.items():
        if check() != expected:
            raise AssertionError(f"{name} disagrees with pysodium")

    env = dict(aead_encrypt=aead_encrypt, ps_encrypt=ps_encrypt, nacl_encrypt=nacl_encrypt,
               key=key, noaccess_key=noaccess_key, key_bytes=key_bytes,
               message=message, nonce=nonce)
    us = _measure({
        "ours": "aead_encrypt(key, message, nonce)",
        "ours_noaccess": "aead_encrypt(noaccess_key, message, nonce)",
        "pysodium": "ps_encrypt(message, None, nonce, key_bytes)",
        "pynacl": "nacl_encrypt(message, None, nonce, key_bytes)",
    }, env, rounds)
    if noaccess_key.state.name != "NOACCESS":
        raise AssertionError("the NOACCESS key did not stay NOACCESS")

    op = f"aead_encrypt {MESSAGE_SIZE} B"
    rows = [
        (f"{op}, READONLY key", "ours", "pysodium, bytes key", "pysodium", "≥4×"),
        (f"{op}, READONLY key", "ours", "PyNaCl, bytes key", "pynacl", "≥8×"),
        (f"{op}, NOACCESS key (borrowed per call)", "ours_noaccess",
         "pysodium, bytes key", "pysodium", "—"),
        (f"{op}, NOACCESS key (borrowed per call)", "ours_noaccess",
         "PyNaCl, bytes key", "pynacl", "—"),
    ]
    return [
        {
            "operation": operation,
            "ours_us": round(us[ours], 3),
            "baseline": baseline,
            "baseline_us": round(us[base], 3),
            "ratio": round(us[base] / us[ours], 2),
            "goal": goal,
        }
        for operation, ours, baseline, base, goal in rows
    ]


def _copy_key(key: Any) -> Any:
    """A second SecureKey with the same bytes, copied guarded to guarded."""
    from securekeys import SecureKey

    copy = SecureKey(len(key))
    r, w = os.pipe()
    try:
        with key.reading() as view:
            os.write(w, view)
        os.close(w)
        copy.readinto(r)
    finally:
        os.close(r)
    copy.readonly()
    return copy


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| operation | ours µs | baseline | baseline µs | ratio | goal |",
             "|---|---:|---|---:|---:|---|"]
    for row in rows:
        lines.append(f"| {row['operation']} | {row['ours_us']:.3f} | {row['baseline']} | "
                     f"{row['baseline_us']:.3f} | {row['ratio']:.2f}× | {row['goal']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    rows = run(args.rounds)
    print(markdown(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
