#!/usr/bin/env python3
"""Direct-upload benchmark: `curl -T` into the real `sluice serve` over loopback HTTP
(`POST /v2/images`, then `PUT /v2/images/{id}/file`), and glance-direct (`PUT …/stage`, then
`POST …/import`).

Measured in one run, interleaved, best of ROUNDS on each side:
  * the floor: `openssl md5` and `openssl sha512` in parallel over the very file uploaded
    (page-cached), since an upload must at least hash every byte twice; also at nice 10, the
    niceness of the server's hashing threads (see BACKGROUND_NICE below: this second ratio
    is the fairer one while other work loads the machine);
  * a PUT /file of a 2 GiB raw of random data and of a qcow2 holding 2 GiB of random data in
    a 4 GiB virtual disk, as bytes/s and as a ratio to the floor of the same file
    (target >= 0.75), with the CPU seconds the server and curl spent on it (where the time
    goes: on a machine with few cores, curl's reading and sending and the kernel's loopback
    copy compete with the two hashes for the same cores), and where the rest goes: CPU
    seconds per GiB of the hashing threads, the runtime threads (receive), the store writer,
    curl and the floor, and the idle time of each (N cores x wall = CPU + idle, so the
    ratio is (floor CPU + floor idle) / (upload CPU + upload idle));
  * 4 concurrent 2 GiB raw uploads: the server's peak RSS during them (VmHWM after a reset,
    target < 128 MiB) and the p99 latency of GET /v2/images/{id} while they run
    (target < 10 ms).

  * glance-direct into a second server started with `--conversion raw`: `PUT
    /v2/images/{id}/stage` of the same qcow2 (inspection, conversion to raw and both hashes in
    the one pass), timed as the stage, then `POST /v2/images/{id}/import` with
    `glance-direct` until the image is `active`, timed separately as the commit; the stage as
    a ratio to the floor over the raw output (`qemu-img convert -O raw` of the qcow2, made
    once before anything is timed), target >= 0.6.

Usage: benches/upload_bench.py [--size-mib 2048] [--concurrent-size-mib 2048] [--sluice PATH]
                               [--keep]
The sluice binary defaults to $CARGO_TARGET_DIR/release/sluice (build it with
`cargo build --release --bin sluice`). Needs curl, openssl, qemu-img, ~3x the size in RAM
for the page cache (plus the raw output, twice the size, mostly holes) and ~(4 + 4 concurrent)
x the size free in $TMPDIR.
"""

import argparse
import http.client
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (ThreadCpuSampler, api, cpu_seconds, default_sluice, p99,  # noqa: E402
                      parallel_hash_run, reset_vmhwm, start_sluice, stop, verdict, vmhwm_kib,
                      write_random, write_sparse_random)

ROUNDS = 3
# The server hashes on threads at nice 10 (`BACKGROUND_NICE`, pipeline/src/background.rs) so
# that imports never starve the API. On a machine shared with other work, a nice-0 floor then
# measures the scheduler as much as the upload path, so the floor is also measured at nice 10
# and a second ratio printed; on an idle machine the two floors agree.
BACKGROUND_NICE = 10


def floor_tools(nice):
    return [["nice", "-n", str(nice), "openssl", digest] for digest in ("md5", "sha512")]


TARGET_RATIO = 0.75
TARGET_STAGE_RATIO = 0.6
TARGET_RSS_MIB = 128
TARGET_P99_MS = 10


def create_image(port, name, disk_format):
    status, image = api(port, "POST", "/v2/images",
                        {"name": name, "disk_format": disk_format, "container_format": "bare"})
    if status != 201:
        sys.exit(f"image create failed: {status} {image}")
    return image["id"]


def curl_upload(port, image_id, path, target="file"):
    """Starts `curl -T path` into PUT /v2/images/{id}/{target} (`file` or `stage`)."""
    return subprocess.Popen(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-T", path,
         "-H", "Content-Type: application/octet-stream",
         f"http://127.0.0.1:{port}/v2/images/{image_id}/{target}"],
        stdout=subprocess.PIPE, text=True)


def finish_upload(port, image_id, curl, then="active"):
    """Waits for `curl_upload`; the image must answer 204 and be `then` afterwards."""
    out, _ = curl.communicate()
    if curl.returncode != 0 or out.strip() != "204":
        _, image = api(port, "GET", f"/v2/images/{image_id}")
        sys.exit(f"upload of {image_id} failed: curl {curl.returncode}, HTTP {out.strip()}, image {image}")
    _, image = api(port, "GET", f"/v2/images/{image_id}")
    if image["status"] != then:
        sys.exit(f"image {image_id} is {image['status']} after its upload, not {then}")


