"""Helpers shared by the end-to-end benchmarks (`import_bench.py`, `upload_bench.py`,
`convert_bench.py`): the release binary started on a free loopback port, JSON calls to its
API, test images, the floors the benchmarks compare against, and the server process's
memory and CPU figures from /proc."""

import http.client
import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_sluice():
    """The release binary under $CARGO_TARGET_DIR (`cargo build --release --bin sluice`)."""
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/sluice/target"))
    return os.path.join(target, "release", "sluice")


def api(port, method, path, body=None, conn=None):
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    if own:
        conn.close()
    return resp.status, (json.loads(data) if data else None)


def start_sluice(binary, data_dir, *extra):
    """`sluice serve` on a free loopback port, once it answers: (process, port)."""
    port = free_port()
    proc = subprocess.Popen([binary, "serve", "--bind", f"127.0.0.1:{port}", "--data-dir", data_dir, *extra],
                            stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            api(port, "GET", "/versions")
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("sluice did not start")


def stop(proc):
    if proc:
        proc.terminate()
        proc.wait(timeout=30)


def write_random(path, size):
    """`size` bytes from /dev/urandom (incompressible, no zero clusters)."""
    with open("/dev/urandom", "rb") as rnd, open(path, "wb") as out:
        left = size
        while left:
            n = min(left, 8 << 20)
            out.write(rnd.read(n))
            left -= n


def write_sparse_random(path, data_mib, virtual_mib):
    """Random data in 64 MiB runs spread evenly over the virtual size (the rest are holes)."""
    run = 64
    runs = max(1, data_mib // run)
    stride = (virtual_mib // runs) << 20
    with open("/dev/urandom", "rb") as rnd, open(path, "wb") as out:
        out.truncate(virtual_mib << 20)
        for i in range(runs):
            out.seek(i * stride)
            out.write(rnd.read(run << 20))


def parallel_hash_rate(path, tools):
    """The commands in `tools` (argv prefixes, the file appended) run in parallel over the
    page-cached `path`: bytes/s of the slowest."""
    return parallel_hash_run(path, tools)[0]


def parallel_hash_run(path, tools):
    """`parallel_hash_rate`, and the CPU seconds (user + system) the commands spent:
    (bytes/s, CPU seconds)."""
    size = os.path.getsize(path)
    before = children_cpu_seconds()
    start = time.monotonic()
    procs = [subprocess.Popen([*tool, path], stdout=subprocess.DEVNULL) for tool in tools]
    for p in procs:
        if p.wait() != 0:
            sys.exit(f"{' '.join(p.args)} failed")
    elapsed = time.monotonic() - start
    return size / elapsed, children_cpu_seconds() - before


def children_cpu_seconds():
    """User + system CPU seconds of this process's waited-for children so far."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def vmhwm_kib(pid):
    """Peak resident set size of `pid` (KiB)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def reset_vmhwm(pid):
    """Starts a new peak-RSS window for `pid` (`clear_refs` 5; needs the process's owner)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def cpu_seconds(pid):
    """(user, system) CPU seconds `pid` has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name may hold spaces: the fields after it start past the last ')'.
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def thread_cpu(pid):
    """{tid: (thread name, user + system CPU seconds)} of `pid`'s live threads."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # the thread ended meanwhile
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        out[tid] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return out


class ThreadCpuSampler:
    """CPU seconds per thread name of `pid` between `start()` and `stop()`. Threads that start
    and end in between (an upload's hashing and writing threads) are read every `interval`
    seconds while they live, so up to `interval` of each one's last CPU time is missed; the
    process total from `cpu_seconds` has it all."""

    def __init__(self, pid, interval=0.02):
        self.pid, self.interval = pid, interval
        self.done = threading.Event()
        self.base = self.last = {}
        self.poller = threading.Thread(target=self._poll, daemon=True)

    def _poll(self):
        while not self.done.wait(self.interval):
            self.last = {**self.last, **thread_cpu(self.pid)}

    def start(self):
        self.base = self.last = thread_cpu(self.pid)
        self.poller.start()
        return self

    def stop(self):
        """{thread name: CPU seconds} since `start()`."""
        self.done.set()
        self.poller.join()
        last = {**self.last, **thread_cpu(self.pid)}
        by_name = {}
        for tid, (name, secs) in last.items():
            spent = secs - self.base.get(tid, (name, 0.0))[1]
            by_name[name] = by_name.get(name, 0.0) + spent
        return by_name


def p99(samples):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def verdict(met):
    return "ok" if met else "MISSED"
