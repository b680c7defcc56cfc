#!/usr/bin/env python3
"""Writes the seed corpora of the API body targets (fuzz/corpus/api_task_create/,
api_image_patch/ and api_image_create/): one control byte (see server/src/fuzzing.rs) then a JSON body.

Task and image bodies are every POST /v2/tasks and POST /v2/images body of Glance's recorded traffic
(/work/shared/reference/glance-wire/, or the directory given as the first argument); patch
documents are the ones the server's unit tests send (server/src/api/images/tests/patch.rs,
server/src/api/policy/tests.rs). Only files named seed-* are replaced.
"""
import hashlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
WIRE = sys.argv[1] if len(sys.argv) > 1 else "/work/shared/reference/glance-wire"

# Control bytes: bits 0-1 the caller (0: member of the owning project, 1: admin of another).
TASK_CONTROLS = [0x00, 0x01, 0x28]  # member; admin; member, convert to raw, tight quotas
# Bit 0 the media type (0: v2.1, 1: v2.0), bits 1-2 the caller, bits 3-5 the status
# (0: queued, 4: active), bit 6 tight quotas.
ACTIVE = 4 << 3
PATCHES_V21 = [
    [{"op": "replace", "path": "/name", "value": "new"},
     {"op": "add", "path": "/tags", "value": ["a", "b", "a"]},
     {"op": "add", "path": "/os_distro", "value": "cirros"},
     {"op": "add", "path": "/os_distro", "value": "debian"},
     {"op": "remove", "path": "/hw_disk_bus"},
     {"op": "replace", "path": "/min_ram", "value": 512},
     {"op": "replace", "path": "/protected", "value": True},
     {"op": "replace", "path": "/visibility", "value": "community"},
     {"op": "add", "path": "/a~1b~0c", "value": "escaped"}],
    [{"op": "replace", "path": "/disk_format", "value": "qcow2"},
     {"op": "replace", "path": "/container_format", "value": "bare"}],
    [{"op": "replace", "path": "/size", "value": 1}],
    [{"op": "replace", "path": "/status", "value": "queued"}],
    [{"op": "add", "path": "/deleted", "value": "x"}],
    [{"op": "add", "path": "/os_glance_import_task", "value": "x"}],
    [{"op": "remove", "path": "/name"}],
    [{"op": "remove", "path": "/nope"}],
    [{"op": "replace", "path": "/nope", "value": "x"}],
    [{"op": "replace", "path": "/visibility", "value": "public"}],
    [{"op": "replace", "path": "/owner", "value": "pb"}],
    [{"op": "replace", "path": "/visibility", "value": "everyone"}],
    [{"op": "replace", "path": "/min_disk", "value": -1}],
    [{"op": "add", "path": "/os_distro", "value": 5}],
    [{"op": "move", "path": "/name"}],
    [{"op": "add", "path": "/name"}],
    [{"op": "add", "path": "name", "value": "x"}],
    [{"op": "add", "path": "/a/b", "value": "x"}],
    [{"op": "add", "path": "/a~2", "value": "x"}],
    {"op": "add"},
    [{"op": "add", "path": "/os_version", "value": "y"},
     {"op": "add", "path": "/hw_rng_model", "value": "virtio"}],
    [],
]
PATCHES_V20 = [
    [{"replace": "/name", "value": "v20"}],
    [{"add": "/os_distro", "value": "x"}],
    [{"remove": "/a~1b~0c"}],
]


# Bodies of POST /v2/images beyond the recorded ones: every base attribute, an id, tags.
IMAGE_BODIES = [
    {"id": "00000000-0000-4000-8000-000000000001", "name": "all", "visibility": "community",
     "protected": True, "min_disk": 1, "min_ram": 64, "disk_format": "qcow2",
     "container_format": "bare", "tags": ["a", "b", "a"], "os_distro": "debian"},
    {"name": None, "disk_format": None, "owner": "fedcba9876543210fedcba9876543210"},
    {"id": "not-a-uuid"},
    {"size": 1},
    {"os_glance_x": "y"},
    [],
]


def wire_bodies(path):
    """Every POST body to `path` in the recorded traffic."""
    bodies = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("method") == "POST" and node.get("path", "").split("?")[0] == path:
                if "json" in node:
                    bodies.append(json.dumps(node["json"]).encode())
                elif isinstance(node.get("body"), str):
                    bodies.append(node["body"].encode())
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for root, _, files in sorted(os.walk(WIRE)):
        for name in sorted(files):
            if name.endswith(".json"):
                with open(os.path.join(root, name)) as f:
                    walk(json.load(f))
    return sorted(set(bodies))


def write(target, seeds):
    directory = os.path.join(HERE, "corpus", target)
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.startswith("seed-"):
            os.remove(os.path.join(directory, name))
    for data in seeds:
        digest = hashlib.sha1(data).hexdigest()[:12]
        with open(os.path.join(directory, f"seed-{digest}"), "wb") as f:
            f.write(data)
    print(f"{target}: {len(seeds)} seeds")


def main():
    tasks = {bytes([c]) + body for body in wire_bodies("/v2/tasks") for c in TASK_CONTROLS}
    write("api_task_create", sorted(tasks))
    patches = set()
    for doc in PATCHES_V21:
        body = json.dumps(doc).encode()
        for control in (ACTIVE, 0x00, ACTIVE | 0x02 | 0x40):
            patches.add(bytes([control]) + body)
    for doc in PATCHES_V20:
        body = json.dumps(doc).encode()
        patches.add(bytes([ACTIVE | 1]) + body)
    write("api_image_patch", sorted(patches))
    images = set()
    for body in wire_bodies("/v2/images") + [json.dumps(b).encode() for b in IMAGE_BODIES]:
        for control in (0x00, 0x01, 0x04):
            images.add(bytes([control]) + body)
    write("api_image_create", sorted(images))


if __name__ == "__main__":
    main()
