#!/usr/bin/env python3
"""GET /v2/tasks/{id} latency with the metadata in RocksDB vs PostgreSQL, while imports run.

For each store, in one run on the same file: `sluice serve` (RocksDB under its data dir, or
`--meta postgres` on a throwaway PostgreSQL cluster started here: initdb + pg_ctl from Debian's
postgresql-15 on a free loopback port, as the `postgres` user when run as root), 2 concurrent
raw imports, and GET /v2/tasks/{id} in a loop on one connection until they finish. Prints the
p50/p99 of each store and the PostgreSQL/RocksDB ratio of the p99s (target < 10 ms both).

Then the database side of the capacity model (README, "Running a cluster"): the rows the
PostgreSQL imports wrote (inserts + updates of tasks and images, from `pg_stat_user_tables`)
per import, and how many such writes per second this PostgreSQL commits (`pgbench`, the same
transaction as a lease renewal: lock the task row, upsert it with a record of the size the
imports stored; 8 clients, fsync on, Debian's defaults), so the imports per second at which the
database would bind.

Usage: benches/meta_bench.py [--size-mib 512] [--imports 2] [--pgbench-secs 15] [--sluice PATH]
The sluice binary defaults to $CARGO_TARGET_DIR/release/sluice.
"""

import argparse
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import api, default_sluice, free_port, p99, start_sluice, stop, verdict, write_random  # noqa: E402
from import_bench import FileHandler, ThreadingServer, create_task, wait_task  # noqa: E402

PG_BIN = "/usr/lib/postgresql/15/bin"


class Cluster:
    """A throwaway PostgreSQL cluster in `work`, stopped by `close()`."""

    def __init__(self, work):
        self.dir = os.path.join(work, "pg")
        os.mkdir(self.dir)
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        self.data = os.path.join(self.dir, "data")
        self.run("initdb", "-D", self.data, "-U", "sluice", "-A", "trust", "-E", "UTF8", "--locale=C")
        self.port = free_port()
        self.run("pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "log"), "-w", "-o",
                 f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir}", "start")
        self.run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "sluice", "-d", "postgres",
                 "-c", "CREATE DATABASE bench")
        self.url = f"postgres://sluice@127.0.0.1:{self.port}/bench"

    def run(self, tool, *args):
        cmd = [os.path.join(PG_BIN, tool), *args]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, cwd=self.dir, stdout=subprocess.DEVNULL)

    def psql(self, sql):
        """The output of `sql` on the bench database (unaligned, tuples only)."""
        out = subprocess.run([os.path.join(PG_BIN, "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U",
                              "sluice", "-d", "bench", "-At", "-c", sql],
                             check=True, capture_output=True, text=True)
        return out.stdout.strip()

    def rows_written(self):
        """Rows inserted or updated in tasks and images so far (the statistics lag by up to a
        second: wait before reading)."""
        time.sleep(2)
        return int(self.psql("SELECT coalesce(sum(n_tup_ins + n_tup_upd), 0) FROM pg_stat_user_tables "
                             "WHERE relname IN ('tasks', 'images')"))

    def write_rate(self, secs):
        """Task-row write transactions per second, as `pgbench` commits them: 10,000 copies of
        a task the imports stored, each transaction locking one and writing it back."""
        self.psql("INSERT INTO tasks (id, owner, status, created_at, summary, record) "
                  "SELECT 'cap-' || g, t.owner, 'processing', g, t.summary, t.record "
                  "FROM generate_series(1, 10000) g, (SELECT * FROM tasks LIMIT 1) t")
        script = os.path.join(self.dir, "renew.sql")
        with open(script, "w") as f:
            f.write("\\set n random(1, 10000)\n"
                    "BEGIN;\n"
                    "SELECT record FROM tasks WHERE id = 'cap-' || :n FOR UPDATE;\n"
                    "UPDATE tasks SET record = record, summary = summary, lease_until = :n "
                    "WHERE id = 'cap-' || :n;\n"
                    "END;\n")
        out = subprocess.run([os.path.join(PG_BIN, "pgbench"), "-n", "-f", script, "-c", "8", "-j", "2", "-T",
                              str(secs), "-h", "127.0.0.1", "-p", str(self.port), "-U", "sluice", "bench"],
                             check=True, capture_output=True, text=True).stdout
        tps = [line for line in out.splitlines() if line.startswith("tps = ")]
        return float(tps[0].split()[2])

    def close(self):
        self.run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")


def measure(binary, data_dir, src_port, imports, extra):
    """(p50, p99, samples) of GET /v2/tasks/{id} while `imports` imports of disk.raw run."""
    file_url = f"http://127.0.0.1:{src_port}/disk.raw"
    sluice, port = start_sluice(binary, data_dir, "--allow-import-host", f"127.0.0.1:{src_port}",
                                "--workers", str(imports), "--per-project-imports", str(imports), *extra)
    try:
        ids = [create_task(port, file_url, "raw", f"bench-{n}") for n in range(imports)]
        done = threading.Event()
        latencies = []

        def poll():
            conn = http.client.HTTPConnection("127.0.0.1", port)
            while not done.is_set():
                start = time.perf_counter()
                api(port, "GET", f"/v2/tasks/{ids[-1]}", conn=conn)
                latencies.append(time.perf_counter() - start)

        poller = threading.Thread(target=poll)
        poller.start()
        for task_id in ids:
            task = wait_task(port, task_id)
            if task["status"] != "success":
                sys.exit(f"import failed: {task}")
        done.set()
        poller.join()
        latencies.sort()
        return latencies[len(latencies) // 2], p99(latencies), len(latencies)
    finally:
        stop(sluice)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--imports", type=int, default=2)
    parser.add_argument("--pgbench-secs", type=int, default=15)
    parser.add_argument("--sluice", default=default_sluice())
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="sluice-meta-bench-")
    os.chmod(work, 0o755)
    cluster = None
    server = None
    try:
        src = os.path.join(work, "disk.raw")
        write_random(src, args.size_mib << 20)
        FileHandler.directory = work
        server = ThreadingServer(("127.0.0.1", 0), FileHandler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        src_port = server.server_address[1]
        cluster = Cluster(work)
        results = {}
        written = 0
        for name, extra in [("rocksdb", []), ("postgres", ["--meta", "postgres",
                                                            "--meta-postgres-url", cluster.url])]:
            before = cluster.rows_written()
            results[name] = measure(args.sluice, os.path.join(work, f"data-{name}"), src_port,
                                    args.imports, extra)
            written = cluster.rows_written() - before
            p50, p99_s, n = results[name]
            print(f"{name:9} GET /v2/tasks/{{id}} p50 {p50 * 1000:.2f} ms, p99 {p99_s * 1000:.2f} ms over "
                  f"{n} requests during {args.imports} imports of {args.size_mib} MiB "
                  f"(target < 10: {verdict(p99_s < 0.010)})")
        ratio = results["postgres"][1] / results["rocksdb"][1]
        print(f"p99 PostgreSQL / RocksDB: {ratio:.2f}")
        per_import = written / args.imports
        rate = cluster.write_rate(args.pgbench_secs)
        print(f"PostgreSQL rows written per import: {per_import:.1f} (tasks and images, inserts + updates)")
        print(f"PostgreSQL task write transactions: {rate:.0f}/s (pgbench, 8 clients, {args.pgbench_secs} s); "
              f"the database binds at ~{rate / per_import:.0f} imports/s")
    finally:
        if server:
            server.shutdown()
        if cluster:
            cluster.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
