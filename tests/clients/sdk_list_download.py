"""List and download an image through Sluice with unmodified openstacksdk (auth type `none`,
an image endpoint override): the node asked need not be the one that imported it.

usage: sdk_list_download.py ENDPOINT IMAGE_ID OUTPUT_FILE
Prints one JSON object on stdout: the ids `conn.image.images()` lists, the image's status,
checksum and hash as `conn.image.get_image` reads them, and the md5 and sha512 of the bytes
`conn.image.download_image` wrote. Exits non-zero on any failure.
"""

import hashlib
import json
import sys

from openstack import connection


def main():
    endpoint, image_id, output = sys.argv[1:4]
    conn = connection.Connection(
        auth_type="none",
        auth={"endpoint": endpoint},
        image_endpoint_override=endpoint,
        image_api_version="2",
    )
    listed = sorted(image.id for image in conn.image.images())
    image = conn.image.get_image(image_id)
    conn.image.download_image(image, output=output)
    with open(output, "rb") as f:
        data = f.read()
    print(
        json.dumps(
            {
                "listed": listed,
                "image_status": image.status,
                "checksum": image.checksum,
                "hash_algo": image.hash_algo,
                "hash_value": image.hash_value,
                "size": image.size,
                "downloaded_md5": hashlib.md5(data).hexdigest(),
                "downloaded_sha512": hashlib.sha512(data).hexdigest(),
            }
        )
    )


if __name__ == "__main__":
    main()
