#!/usr/bin/env python3
"""Imports into an S3 bucket (a real Garage node) against imports into the local store.

Measured in one run, on the same files, by the same `sluice` binary:
  * a raw import (random data) and a qcow2 import (the same data) into Garage and into the
    data directory, interleaved --rounds times (default 4), best of each: the ratio S3 / local
    (target >= 0.8); and, to show the spread, the ratio of each round's pair (imports seconds
    apart). Before each import (and each `curl -T` below) the page cache is written back
    (`sync`, outside the timing; --no-sync skips it), so that no import runs while the kernel
    writes back the 4 GiB the imports before it left dirty: on one quiet day the round
    ratios spread 0.63-0.91 without it (two runs) and 0.76-0.90 with it (two runs);
  * what each import costs Sluice itself, as CPU seconds (user + system) of its process per
    GiB, and the local/S3 ratio of those: independent of where Garage runs and of how busy
    the machine is;
  * 4 concurrent imports into Garage: the node's peak RSS (VmHWM, target < 128 MiB);
  * a reference for what Garage itself takes in on this machine: `curl -T` of the same raw
    file as one unsigned PutObject (curl where Sluice runs), best of --rounds, and the raw
    import into Garage as a ratio to it.
  * then, so that one run prints every figure of issue #13's benchmark, the metadata side:
    `benches/meta_bench.py` (GET /v2/tasks/{id} p99 with PostgreSQL vs RocksDB while imports
    run, PostgreSQL's writes per import and the imports per second at which it binds), run
    with the same binary and --concurrent-size-mib images (--no-meta skips it).

Garage runs on this machine (one node, sqlite metadata, replication 1, compression off:
image data is mostly incompressible and compressing it here would only take CPU from the
import being measured; 8 MiB blocks, one per part: `curl -T` of 1 GiB into Garage measured
205-215 MB/s with them, 177-185 with the default 1 MiB; lmdb instead of sqlite changed
nothing), so the S3 imports also pay for Garage's own work on the same cores.

With --pin (the default on a machine of 2 or more cores), each Sluice runs on core 0 and
everything else (Garage, the HTTP server the images come from) on core 1, in both the local
and the S3 runs: the ratio then measures what the S3 store costs Sluice, with the object store
on hardware of its own as in any real deployment, instead of Garage's own hashing and writing
taking turns with the import on the same cores (--no-pin measures that).
The S3 node sends bodies unsigned (`--s3-sign-payload false`, what a TLS endpoint gets by
default; over this loopback the signature protects nothing); --sign-payload signs them.

Usage: benches/s3_bench.py [--size-mib 2048] [--sluice PATH] [--garage PATH] [--keep]
                           [--rounds 4] [--no-pin] [--sign-payload] [--no-sync] [--no-meta]
                           [--s3-arg=ARG ...]
The sluice binary defaults to $CARGO_TARGET_DIR/release/sluice, Garage to
~/.cache/sluice/garage/bin/garage (`scripts/setup --test`).
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import cpu_seconds, default_sluice, free_port, reset_vmhwm, start_sluice, stop, verdict, vmhwm_kib, write_random  # noqa: E402
from import_bench import create_task, timed_import, wait_task  # noqa: E402

KEY_ID = "GK0123456789abcdef01234567"
SECRET = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
BUCKET = "sluice-bench"


def default_garage():
    cache = os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache"))
    return os.environ.get("SLUICE_GARAGE", os.path.join(cache, "sluice", "garage", "bin", "garage"))


def start_garage(binary, root):
    """One Garage node in `root`: (process, S3 endpoint)."""
    rpc, s3 = free_port(), free_port()
    conf = os.path.join(root, "garage.toml")
    with open(conf, "w") as f:
        f.write(f"""metadata_dir = "{root}/meta"
