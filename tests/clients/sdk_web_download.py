"""Interoperable import through Sluice with unmodified openstacksdk: create a queued image,
then `conn.image.import_image(image, method='web-download', uri=...)`, and wait for it to be
`active` (openstacksdk's own `wait_for_status`).

usage: sdk_web_download.py ENDPOINT URI NAME
Prints one JSON object on stdout; exits non-zero on any failure.
"""

import json
import sys

from openstack import connection


def main():
    endpoint, uri, name = sys.argv[1:4]
    conn = connection.Connection(
        auth_type="admin_token",
        auth={"endpoint": endpoint, "token": "anything"},
        image_endpoint_override=endpoint,
        image_api_version="2",
    )
    image = conn.image.create_image(
        name=name, disk_format="qcow2", container_format="bare"
    )
    created_status = image.status
    conn.image.import_image(image, method="web-download", uri=uri)
    image = conn.image.wait_for_status(
        image, status="active", failures=["killed"], interval=0.2, wait=60
    )
    tasks = list(conn.image.image_tasks(image))
    print(
        json.dumps(
            {
                "image_id": image.id,
                "created_status": created_status,
                "image_status": image.status,
                "checksum": image.checksum,
                "hash_value": image.hash_value,
                "size": image.size,
                "task_types": [t.type for t in tasks],
            }
        )
    )


if __name__ == "__main__":
    main()
