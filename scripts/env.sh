# Sourced by the scripts: where builds are cached.
#
# The target directory lives outside the clone so that a fresh `git clone` (CI, a new
# checkout) reuses earlier builds of the same machine instead of compiling everything again.
# Override with CARGO_TARGET_DIR.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice/target}"
