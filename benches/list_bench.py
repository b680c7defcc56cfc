#!/usr/bin/env python3
"""List benchmark: `GET /v2/tasks?limit=25` through the real `sluice serve`, small store vs big.

For a store of SMALL tasks and one of BIG tasks (defaults 100 and 100,000; one in 100 tasks
carries 60 KB of image properties, the size in issue #9's report), seeded straight into
RocksDB by the server crate's `seed_tasks` example (the server builds its indexes on first
start, which is timed), measured in one run:
  * latency of `GET /v2/tasks?limit=25` by the owning project (`p-bulk`, a full page deep in
    a big partition), by another project (`p-small`, 10 tasks), by an admin (every task),
    and of the owner's third page (`marker`) and a non-default sort (`sort_key=status`,
    which reads the caller's partition with a bounded top-k): median of ROUNDS requests;
  * the ratio big/small of each median (target for the owner's first page: <= 2);
  * the server's peak RSS (VmHWM) while 8 clients list the big store concurrently
    (target < 128 MiB), on a server restarted after the index build.

Usage: benches/list_bench.py [--small 100] [--big 100000] [--rounds 200] [--keep]
Build first: cargo build --release --locked --bin sluice --example seed_tasks -p sluice-server
(binaries from $CARGO_TARGET_DIR/release, default ~/.cache/sluice/target).
"""

import argparse
import http.client
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

OWNER = "p-bulk"
OTHER = "p-small"
CLIENTS = 8
RSS_TARGET = 128 << 20
RATIO_TARGET = 2.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def headers(project, admin=False):
    roles = "admin,member,reader" if admin else "member,reader"
    return {"X-Project-Id": project, "X-User-Id": "bench", "X-Roles": roles}


class Server:
    def __init__(self, sluice, data_dir):
        self.sluice, self.data_dir, self.proc, self.port = sluice, data_dir, None, None

    def start(self):
        self.port = free_port()
        log = open(os.path.join(os.path.dirname(self.data_dir), "server.log"), "ab")
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [self.sluice, "serve", "--bind", f"127.0.0.1:{self.port}",
             "--data-dir", self.data_dir],
            stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "SLUICE_LOG": "warn"})
        deadline = started + 600
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"sluice serve exited with {self.proc.returncode}")
            try:
                status, _ = self.get("/versions", headers(OWNER))
                if status == 200:
                    return time.monotonic() - started
            except OSError:
                pass
            time.sleep(0.05)
        sys.exit("sluice serve did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)

    def get(self, path, hdrs):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request("GET", path, headers=hdrs)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def peak_rss(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM")


def timed(server, path, hdrs, rounds):
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        status, body = server.get(path, hdrs)
        times.append(time.perf_counter() - t0)
        if status != 200:
            sys.exit(f"{path}: HTTP {status}: {body[:200]!r}")
    return statistics.median(times)


def third_page_path(server):
    import json
    path = "/v2/tasks?limit=25"
    for _ in range(2):
        _, body = server.get(path, headers(OWNER))
        path = json.loads(body)["next"]
    return path


def measure(args, count, workdir):
    data_dir = os.path.join(workdir, f"data-{count}")
    os.makedirs(data_dir)
    t0 = time.monotonic()
    subprocess.run([args.seeder, data_dir, str(count)], check=True)
    seeded = time.monotonic() - t0
    server = Server(args.sluice, data_dir)
    built = server.start()  # first start: builds the indexes
    server.stop()
    server.start()
    try:
        cases = {
            "owner page 1": ("/v2/tasks?limit=25", headers(OWNER)),
            "owner page 3": (third_page_path(server), headers(OWNER)),
            "other project": ("/v2/tasks?limit=25", headers(OTHER)),
            "admin page 1": ("/v2/tasks?limit=25", headers("admin", admin=True)),
            "owner sort_key=status": ("/v2/tasks?limit=25&sort_key=status", headers(OWNER)),
        }
        for path, hdrs in cases.values():  # warm-up
            timed(server, path, hdrs, 3)
        # The top-k case reads the whole partition: fewer rounds.
        medians = {name: timed(server, path, hdrs,
                               args.rounds // 10 if "sort_key" in name else args.rounds)
                   for name, (path, hdrs) in cases.items()}
        # 8 concurrent clients, mixing the owner's pages and other projects' lists.
        errors = []

        def client(n):
            for i in range(max(args.rounds // 10, 5)):
                who = headers(OWNER) if (n + i) % 2 == 0 else headers(OTHER)
                status, _ = server.get("/v2/tasks?limit=25", who)
                if status != 200:
                    errors.append(status)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            sys.exit(f"concurrent lists failed: {errors[:5]}")
        rss = server.peak_rss()
    finally:
        server.stop()
    size = sum(os.path.getsize(os.path.join(d, f))
               for d, _, fs in os.walk(os.path.join(data_dir, "meta")) for f in fs)
    return {"seeded": seeded, "built": built, "medians": medians, "rss": rss, "size": size}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/sluice/target"))
    p.add_argument("--small", type=int, default=100)
    p.add_argument("--big", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--sluice", default=os.path.join(target, "release", "sluice"))
    p.add_argument("--seeder", default=os.path.join(target, "release", "examples", "seed_tasks"))
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = p.parse_args()
    for exe in (args.sluice, args.seeder):
        if not os.access(exe, os.X_OK):
            sys.exit(f"{exe} missing: cargo build --release --locked --bin sluice "
                     "--example seed_tasks -p sluice-server")
    workdir = tempfile.mkdtemp(prefix="sluice-list-bench-")
    try:
        small = measure(args, args.small, workdir)
        big = measure(args, args.big, workdir)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    for name, r, n in (("small", small, args.small), ("big", big, args.big)):
        print(f"{name}: {n} tasks (+10 of another project), meta/ {r['size'] / 2**20:.0f} MiB, "
              f"seeded in {r['seeded']:.1f} s, first start (index build) {r['built']:.1f} s, "
              f"peak RSS {r['rss'] / 2**20:.1f} MiB")
    print(f"{'GET /v2/tasks?limit=25':28} {'small':>9} {'big':>9} {'big/small':>9}")
    for case in small["medians"]:
        s, b = small["medians"][case], big["medians"][case]
        print(f"{case:28} {s * 1e3:7.2f}ms {b * 1e3:7.2f}ms {b / s:9.2f}")
    ratio = big["medians"]["owner page 1"] / small["medians"]["owner page 1"]
    verdict = "ok" if ratio <= RATIO_TARGET else "MISSED"
    print(f"latency ratio (owner page 1, {args.big} vs {args.small} tasks) = {ratio:.2f} "
          f"(target <= {RATIO_TARGET}: {verdict})")
    rss = big["rss"]
    verdict = "ok" if rss < RSS_TARGET else "MISSED"
    print(f"peak RSS during {CLIENTS} concurrent lists of {args.big} tasks = "
          f"{rss / 2**20:.1f} MiB (target < {RSS_TARGET >> 20} MiB: {verdict})")


if __name__ == "__main__":
    main()
