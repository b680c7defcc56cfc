#!/usr/bin/env bash
# Prepares a throwaway Keystone in DIR (SQLite, Fernet tokens lasting EXPIRATION seconds):
# keystone.conf, db_sync, fernet_setup, credential_setup, bootstrap with admin password
# ADMIN_PASSWORD and the public endpoint URL. Used by tests/service/keystone.rs, which then
# serves DIR with uWSGI (`keystone.wsgi.api:application`).
# Usage: keystone_prepare.sh VENV DIR URL ADMIN_PASSWORD EXPIRATION
set -euo pipefail
venv=$1 dir=$2 url=$3 admin_password=$4 expiration=$5
mkdir -p "$dir/fernet-keys" "$dir/credential-keys"
cat >"$dir/keystone.conf" <<CONF
[DEFAULT]
log_file = $dir/keystone.log
[database]
connection = sqlite:///$dir/keystone.db
[fernet_tokens]
key_repository = $dir/fernet-keys
[fernet_receipts]
key_repository = $dir/fernet-keys
[credential]
key_repository = $dir/credential-keys
[token]
expiration = $expiration
[oslo_policy]
enforce_new_defaults = true
enforce_scope = false
CONF
manage=("$venv/bin/keystone-manage" --config-file "$dir/keystone.conf")
"${manage[@]}" db_sync
"${manage[@]}" fernet_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)"
"${manage[@]}" credential_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)"
"${manage[@]}" bootstrap --bootstrap-password "$admin_password" \
  --bootstrap-admin-url "$url/v3" --bootstrap-internal-url "$url/v3" \
  --bootstrap-public-url "$url/v3" --bootstrap-region-id RegionOne
