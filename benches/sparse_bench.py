#!/usr/bin/env python3
"""Sparse raw output: `sluice convert --to raw` of a raw image that is 75 % zeros (4 KiB of
data in every 16 KiB, written out in full) against `qemu-img convert -O raw` (which leaves
4 KiB zero blocks as holes, `-S 4k`), same file, same run, best of ROUNDS each (target:
sluice >= 1.5x faster). Also prints the bytes each output allocates.

Usage: benches/sparse_bench.py [--size-mib 2048] [--sluice PATH]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import default_sluice, verdict  # noqa: E402

ROUNDS = 2


def timed(cmd):
    start = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=2048)
    ap.add_argument("--sluice", default=default_sluice())
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="sluice-sparse-bench-")
    try:
        src = os.path.join(work, "src.raw")
        block = os.urandom(4096) + bytes(12288)
        with open(src, "wb") as f:
            for _ in range((args.size_mib << 20) // len(block)):
                f.write(block)
        os.sync()
        out_s, out_q = os.path.join(work, "s.raw"), os.path.join(work, "q.raw")
        s_times, q_times = [], []
        for _ in range(ROUNDS):
            for p in (out_s, out_q):
                if os.path.exists(p):
                    os.remove(p)
            q_times.append(timed(["qemu-img", "convert", "-f", "raw", "-O", "raw", src, out_q]))
            s_times.append(timed([args.sluice, "convert", "--format", "raw", "--to", "raw", src, out_s]))
        subprocess.run(["cmp", out_s, out_q], check=True)
        s, q = min(s_times), min(q_times)
        alloc = lambda p: os.stat(p).st_blocks * 512 / 1e6  # noqa: E731
        print(f"{args.size_mib} MiB raw, 75 % zeros; best of {ROUNDS}")
        print(f"sluice convert {s:6.2f} s ({alloc(out_s):.0f} MB allocated), qemu-img convert {q:6.2f} s"
              f" ({alloc(out_q):.0f} MB allocated): {q / s:.2f}x (target >= 1.5: {verdict(q / s >= 1.5)})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