def wait_active(port, image_id, timeout=600):
    """Polls GET /v2/images/{id} until the image is `active`: the image. A glance-direct import
    that fails returns the image to `queued`; its task's message is then the reason."""
    deadline = time.monotonic() + timeout
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        while time.monotonic() < deadline:
            _, image = api(port, "GET", f"/v2/images/{image_id}", conn=conn)
            if image["status"] == "active":
                return image
            if image["status"] not in ("uploading", "importing"):
                _, tasks = api(port, "GET", f"/v2/images/{image_id}/tasks", conn=conn)
                sys.exit(f"import of {image_id} left it {image['status']}: {tasks}")
            time.sleep(0.005)
    finally:
        conn.close()
    sys.exit(f"image {image_id} not active after {timeout} s")


def timed_upload(port, pid, path, fmt, name):
    """One upload: (bytes/s, seconds, server CPU (user, sys), curl CPU seconds, server CPU
    seconds by thread name). The image is deleted afterwards to keep the disk free."""
    image_id = create_image(port, name, fmt)
    server_before = cpu_seconds(pid)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    threads = ThreadCpuSampler(pid).start()
    start = time.monotonic()
    finish_upload(port, image_id, curl_upload(port, image_id, path))
    elapsed = time.monotonic() - start
    by_thread = threads.stop()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    server = tuple(a - b for a, b in zip(cpu_seconds(pid), server_before))
    curl_cpu = (children.ru_utime - children_before.ru_utime) + (children.ru_stime - children_before.ru_stime)
    api(port, "DELETE", f"/v2/images/{image_id}")
    return os.path.getsize(path) / elapsed, elapsed, server, curl_cpu, by_thread


def timed_glance_direct(port, pid, path, name, raw_size):
    """A glance-direct import of `path` (qcow2) into a server converting to raw: stage, then
    `POST …/import` until `active`. (stage seconds, commit seconds, server CPU (user, sys)
    during the stage, curl CPU seconds, server CPU seconds by thread name during the stage).
    Checks the image is the raw output, then deletes it."""
    image_id = create_image(port, name, "qcow2")
    server_before = cpu_seconds(pid)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    threads = ThreadCpuSampler(pid).start()
    start = time.monotonic()
    finish_upload(port, image_id, curl_upload(port, image_id, path, "stage"), then="uploading")
    staged = time.monotonic()
    by_thread = threads.stop()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    server = tuple(a - b for a, b in zip(cpu_seconds(pid), server_before))
    curl_cpu = (children.ru_utime - children_before.ru_utime) + (children.ru_stime - children_before.ru_stime)
    status, body = api(port, "POST", f"/v2/images/{image_id}/import", {"method": {"name": "glance-direct"}})
    if status != 202:
        sys.exit(f"glance-direct import of {image_id}: {status} {body}")
    image = wait_active(port, image_id)
    committed = time.monotonic()
    if image["disk_format"] != "raw" or image["size"] != raw_size:
        sys.exit(f"image {image_id} is {image['disk_format']} of {image['size']} bytes, "
                 f"not raw of {raw_size}")
    api(port, "DELETE", f"/v2/images/{image_id}")
    return staged - start, committed - staged, server, curl_cpu, by_thread


def cpu_breakdown(label, size, secs, server_cpu, curl_cpu, by_thread, floor):
    """Prints where an upload's time goes, per GiB, next to the floor's (module docs,
    "where the rest goes"): with N cores, N x wall time = CPU time + idle time (cores idle
    or running other processes), for the upload and for the floor alike, so the ratio is
    (floor CPU + floor idle) / (upload CPU + upload idle) and each difference below is a
    share of the gap."""
    floor_rate, floor_cpu = floor
    ncpu = os.cpu_count()
    gib = size / 2**30
    hashing = by_thread.get("md5", 0.0) + by_thread.get("sha512", 0.0)
    receive = by_thread.get("sluice", 0.0)
    lane = by_thread.get("sluice-write", 0.0) + by_thread.get("sluice-convert", 0.0)
    other = max(0.0, server_cpu - hashing - receive - lane)
    idle = max(0.0, ncpu * secs - server_cpu - curl_cpu)
    floor_idle = max(0.0, ncpu * size / floor_rate - floor_cpu)
    upload_total = (server_cpu + curl_cpu + idle) / gib
    floor_total = (floor_cpu + floor_idle) / gib
    lane_name = "convert+write" if "sluice-convert" in by_thread else "store writer"
    print(f"{'':<26} CPU s/GiB: floor {floor_cpu / gib:.2f} (+ {floor_idle / gib:.2f} idle of "
          f"{ncpu} cores); upload: hashing {hashing / gib:.2f}, receive (runtime threads: "
          f"socket, HTTP, inspection) {receive / gib:.2f}, {lane_name} {lane / gib:.2f}, "
          f"other server {other / gib:.2f}, curl {curl_cpu / gib:.2f} (+ {idle / gib:.2f} idle)")
    print(f"{'':<26} where the rest goes (upload - floor, s/GiB of {ncpu} cores): hashing "
          f"{(hashing - floor_cpu) / gib:+.2f}, receive {receive / gib:+.2f}, {lane_name} "
          f"{lane / gib:+.2f}, other {other / gib:+.2f}, curl {curl_cpu / gib:+.2f}, idle "
          f"{(idle - floor_idle) / gib:+.2f}; ratio = {floor_total:.2f} / {upload_total:.2f} "
          f"= {floor_total / upload_total:.2f}")


