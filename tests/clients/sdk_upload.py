"""Upload an image through Sluice with unmodified openstacksdk: `create_image(name,
filename=..., use_import=False)` (POST /v2/images, then PUT /v2/images/{id}/file), then
download it, the way a user without Keystone would (auth type `none`, endpoint override).
With a sixth argument `use_import`, `create_image(..., use_import=True)` instead: the SDK
stages the file (PUT /v2/images/{id}/stage) and imports it with glance-direct.

usage: sdk_upload.py ENDPOINT FILE DISK_FORMAT NAME OUTPUT_FILE [use_import]
Prints one JSON object on stdout; exits non-zero on any failure.
"""

import hashlib
import json
import sys

from openstack import connection


def main():
    endpoint, filename, disk_format, name, output = sys.argv[1:6]
    use_import = sys.argv[6:7] == ["use_import"]
    conn = connection.Connection(
        auth_type="none",
        auth={"endpoint": endpoint},
        image_endpoint_override=endpoint,
        image_api_version="2",
    )
    image = conn.create_image(
        name,
        filename=filename,
        disk_format=disk_format,
        container_format="bare",
        use_import=use_import,
        wait=True,
        timeout=120,
    )
    image = conn.image.get_image(image.id)
    if use_import:
        # The SDK returns once the import is accepted; the import itself is asynchronous
        # (as with Glance).
        image = conn.image.wait_for_status(image, status="active", wait=120)
    conn.image.download_image(image, output=output)
    with open(output, "rb") as f:
        data = f.read()
    print(
        json.dumps(
            {
                "image_status": image.status,
                "checksum": image.checksum,
                "hash_value": image.hash_value,
                "size": image.size,
                "downloaded_md5": hashlib.md5(data).hexdigest(),
            }
        )
    )


if __name__ == "__main__":
    main()
