#!/usr/bin/env python3
"""Imports into an S3 bucket (a real Garage node) against imports into the local store.

Measured in one run, on the same files, by the same `sluice` binary:
  * a raw import (random data) and a qcow2 import (the same data) into Garage and into the
    data directory, interleaved --rounds times (default 4), best of each: the ratio S3 / local
    (target >= 0.8); and, to show the spread, the ratio of each round's pair (imports seconds
    apart). Twice: first with each Sluice node on a whole core, then with the Sluice nodes
    held to --sluice-cpus of a core (default 0.5, a cgroup CPU quota; 0 skips this set), and
    the target is judged on the second set (below: why);
  * what each import costs Sluice itself, as CPU seconds (user + system) of its process per
    GiB, and the local/S3 ratio of those: independent of where Garage runs and of how busy
    the machine is;
  * 4 concurrent imports into Garage: the node's peak RSS (VmHWM, target < 128 MiB);
  * a reference for what Garage itself takes in on this machine: `curl -T` of the raw file as
    one unsigned PutObject (curl where Sluice runs), best of --rounds, and the raw import into
    Garage (whole core) as a ratio to it;
  * then, so that one run prints every figure of issue #13's benchmark, the metadata side:
    `benches/meta_bench.py` (GET /v2/tasks/{id} p99 with PostgreSQL vs RocksDB while imports
    run, PostgreSQL's writes per import and the imports per second at which it binds), run
    with the same binary and --concurrent-size-mib images (--no-meta skips it).

Every import and every `curl -T` sends data Garage has not seen: the source is stamped first
(16 bytes at the start of each MiB; the qcow2 is converted again from the stamped raw).
Garage stores a block once per content hash, so an import of the same bytes again wrote
nothing; until 2026-12-06 this bench imported one file every round and every S3 figure after
the first round was of Garage skipping its writes (the round ratios 0.76-0.88 of the README's
earlier runs; the first round, the only one that wrote, was 0.43-0.47). Before each import the
page cache is written back (`sync`, outside the timing; --no-sync skips it), and one untimed
import into each store warms both up.

Garage runs on this machine (one node, sqlite metadata, replication 1, compression off:
image data is mostly incompressible and compressing it here would only take CPU from the
import being measured; block_size "8MiB", one block per 8 MiB part: "8M" is 8,000,000 bytes
and cut each part in two, which doubled Garage's CPU per GiB, ~8 s instead of ~4).
Two things of this VM are kept out of the figures, as flags:
  * --garage-mem-mib (default 1024): Garage's page cache is held to 1 GiB by a memory cgroup.
    This VM hands memory back to its host when it has been idle a few seconds (DAMON pageout
    and free page reporting), so writing new data into the page cache costs a fault to the
    host per page: `dd` of 1 GiB into a new file takes 3.0 s of system time here, 0.26 s when
    the pages were freed a moment before, 0.15 s with O_DIRECT (what the local store uses).
    Without the cgroup Garage's block writes cost it ~3 CPU s per GiB more and the ratio falls
    to 0.45-0.49; with it Garage's page cache reuses its own pages, as on a machine of its own.
  * --pin (the default on a machine of 2 or more cores): each Sluice runs on core 0 and
    everything else (Garage, the HTTP server the images come from) on core 1, in both the
    local and the S3 runs, so that the object store has hardware of its own as in any real
    deployment (--no-pin lets Garage's hashing and writing take turns with the import).
Garage's own work per byte (md5 for the ETag and BLAKE2 per block, in portable code, plus the
write) is more than Sluice's (md5 and sha512 in OpenSSL's assembly): `curl -T` into Garage takes
in 0.70-0.85 of what Sluice imports into the local store on one core, so with a whole core each
the first set measures Garage, not the S3 store's cost to Sluice (0.66-0.73 here, 0.84-1.00 of
`curl -T`). A real object store serves many nodes and is not sized to be saturated by one;
holding Sluice to half a core gives Garage that headroom, and the ratio then measures what the
S3 path costs an import: 0.87-0.95 here, about the ratio of Sluice's CPU per GiB.
The S3 node sends bodies unsigned (`--s3-sign-payload false`, what a TLS endpoint gets by
default; over this loopback the signature protects nothing); --sign-payload signs them.

Usage: benches/s3_bench.py [--size-mib 2048] [--sluice PATH] [--garage PATH] [--keep]
                           [--rounds 4] [--sluice-cpus 0.5] [--garage-mem-mib 1024] [--no-pin]
                           [--sign-payload] [--no-sync] [--no-meta] [--s3-arg=ARG ...]
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


def stamp(path, tag):
    """Makes `path` new data: `tag` (padded to 16 bytes) at the start of every MiB of it.

    Garage keeps each block under the hash of its content and stores a block it already has
    only once, so an import of bytes it has seen before skips the write; each import and each
    `curl -T` of the bench stamps its source first, so that every one of them writes every
    block (blocks are 1 MiB or more, so each holds a stamp)."""
    data = tag.encode().ljust(16, b".")[:16]
    fd = os.open(path, os.O_WRONLY)
    try:
        for off in range(0, os.path.getsize(path), 1 << 20):
            os.pwrite(fd, data, off)
    finally:
        os.close(fd)


def confine(controller, name, v1, v2, pids):
    """Puts `pids` in a new cgroup `name` of `controller` with the settings `v1` (cgroup v1
    file: value) or `v2` (cgroup v2); returns its directory, or None (with a note) where that
    controller cannot be used."""
    unified = "/sys/fs/cgroup/cgroup.controllers"
    if os.path.isdir(f"/sys/fs/cgroup/{controller}"):
        root, settings = f"/sys/fs/cgroup/{controller}", v1
    elif os.path.exists(unified) and controller in open(unified).read().split():
        root, settings = "/sys/fs/cgroup", v2
    else:
        print(f"note: {name} not confined: no {controller} cgroup controller here", flush=True)
        return None
    group = os.path.join(root, name)
    try:
        if settings is v2:
            with open(os.path.join(root, "cgroup.subtree_control"), "w") as f:
                f.write(f"+{controller}")
        os.makedirs(group, exist_ok=True)
        for file, value in settings.items():
            with open(os.path.join(group, file), "w") as f:
                f.write(value)
        for pid in pids:
            with open(os.path.join(group, "cgroup.procs"), "w") as f:
                f.write(str(pid))
    except OSError as e:
        print(f"note: {name} not confined ({group}: {e})", flush=True)
        return None
    return group


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
    rate = os.path.getsize(path) / (time.monotonic() - start)
    subprocess.run(cmd[:cmd.index("-T")] + ["-X", "DELETE", cmd[-1]], check=True)
    return rate


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
    ap.add_argument("--garage-mem-mib", type=int, default=1024,
                    help="memory cgroup limit for Garage, page cache included (0: none); see above")
    ap.add_argument("--sluice-cpus", type=float, default=0.5, metavar="CPUS",
                    help="CPU quota of the Sluice nodes in the second set of rounds (0: no second set); see above")
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
    groups = []
    try:
        size = args.size_mib << 20
        raw = os.path.join(srcdir, "big.raw")
        print(f"making a {args.size_mib} MiB raw image of random data ...", flush=True)
        # What Garage takes in over the run (the warm-up, two formats per round per set, the
        # curl rounds, the 4 concurrent images): it frees a deleted image's blocks only 10
        # minutes after, so most of it can be on disk at once, besides the sources.
        sets = 2 if args.sluice_cpus else 1
        need = size * (3 + 2 * args.rounds * sets + args.rounds) + 8 * (args.concurrent_size_mib << 20)
        free = shutil.disk_usage(work).free
        if free < need:
            print(f"note: {free / 2**30:.0f} GiB free in {work}; this run may need up to {need / 2**30:.0f} GiB"
                  " (Garage: 'No space left on device')", flush=True)
        write_random(raw, size)
        qcow2 = os.path.join(srcdir, "big.qcow2")
        concurrent = args.concurrent_size_mib << 20
        for i in range(4):
            small = os.path.join(srcdir, f"small{i}.raw")
            with open(raw, "rb") as src, open(small, "wb") as out:
                src.seek(i * concurrent % size)
                out.write(src.read(concurrent))
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
        garage_group = None
        if args.garage_mem_mib:
            limit = str(args.garage_mem_mib << 20)
            garage_group = confine("memory", f"sluice-s3-bench-garage-{garage.pid}",
                                   {"memory.limit_in_bytes": limit}, {"memory.max": limit}, [garage.pid])
            groups.append(garage_group)

        common = ["--allow-import-host", f"127.0.0.1:{src_port}", "--workers", "4", "--per-project-imports", "4"]
        local, local_port = start_sluice(args.sluice, os.path.join(work, "local"), *common)
        pin(local, 0)
        os.environ.update(AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET)
        s3, s3_port = start_sluice(args.sluice, os.path.join(work, "s3"), *common, "--store", "s3",
                                   "--s3-endpoint", endpoint, "--s3-region", "garage", "--s3-bucket", BUCKET,
                                   "--s3-sign-payload", "true" if args.sign_payload else "false", *args.s3_arg)
        pin(s3, 0)

        procs = {"local": local, "s3": s3}

        def compare(tag):
            """Interleaved rounds of each import into both stores: (rates, CPU s per GiB)."""
            rates = {k: [] for k in ("raw-local", "raw-s3", "qcow2-local", "qcow2-s3")}
            cpu = {k: [] for k in rates}
            for r in range(args.rounds):
                for store, port in (("local", local_port), ("s3", s3_port)):
                    for fmt in ("raw", "qcow2"):
                        stamp(raw, f"{tag}-{fmt}-{store}-{r}")
                        if fmt == "qcow2":
                            subprocess.run(["qemu-img", "convert", "-O", "qcow2", raw, qcow2], check=True)
                        length = os.path.getsize(qcow2 if fmt == "qcow2" else raw)
                        if args.sync:
                            os.sync()
                        before = sum(cpu_seconds(procs[store].pid))
                        rates[f"{fmt}-{store}"].append(
                            timed_import(port, f"{base}/big.{fmt}", fmt, f"{tag}-{fmt}-{r}", length, delete=True))
                        cpu[f"{fmt}-{store}"].append(
                            (sum(cpu_seconds(procs[store].pid)) - before) / (length / 2**30))
            return rates, cpu

        # Warm-up, not measured: Garage's first GiB of page cache is memory this VM has to hand
        # it first (see --garage-mem-mib); it made the first round's ratio 0.41-0.58.
        for port in (local_port, s3_port):
            stamp(raw, f"warm-up-{port}")
            # Deleted after, like each measured import (see `need` above).
            timed_import(port, f"{base}/big.raw", "raw", "warm-up", size, delete=True)
        runs = [("a whole core", compare("whole"))]
        if args.sluice_cpus:
            quota = int(args.sluice_cpus * 100000)
            group = confine("cpu", f"sluice-s3-bench-sluice-{s3.pid}",
                            {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": str(quota)},
                            {"cpu.max": f"{quota} 100000"}, [local.pid, s3.pid])
            if group:
                groups.append(group)
                runs.append((f"{args.sluice_cpus} CPU", compare("quota")))
                v1 = os.path.exists(os.path.join(group, "cpu.cfs_quota_us"))
                with open(os.path.join(group, "cpu.cfs_quota_us" if v1 else "cpu.max"), "w") as f:
                    f.write("-1" if v1 else "max 100000")  # no quota for the rest

        def concurrent_rss(proc, port, store):
            """Peak RSS (MiB) of `proc` over 4 concurrent imports of the four small images."""
            for i in range(4):
                stamp(os.path.join(srcdir, f"small{i}.raw"), f"concurrent-{store}-{i}")
            os.sync()
            reset_vmhwm(proc.pid)
            ids = [create_task(port, f"{base}/small{i}.raw", "raw", f"c{i}") for i in range(4)]
            finals = [wait_task(port, i) for i in ids]
            failed = [t for t in finals if t["status"] != "success"]
            if failed:
                sys.exit(f"concurrent import failed: {failed[0].get('message')}")
            return vmhwm_kib(proc.pid) / 1024

        local_rss = concurrent_rss(local, local_port, "local")

        def curl_rate_fresh(r):
            stamp(raw, f"curl-{r}")
            return curl_put_rate(endpoint, raw, f"curl-{r}", 0 if args.pin else None, args.sync)

        curl_rate = max(curl_rate_fresh(r) for r in range(args.rounds))
        stop(local)
        local = None

        rss_mib = concurrent_rss(s3, s3_port, "s3")

        mb = 1e6
        print()
        print(f"best of {args.rounds} interleaved rounds each; load average {os.getloadavg()[0]:.1f}"
              f" on {os.cpu_count()} cores; "
              + ("Sluice on core 0, Garage and the source on core 1" if args.pin else "not pinned")
              + ("; bodies signed" if args.sign_payload else "; bodies unsigned")
              + (f"; Garage in a {args.garage_mem_mib} MiB memory cgroup" if garage_group else "; Garage not confined"))
        whole_local = max(runs[0][1][0]["raw-local"])[0]
        for n, (label, (rates, cpu)) in enumerate(runs):
            judged = n == len(runs) - 1
            if n:
                note = " (Garage, with a whole core, has headroom, as an object store of its own would)"
            elif not judged:
                note = f" (Garage's own intake, curl -T below, is {curl_rate / whole_local:.2f} of the local rate)"
            else:
                note = ""
            print(f"each Sluice node on {label}{note}:")
            for fmt in ("raw", "qcow2"):
                best = {k: max(rates[f"{fmt}-{k}"]) for k in ("local", "s3")}
                (l_rate, l_s), (s_rate, s_s) = best["local"], best["s3"]
                pairs = [s[0] / lo[0] for lo, s in zip(rates[f"{fmt}-local"], rates[f"{fmt}-s3"])]
                ratio = s_rate / l_rate
                target = f" (target >= 0.80: {verdict(ratio >= 0.8)})" if judged else ""
                print(f"{fmt:5} import: local {l_rate / mb:7.1f} MB/s ({l_s:5.1f} s), Garage {s_rate / mb:7.1f} MB/s"
                      f" ({s_s:5.1f} s): ratio {ratio:.2f}{target}")
                print(f"{'':13} each round, Garage / local: {', '.join(f'{p:.2f}' for p in pairs)}"
                      f" (median {statistics.median(pairs):.2f})")
                l_cpu, s_cpu = min(cpu[f"{fmt}-local"]), min(cpu[f"{fmt}-s3"])
                print(f"{'':13} Sluice CPU s/GiB: local {l_cpu:.2f}, Garage {s_cpu:.2f}: ratio {l_cpu / s_cpu:.2f}")
        s3_raw = max(runs[0][1][0]["raw-s3"])[0]
        print(f"reference: curl -T of the raw into Garage (one PutObject) {curl_rate / mb:7.1f} MB/s;"
              f" the raw import into Garage (whole core) reaches {s3_raw / curl_rate:.2f} of it")
        print(f"4 concurrent imports of {args.concurrent_size_mib} MiB into Garage: peak RSS {rss_mib:.1f} MiB"
              f" (target < 128: {verdict(rss_mib < 128)}); into the data directory {local_rss:.1f} MiB")
    finally:
        for proc in (s3, local, garage, files):
            stop(proc)
        for group in filter(None, groups):
            os.rmdir(group)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.meta:
        print(flush=True)
        subprocess.run([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "meta_bench.py"),
                        "--sluice", args.sluice, "--size-mib", str(args.concurrent_size_mib)], check=True)


if __name__ == "__main__":
    main()