def report_glance_direct(qcow2, raw_out, floor, niced_floor, stages, commits):
    """The best stage (by time) with its CPU, against the floors over the raw output, and the
    best commit."""
    stage_s, (user, system), curl_cpu, by_thread = min(stages, key=lambda s: s[0])
    floor, floor_cpu = floor
    raw_size = os.path.getsize(raw_out)
    rate = raw_size / stage_s
    ratio = rate / floor
    label = "glance-direct qcow2->raw"
    print(f"{label:<26} stage {os.path.getsize(qcow2) / 1e6:5.0f} MB of qcow2 to {raw_size / 1e6:5.0f} MB "
          f"raw in {stage_s:6.2f} s: {rate / 1e6:6.1f} MB/s of raw output; floor over the raw output "
          f"{floor / 1e6:6.1f} MB/s, ratio {ratio:.2f} (target >= {TARGET_STAGE_RATIO}: "
          f"{verdict(ratio >= TARGET_STAGE_RATIO)}); floor at nice {BACKGROUND_NICE} "
          f"{niced_floor / 1e6:6.1f} MB/s, ratio {rate / niced_floor:.2f}")
    print(f"{'':<26} CPU: server {user:.2f} s user + {system:.2f} s sys, curl {curl_cpu:.2f} s "
          f"(of {os.cpu_count()} x {stage_s:.2f} s)")
    cpu_breakdown(label, raw_size, stage_s, user + system, curl_cpu, by_thread, (floor, floor_cpu))
    print(f"{'':<26} commit (POST /import glance-direct until active): best {min(commits) * 1000:.1f} ms, "
          f"worst {max(commits) * 1000:.1f} ms of {len(commits)}")


def concurrent_uploads(port, pid, path, n=4):
    """`n` uploads of `path` at once while a client reads one of the images as fast as it can:
    (peak RSS MiB, GET p99 ms, GET count, seconds)."""
    ids = [create_image(port, f"upbench-c{i}", "raw") for i in range(n)]
    reset_vmhwm(pid)
    start = time.monotonic()
    curls = [curl_upload(port, i, path) for i in ids]
    done = threading.Event()

    def wait_all():
        for i, c in zip(ids, curls):
            finish_upload(port, i, c)
        done.set()

    waiter = threading.Thread(target=wait_all)
    waiter.start()
    latencies = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while not done.is_set():
        t0 = time.perf_counter()
        status, _ = api(port, "GET", f"/v2/images/{ids[-1]}", conn=conn)
        latencies.append(time.perf_counter() - t0)
        if status != 200:
            sys.exit(f"GET /v2/images/{ids[-1]} during the uploads: {status}")
    conn.close()
    waiter.join()
    elapsed = time.monotonic() - start
    rss_mib = vmhwm_kib(pid) / 1024
    for i in ids:
        api(port, "DELETE", f"/v2/images/{i}")
    return rss_mib, p99(latencies) * 1000, len(latencies), elapsed