data_dir = "{root}/data"
db_engine = "sqlite"
replication_factor = 1
compression_level = "none"
block_size = "8MiB"
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{'0f' * 32}"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"
""")
    env = dict(os.environ, RUST_LOG="warn")
    proc = subprocess.Popen([binary, "-c", conf, "server"], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(os.path.join(root, "garage.log"), "w"))

    def cli(*args):
        for _ in range(300):
            out = subprocess.run([binary, "-c", conf, *args], env=env, capture_output=True, text=True)
            if out.returncode == 0:
                return out.stdout
            time.sleep(0.2)
        sys.exit(f"garage {args}: {out.stderr}")

    node = cli("node", "id", "-q").split("@")[0].strip()
    cli("layout", "assign", "-z", "dc1", "-c", "10G", node)
    cli("layout", "apply", "--version", "1")
    cli("bucket", "create", BUCKET)
    cli("key", "import", "--yes", "-n", "bench", KEY_ID, SECRET)
    cli("bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", KEY_ID)
    return proc, f"http://127.0.0.1:{s3}"


def curl_put_rate(endpoint, path, key, core, sync):
    """Bytes/s of one `curl -T` PutObject of `path` into the bench bucket (None: no pinning),
    after writing back the page cache if `sync`."""
    cmd = ["curl", "-sS", "-f", "-o", "/dev/null", "--aws-sigv4", "aws:amz:garage:s3",
           "--user", f"{KEY_ID}:{SECRET}", "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD",
           "-T", path, f"{endpoint}/{BUCKET}/{key}"]
    if core is not None:
        cmd = ["taskset", "-c", str(core)] + cmd
    if sync:
        os.sync()
    start = time.monotonic()
    subprocess.run(cmd, check=True)
    return os.path.getsize(path) / (time.monotonic() - start)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=2048, help="image data size (MiB)")
    ap.add_argument("--concurrent-size-mib", type=int, default=512,
                    help="size of each of the 4 concurrent imports (MiB)")
    ap.add_argument("--sluice", default=default_sluice())
    ap.add_argument("--garage", default=default_garage())
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--rounds", type=int, default=4,
                    help="interleaved rounds per import, best of them (more: less noise, longer)")
    ap.add_argument("--no-pin", dest="pin", action="store_false",
                    help="let every process run on any core (Garage shares them with Sluice)")
    ap.add_argument("--sign-payload", action="store_true", help="sign request bodies (SigV4 SHA-256)")
    ap.add_argument("--s3-arg", action="append", default=[], metavar="ARG",
                    help="one more argument for the S3 node's `sluice serve` (repeat it: --s3-arg=--s3-part-size --s3-arg=16777216)")
    ap.add_argument("--no-sync", dest="sync", action="store_false",
                    help="do not write back the page cache before each import")
    ap.add_argument("--no-meta", dest="meta", action="store_false",
                    help="skip the metadata part (benches/meta_bench.py)")
    args = ap.parse_args()
    if (os.cpu_count() or 1) < 2:
        args.pin = False

    def pin(proc, core):
        if args.pin:
            subprocess.run(["taskset", "-a", "-p", "-c", str(core), str(proc.pid)], check=True,
                           stdout=subprocess.DEVNULL)

    work = tempfile.mkdtemp(prefix="sluice-s3-bench-")
    srcdir = os.path.join(work, "src")
    os.makedirs(srcdir)
    files = garage = local = s3 = None
    try:
        size = args.size_mib << 20
        raw = os.path.join(srcdir, "big.raw")
        print(f"making a {args.size_mib} MiB raw image of random data ...", flush=True)
        write_random(raw, size)
        qcow2 = os.path.join(srcdir, "big.qcow2")
        subprocess.run(["qemu-img", "convert", "-O", "qcow2", raw, qcow2], check=True)
        small = os.path.join(srcdir, "small.raw")
        with open(raw, "rb") as src, open(small, "wb") as out:
            out.write(src.read(args.concurrent_size_mib << 20))
        os.sync()

        files = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                               "import_bench.py"), "--serve-files", srcdir],
                                 stdout=subprocess.PIPE, text=True)
        src_port = int(files.stdout.readline())
        pin(files, 1)
        base = f"http://127.0.0.1:{src_port}"
        garage_dir = os.path.join(work, "garage")
        os.makedirs(garage_dir)
        garage, endpoint = start_garage(args.garage, garage_dir)
        pin(garage, 1)

        common = ["--allow-import-host", f"127.0.0.1:{src_port}", "--workers", "4", "--per-project-imports", "4"]
        local, local_port = start_sluice(args.sluice, os.path.join(work, "local"), *common)
        pin(local, 0)
        os.environ.update(AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET)
        s3, s3_port = start_sluice(args.sluice, os.path.join(work, "s3"), *common, "--store", "s3",
                                   "--s3-endpoint", endpoint, "--s3-region", "garage", "--s3-bucket", BUCKET,
                                   "--s3-sign-payload", "true" if args.sign_payload else "false", *args.s3_arg)
        pin(s3, 0)

        qcow2_size = os.path.getsize(qcow2)
        rates = {k: [] for k in ("raw-local", "raw-s3", "qcow2-local", "qcow2-s3")}
        cpu = {k: [] for k in rates}
        procs = {"local": local, "s3": s3}

        def measured(store, port, fmt, url, r, length):
            if args.sync:
                os.sync()
            before = sum(cpu_seconds(procs[store].pid))
            rates[f"{fmt}-{store}"].append(timed_import(port, url, fmt, f"{fmt}-{r}", length))
            cpu[f"{fmt}-{store}"].append((sum(cpu_seconds(procs[store].pid)) - before) / (length / 2**30))

        for r in range(args.rounds):
            for store, port in (("local", local_port), ("s3", s3_port)):
                measured(store, port, "raw", f"{base}/big.raw", r, size)
                measured(store, port, "qcow2", f"{base}/big.qcow2", r, qcow2_size)
        best = {k: max(v) for k, v in rates.items()}

        def concurrent_rss(proc, port):
            """Peak RSS (MiB) of `proc` over 4 concurrent imports of small.raw."""
            reset_vmhwm(proc.pid)
            ids = [create_task(port, f"{base}/small.raw", "raw", f"c{i}") for i in range(4)]
            finals = [wait_task(port, i) for i in ids]
            failed = [t for t in finals if t["status"] != "success"]
            if failed:
                sys.exit(f"concurrent import failed: {failed[0].get('message')}")
            return vmhwm_kib(proc.pid) / 1024

        local_rss = concurrent_rss(local, local_port)
        curl_rate = max(curl_put_rate(endpoint, raw, f"curl-{r}", 0 if args.pin else None, args.sync)
                        for r in range(args.rounds))
        stop(local)
        local = None

        rss_mib = concurrent_rss(s3, s3_port)

        mb = 1e6
        print()
        print(f"best of {args.rounds} interleaved rounds each; load average {os.getloadavg()[0]:.1f}"
              f" on {os.cpu_count()} cores; "
              + ("Sluice on core 0, Garage and the source on core 1" if args.pin else "not pinned")
              + ("; bodies signed" if args.sign_payload else "; bodies unsigned"))
        for fmt in ("raw", "qcow2"):
            (l_rate, l_s), (s_rate, s_s) = best[f"{fmt}-local"], best[f"{fmt}-s3"]
            pairs = [s[0] / l[0] for l, s in zip(rates[f"{fmt}-local"], rates[f"{fmt}-s3"])]
            ratio = s_rate / l_rate
            print(f"{fmt:5} import: local {l_rate / mb:7.1f} MB/s ({l_s:5.1f} s), Garage {s_rate / mb:7.1f} MB/s"
                  f" ({s_s:5.1f} s): ratio {ratio:.2f} (target >= 0.80: {verdict(ratio >= 0.8)})")
            print(f"{'':13} each round, Garage / local: {', '.join(f'{p:.2f}' for p in pairs)}"
                  f" (median {statistics.median(pairs):.2f})")
            l_cpu, s_cpu = min(cpu[f"{fmt}-local"]), min(cpu[f"{fmt}-s3"])
            print(f"{'':13} Sluice CPU s/GiB: local {l_cpu:.2f}, Garage {s_cpu:.2f}: ratio {l_cpu / s_cpu:.2f}")
        s3_raw = best["raw-s3"][0]
        print(f"reference: curl -T of the raw into Garage (one PutObject) {curl_rate / mb:7.1f} MB/s;"
              f" the raw import into Garage reaches {s3_raw / curl_rate:.2f} of it")
        print(f"4 concurrent imports of {args.concurrent_size_mib} MiB into Garage: peak RSS {rss_mib:.1f} MiB"
              f" (target < 128: {verdict(rss_mib < 128)}); into the data directory {local_rss:.1f} MiB")
    finally:
        for proc in (s3, local, garage, files):
            stop(proc)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.meta:
        print(flush=True)
        subprocess.run([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "meta_bench.py"),
                        "--sluice", args.sluice, "--size-mib", str(args.concurrent_size_mib)], check=True)


if __name__ == "__main__":
    main()
