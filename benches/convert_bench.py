#!/usr/bin/env python3
"""Conversion benchmark: a qcow2 and a streamOptimized VMDK holding 2 GiB of data in a 4 GiB
virtual disk, converted to raw. Printed from one run:

  * qemu-img convert -O raw                                  (the reference converter)
  * Glance's sequence: qemu-img info, convert, md5sum, sha512sum of the result
  * sluice convert --to raw                                  (converting alone; target: no
                                                              slower than qemu-img)
  * an import through `sluice serve --conversion raw`        (download + inspect + convert +
                                                              hash in one pass; target: at
                                                              least 2x faster than Glance's)

Usage: benches/convert_bench.py [--data-mib 2048] [--virtual-mib 4096] [--sluice PATH]
Needs qemu-img, md5sum, sha512sum and ~4x the data size free in $TMPDIR.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import default_sluice, start_sluice, stop, write_sparse_random  # noqa: E402
from import_bench import create_task, wait_task  # noqa: E402


def timed(cmd):
    start = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - start


def glance_sequence(src, fmt, dst):
    start = time.monotonic()
    subprocess.run(["qemu-img", "info", "-f", fmt, "--output=json", src], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["qemu-img", "convert", "-f", fmt, "-O", "raw", src, dst], check=True)
    subprocess.run(["md5sum", dst], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["sha512sum", dst], check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-mib", type=int, default=2048)
    ap.add_argument("--virtual-mib", type=int, default=4096)
    ap.add_argument("--sluice", default=default_sluice())
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="sluice-convbench-")
    sluice = server = None
    try:
        src = os.path.join(work, "src")
        os.makedirs(src)
        raw = os.path.join(work, "data.raw")
        print(f"making {args.data_mib} MiB of data in a {args.virtual_mib} MiB disk ...", flush=True)
        write_sparse_random(raw, args.data_mib, args.virtual_mib)
        images = {
            "qcow2": (os.path.join(src, "img.qcow2"), ["-O", "qcow2"]),
            "vmdk": (os.path.join(src, "img.vmdk"), ["-O", "vmdk", "-o", "subformat=streamOptimized"]),
        }
        for path, opts in images.values():
            subprocess.run(["qemu-img", "convert", *opts, raw, path], check=True)
        os.remove(raw)
        os.sync()

        server = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                                "import_bench.py"), "--serve-files", src],
                                  stdout=subprocess.PIPE, text=True)
        src_port = int(server.stdout.readline())
        sluice, port = start_sluice(args.sluice, os.path.join(work, "data"), "--allow-import-host",
                                    f"127.0.0.1:{src_port}", "--conversion", "raw")

        print()
        for fmt, (path, _) in images.items():
            out = os.path.join(work, "out.raw")
            q = timed(["qemu-img", "convert", "-f", fmt, "-O", "raw", path, out])
            os.remove(out)
            g = glance_sequence(path, fmt, out)
            os.remove(out)
            s = timed([args.sluice, "convert", "--format", fmt, "--to", "raw", path, out])
            os.remove(out)
            start = time.monotonic()
            task = wait_task(port, create_task(port, f"http://127.0.0.1:{src_port}/{os.path.basename(path)}",
                                               fmt, f"convbench-{fmt}"))
            imp = time.monotonic() - start
            if task["status"] != "success":
                sys.exit(f"{fmt} import failed: {task.get('message')}")
            print(f"{fmt:5}: qemu-img convert {q:6.2f} s | Glance sequence {g:6.2f} s | "
                  f"sluice convert {s:6.2f} s ({q / s:.2f}x qemu-img, target >= 1) | "
                  f"sluice import+convert+hash {imp:6.2f} s ({g / imp:.2f}x Glance, target >= 2)")
    finally:
        stop(sluice)
        stop(server)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
