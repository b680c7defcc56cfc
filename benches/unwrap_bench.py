#!/usr/bin/env python3
"""Compressed-source import benchmark: the real `sluice serve` importing a raw image
compressed with gzip, zstd and xz over loopback HTTP (decompressed, inspected, md5 ∥ sha512
and stored in one pass), against the shell pipeline that only decompresses and hashes:
`DECOMPRESSOR -dc FILE | tee >(md5sum >/dev/null) | sha512sum`, measured in the same run on
the same files (target: the import is not slower, ratio pipeline time / import time >= 1).

The image is half binaries (the machine's own /usr/lib and /usr/bin files, cycled) and half
zeros, so it compresses as a real disk does rather than as random data.

Usage: benches/unwrap_bench.py [--size-mib 2048] [--sluice PATH] [--keep]
The sluice binary defaults to $CARGO_TARGET_DIR/release/sluice. Needs gzip, zstd, xz,
md5sum, sha512sum, bash and ~3x the size free in $TMPDIR.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import default_sluice, start_sluice, stop, verdict  # noqa: E402
from import_bench import create_task, wait_task  # noqa: E402

# (name, compress command, decompress command, file extension)
WRAPPERS = [
    ("gzip", ["gzip", "-c", "-6"], "gzip -dc", "gz"),
    ("zstd", ["zstd", "-c", "-q", "-3", "-T0"], "zstd -dc", "zst"),
    ("xz", ["xz", "-c", "-3", "-T0"], "xz -dc", "xz"),
]
ROUNDS = 2


def write_disk(path, size):
    """`size` bytes: 1 MiB of binaries, 1 MiB of zeros, repeated."""
    files = []
    for root in ("/usr/lib", "/usr/bin"):
        for dirpath, _, names in os.walk(root):
            for n in names:
                p = os.path.join(dirpath, n)
                if os.path.isfile(p) and not os.path.islink(p) and os.path.getsize(p) > 65536:
                    files.append(p)
    blob = bytearray()
    for p in files:
        with open(p, "rb") as f:
            blob += f.read()
        if len(blob) >= size // 2:
            break
    zeros = bytes(1 << 20)
    with open(path, "wb") as out:
        written, at = 0, 0
        while written < size:
            piece = blob[at:at + (1 << 20)] or bytes(1 << 20)
            at = (at + (1 << 20)) % max(len(blob), 1)
            out.write(piece)
            out.write(zeros)
            written += len(piece) + len(zeros)
        out.truncate(size)


def pipeline_seconds(decompress, path):
    start = time.monotonic()
    subprocess.run(["bash", "-c", f"{decompress} {path} | tee >(md5sum >/dev/null) | sha512sum >/dev/null"],
                   check=True)
    return time.monotonic() - start


def import_seconds(port, url, name):
    start = time.monotonic()
    task = wait_task(port, create_task(port, url, "raw", name))
    elapsed = time.monotonic() - start
    if task["status"] != "success":
        sys.exit(f"{name} import failed: {task.get('message')}")
    if task["result"].get("unwrapped") is None:
        sys.exit(f"{name} was not unwrapped: {task}")
    return elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=2048, help="image size (MiB)")
    ap.add_argument("--sluice", default=default_sluice())
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="sluice-unwrap-bench-")
    srcdir = os.path.join(work, "src")
    os.makedirs(srcdir)
    server = sluice = None
    try:
        size = args.size_mib << 20
        raw = os.path.join(srcdir, "disk.raw")
        print(f"making a {args.size_mib} MiB raw image (binaries and zeros) ...", flush=True)
        write_disk(raw, size)
        for name, cmd, _, ext in WRAPPERS:
            print(f"compressing with {name} ...", flush=True)
            with open(raw, "rb") as src, open(f"{raw}.{ext}", "wb") as out:
                subprocess.run(cmd, stdin=src, stdout=out, check=True)
        os.remove(raw)
        os.sync()
        server = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                                "import_bench.py"), "--serve-files", srcdir],
                                  stdout=subprocess.PIPE, text=True)
        src_port = int(server.stdout.readline())
        sluice, port = start_sluice(args.sluice, os.path.join(work, "data"), "--allow-import-host",
                                    f"127.0.0.1:{src_port}")
        base = f"http://127.0.0.1:{src_port}"
        print()
        print(f"{args.size_mib} MiB raw image; best of {ROUNDS} interleaved rounds each")
        for name, _, decompress, ext in WRAPPERS:
            path = f"{raw}.{ext}"
            subprocess.run(["cat", path], stdout=subprocess.DEVNULL, check=True)
            pipes, imports = [], []
            for r in range(ROUNDS):
                pipes.append(pipeline_seconds(decompress, path))
                imports.append(import_seconds(port, f"{base}/disk.raw.{ext}", f"bench-{name}-{r}"))
            p, i = min(pipes), min(imports)
            ratio = p / i
            print(f"{name:5} ({os.path.getsize(path) / 1e6:7.0f} MB compressed): import {i:6.2f} s"
                  f" ({size / i / 1e6:6.1f} MB/s), `{decompress} | tee >(md5sum) | sha512sum` {p:6.2f} s"
                  f"  ratio {ratio:.2f} (target >= 1.0: {verdict(ratio >= 1.0)})", flush=True)
    finally:
        stop(sluice)
        stop(server)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
