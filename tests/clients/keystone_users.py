"""Creates what tests/service/keystone.rs needs in a fresh Keystone (stdlib only): a
`service` project with Sluice's service user `sluice` (role `service`), projects `alpha` and
`beta`, and users `<project>-<role>` with role reader, member, admin or `_member_` (Keystone's
legacy role, which grants nothing in Sluice) there; each user's
password is `pw-<user>`. Prints {"projects": {name: id}, "users": {name: id}} as JSON.

Usage: python keystone_users.py KEYSTONE_URL ADMIN_PASSWORD
"""
import json
import sys
import urllib.request

url, admin_password = sys.argv[1].rstrip("/"), sys.argv[2]


def call(method, path, body=None, token=None):
    req = urllib.request.Request(url + path, method=method,
                                 data=None if body is None else json.dumps(body).encode())
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("X-Auth-Token", token)
    with urllib.request.urlopen(req) as resp:
        text = resp.read()
        return resp.headers, (json.loads(text) if text else None)


headers, _ = call("POST", "/v3/auth/tokens", {"auth": {
    "identity": {"methods": ["password"], "password": {"user": {
        "name": "admin", "domain": {"id": "default"}, "password": admin_password}}},
    "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}})
token = headers["X-Subject-Token"]

roles = {r["name"]: r["id"] for r in call("GET", "/v3/roles", token=token)[1]["roles"]}
for name in ("reader", "member", "admin", "_member_", "service"):
    if name not in roles:
        roles[name] = call("POST", "/v3/roles", {"role": {"name": name}}, token)[1]["role"]["id"]


def project(name):
    return call("POST", "/v3/projects",
                {"project": {"name": name, "domain_id": "default"}}, token)[1]["project"]["id"]


def user(name, project_id, role):
    uid = call("POST", "/v3/users", {"user": {
        "name": name, "domain_id": "default", "password": "pw-" + name}}, token)[1]["user"]["id"]
    call("PUT", f"/v3/projects/{project_id}/users/{uid}/roles/{roles[role]}", token=token)
    return uid


out = {"projects": {}, "users": {}}
service = project("service")
out["projects"]["service"] = service
out["users"]["sluice"] = user("sluice", service, "service")
for pname in ("alpha", "beta"):
    pid = project(pname)
    out["projects"][pname] = pid
    for role in ("reader", "member", "admin", "_member_"):
        out["users"][f"{pname}-{role}"] = user(f"{pname}-{role}", pid, role)
print(json.dumps(out))