def report(label, path, floor, niced_floor, best):
    rate, secs, (user, system), curl_cpu, by_thread = best
    floor, floor_cpu = floor
    size = os.path.getsize(path)
    ratio = rate / floor
    print(f"{label:<26} {size / 1e6:5.0f} MB in {secs:6.2f} s: {rate / 1e6:6.1f} MB/s; floor "
          f"{floor / 1e6:6.1f} MB/s, ratio {ratio:.2f} (target >= {TARGET_RATIO}: "
          f"{verdict(ratio >= TARGET_RATIO)}); floor at nice {BACKGROUND_NICE} "
          f"{niced_floor / 1e6:6.1f} MB/s, ratio {rate / niced_floor:.2f}")
    print(f"{'':<26} CPU: server {user:.2f} s user + {system:.2f} s sys, curl {curl_cpu:.2f} s "
          f"(of {os.cpu_count()} x {secs:.2f} s)")
    cpu_breakdown(label, size, secs, user + system, curl_cpu, by_thread, (floor, floor_cpu))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=2048, help="data size of each image (MiB)")
    ap.add_argument("--concurrent-size-mib", type=int, default=2048,
                    help="size of each of the 4 concurrent uploads (MiB)")
    ap.add_argument("--sluice", default=default_sluice())
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="sluice-upbench-")
    sluice = converting = None
    try:
        raw = os.path.join(work, "big.raw")
        print(f"making a {args.size_mib} MiB raw image of random data ...", flush=True)
        write_random(raw, args.size_mib << 20)
        qcow2 = os.path.join(work, "big.qcow2")
        sparse = os.path.join(work, "sparse.raw")
        print(f"making a qcow2 of {args.size_mib} MiB of data in {2 * args.size_mib} MiB ...", flush=True)
        write_sparse_random(sparse, args.size_mib, 2 * args.size_mib)
        subprocess.run(["qemu-img", "convert", "-O", "qcow2", sparse, qcow2], check=True)
        os.remove(sparse)
        # The floor of the glance-direct stage: the hashes over what it stores, the raw
        # output, made here once and not timed.
        raw_out = os.path.join(work, "big.out.raw")
        subprocess.run(["qemu-img", "convert", "-O", "raw", qcow2, raw_out], check=True)
        small = raw
        if args.concurrent_size_mib != args.size_mib:
            small = os.path.join(work, "small.raw")
            write_random(small, args.concurrent_size_mib << 20)
        # Let the new files reach the disk now, not while the uploads write theirs; then
        # into the page cache, as the floor reads them.
        os.sync()
        subprocess.run(["cat", raw, qcow2, raw_out, small], stdout=subprocess.DEVNULL, check=True)

        load_before = os.getloadavg()[0]
        sluice, port = start_sluice(args.sluice, os.path.join(work, "data"))
        pid = sluice.pid
        converting, conv_port = start_sluice(args.sluice, os.path.join(work, "data-conv"), "--conversion", "raw")
        raw_out_size = os.path.getsize(raw_out)

        # These machines' speed drifts by tens of percent within minutes: floors and uploads
        # are measured interleaved, ROUNDS times each, and the best of each compared.
        floors = {(fmt, nice): [] for fmt in ("raw", "qcow2", "direct") for nice in (0, BACKGROUND_NICE)}
        uploads = {"raw": [], "qcow2": []}
        stages, commits = [], []
        for r in range(ROUNDS):
            for fmt, path in (("raw", raw), ("qcow2", qcow2)):
                floors[fmt, 0].append(parallel_hash_run(path, floor_tools(0)))
                uploads[fmt].append(timed_upload(port, pid, path, fmt, f"upbench-{fmt}-{r}"))
                floors[fmt, BACKGROUND_NICE].append(parallel_hash_run(path, floor_tools(BACKGROUND_NICE)))
            floors["direct", 0].append(parallel_hash_run(raw_out, floor_tools(0)))
            stage_s, commit_s, *cpu = timed_glance_direct(conv_port, converting.pid, qcow2,
                                                          f"upbench-direct-{r}", raw_out_size)
            stages.append((stage_s, *cpu))
            commits.append(commit_s)
            floors["direct", BACKGROUND_NICE].append(parallel_hash_run(raw_out, floor_tools(BACKGROUND_NICE)))
        rss_mib, p99_ms, gets, conc_s = concurrent_uploads(port, pid, small)

        print()
        print(f"best of {ROUNDS} interleaved rounds each; floor = openssl md5 || openssl sha512 "
              f"over the same file; load average {load_before:.2f} before, "
              f"{os.getloadavg()[0]:.2f} after")
        for fmt, path in (("raw", raw), ("qcow2", qcow2)):
            report(f"PUT /file {fmt} (curl -T)", path, max(floors[fmt, 0]), max(floors[fmt, BACKGROUND_NICE])[0],
                   max(uploads[fmt], key=lambda u: u[0]))
        report_glance_direct(qcow2, raw_out, max(floors["direct", 0]), max(floors["direct", BACKGROUND_NICE])[0],
                             stages, commits)
        print(f"4 concurrent {args.concurrent_size_mib} MiB uploads in {conc_s:.1f} s: peak RSS "
              f"{rss_mib:.1f} MiB (target < {TARGET_RSS_MIB}: {verdict(rss_mib < TARGET_RSS_MIB)}), "
              f"GET /v2/images/{{id}} p99 {p99_ms:.2f} ms over {gets} requests "
              f"(target < {TARGET_P99_MS}: {verdict(p99_ms < TARGET_P99_MS)})")
    finally:
        stop(sluice)
        stop(converting)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
