"""openstacksdk's image sharing calls against Sluice, unmodified.

Usage: sdk_share.py URL FILE OWNER_TOKEN MEMBER_TOKEN MEMBER_PROJECT

The owner creates a shared raw image from FILE and adds MEMBER_PROJECT; the member accepts,
lists, downloads, then tries to rename and delete the image. Prints one JSON object.
"""

import json
import sys

import openstack


def connect(url, token):
    return openstack.connect(
        auth_type="admin_token",
        auth={"endpoint": url, "token": token},
        image_endpoint_override=url,
        image_api_version="2",
    )


def refused(call):
    """The HTTP status of a refused call, or 0 if it succeeded."""
    try:
        call()
        return 0
    except openstack.exceptions.HttpException as e:
        return e.status_code


def main():
    url, path, owner_token, member_token, project = sys.argv[1:6]
    owner, member = connect(url, owner_token), connect(url, member_token)
    image = owner.image.create_image(
        "sdk-shared",
        filename=path,
        disk_format="raw",
        container_format="bare",
        visibility="shared",
        wait=True,
    )
    added = owner.image.add_member(image.id, member_id=project)
    accepted = member.image.update_member(added, image.id, status="accepted")
    out = {
        "stores": [[s.id, s.is_default] for s in owner.image.stores()],
        "added": added.status,
        "accepted": accepted.status,
        "members": [[m.member_id, m.status] for m in owner.image.members(image.id)],
        "member_lists_it": any(i.id == image.id for i in member.image.images()),
        "download": len(member.image.download_image(image.id).content),
        "patch": refused(lambda: member.image.update_image(image.id, name="mine")),
        "delete": refused(lambda: member.image.delete_image(image.id)),
        "name_after": owner.image.get_image(image.id).name,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
