"""Upload an image through Sluice with unmodified openstacksdk: `create_image(name,
filename=..., use_import=False)` (POST /v2/images, then PUT /v2/images/{id}/file), then
download it, the way a user without Keystone would (auth type `none`, endpoint override).

usage: sdk_upload.py ENDPOINT FILE DISK_FORMAT NAME OUTPUT_FILE
Prints one JSON object on stdout; exits non-zero on any failure.
"""

import hashlib
import json
import sys

from openstack import connection


def main():
    endpoint, filename, disk_format, name, output = sys.argv[1:6]
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
        use_import=False,
        wait=True,
        timeout=120,
    )
    image = conn.image.get_image(image.id)
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
