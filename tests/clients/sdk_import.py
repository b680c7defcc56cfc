"""Import an image through Sluice with unmodified openstacksdk, the way a user without
Keystone would: an image endpoint override and either the `admin_token` or the `none` auth
plugin. Creates an import task, waits for it, fetches the image record and downloads the data,
checking the checksums openstacksdk reports against the bytes received.

usage: sdk_import.py MODE ENDPOINT IMPORT_FROM NAME OUTPUT_FILE [expect_failure]
Prints one JSON object on stdout; exits non-zero on any failure. With `expect_failure`, the
task must fail: the object holds the text of the error openstacksdk raised and the failed
task's `message` as openstacksdk reads it (`Task.message`, what a user looks at next: the
error itself names only the status).
"""

import hashlib
import json
import sys

from openstack import connection, exceptions


def main():
    mode, endpoint, import_from, name, output = sys.argv[1:6]
    expect_failure = sys.argv[6:7] == ["expect_failure"]
    if mode == "admin_token":
        auth = {"endpoint": endpoint, "token": "anything"}
    elif mode == "none":
        auth = {"endpoint": endpoint}
    else:
        raise SystemExit(f"unknown mode {mode}")
    conn = connection.Connection(
        auth_type=mode,
        auth=auth,
        image_endpoint_override=endpoint,
        image_api_version="2",
    )
    task = conn.image.create_task(
        type="import",
        input={
            "import_from": import_from,
            "import_from_format": "qcow2",
            "image_properties": {
                "name": name,
                "disk_format": "qcow2",
                "container_format": "bare",
            },
        },
    )
    created_status = task.status
    try:
        task = conn.image.wait_for_task(
            task, status="success", failures=["failure"], interval=0.1, wait=60
        )
    except exceptions.ResourceFailure as e:
        if not expect_failure:
            raise
        failed = conn.image.get_task(task.id)
        print(
            json.dumps(
                {
                    "created_status": created_status,
                    "sdk_error": str(e),
                    "task_status": failed.status,
                    "task_message": failed.message,
                }
            )
        )
        return
    if expect_failure:
        raise SystemExit(f"task {task.id} succeeded; a failure was expected")
    image = conn.image.get_image(task.result["image_id"])
    conn.image.download_image(image, output=output)
    with open(output, "rb") as f:
        data = f.read()
    print(
        json.dumps(
            {
                "created_status": created_status,
                "task_status": task.status,
                "task_owner": task.owner_id,
                "image_id": image.id,
                "image_name": image.name,
                "image_status": image.status,
                "checksum": image.checksum,
                "hash_algo": image.hash_algo,
                "hash_value": image.hash_value,
                "size": image.size,
                "virtual_size": image.virtual_size,
                "downloaded_md5": hashlib.md5(data).hexdigest(),
                "downloaded_sha512": hashlib.sha512(data).hexdigest(),
                "downloaded_len": len(data),
            }
        )
    )


if __name__ == "__main__":
    main()
