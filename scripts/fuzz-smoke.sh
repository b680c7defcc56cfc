#!/usr/bin/env bash
# Builds every cargo-fuzz target and runs each one briefly from its checked-in seed corpus;
# exits non-zero if any target crashes (a panic, a failed invariant, a libFuzzer timeout or
# out-of-memory). CI calls it from scripts/test. See fuzz/README.md.
#
# Works on the stable toolchain: targets are built without a sanitizer (`-s none`), which
# needs no nightly features; Rust's own bounds and overflow checks still fire.
#
# Environment:
#   SLUICE_FUZZ_SECONDS     seconds per target (default 10)
#   SLUICE_FUZZ_SANITIZER   none (default) or address (ASan on stable via RUSTC_BOOTSTRAP=1)
#   SLUICE_FUZZ_TARGETS     space-separated subset of targets (default: all)
#   SLUICE_FUZZ_TARGET_DIR  build directory (default: $CARGO_TARGET_DIR/fuzz, or .../fuzz-asan
#                           with ASan; outside the clone, CARGO_TARGET_DIR defaulting as in
#                           scripts/env.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

seconds="${SLUICE_FUZZ_SECONDS:-10}"
sanitizer="${SLUICE_FUZZ_SANITIZER:-none}"
# One build directory per sanitizer: switching sanitizers in one directory rebuilds everything.
case "$sanitizer" in
    address) default_dir="$CARGO_TARGET_DIR/fuzz-asan" ;;
    *) default_dir="$CARGO_TARGET_DIR/fuzz" ;;
esac
target_dir="${SLUICE_FUZZ_TARGET_DIR:-$default_dir}"
all_targets=(inspect_any inspect_qcow2 inspect_vmdk inspect_vhd inspect_vhdx inspect_iso
             inspect_gpt inspect_raw buf_independent convert_qcow2 convert_vmdk convert_vhd
             convert_vhdx roundtrip_qcow2 vmdk_footer unwrap ova api_task_create api_image_patch
             api_image_create)
read -r -a targets <<< "${SLUICE_FUZZ_TARGETS:-${all_targets[*]}}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: cargo-fuzz is missing (scripts/setup --test installs it)" >&2
    exit 2
fi
case "$sanitizer" in
    none) ;;
    address) export RUSTC_BOOTSTRAP=1 ;;   # -Zsanitizer on the stable compiler
    *) echo "fuzz-smoke: SLUICE_FUZZ_SANITIZER must be none or address" >&2; exit 2 ;;
esac
fuzz=(cargo fuzz)
build_flags=(-s "$sanitizer" --target-dir "$target_dir")

echo "fuzz-smoke: building the fuzz targets (sanitizer $sanitizer) in $target_dir" >&2
if ! "${fuzz[@]}" build "${build_flags[@]}"; then
    echo "fuzz-smoke: building the fuzz targets failed" >&2
    exit 1
fi
# cargo-fuzz's layout: <target-dir>/<host triple>/release/<target>. The binaries are run
# directly (what `cargo fuzz run` does after building) so every target runs the same build.
triple="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="$target_dir/$triple/release"

scratch="$(mktemp -d "${TMPDIR:-/tmp}/sluice-fuzz-smoke.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
failed=()
for t in "${targets[@]}"; do
    seeds="fuzz/corpus/$t"
    [[ -d "$seeds" ]] || { echo "fuzz-smoke: no seed corpus $seeds" >&2; exit 2; }
    # New inputs go to a scratch directory (first corpus argument), never into the
    # checked-in seeds; crash artifacts go to fuzz/artifacts/<target>/ (git-ignored).
    mkdir -p "$scratch/$t"
    log="$scratch/$t.log"
    mkdir -p "fuzz/artifacts/$t"
    if "$bin_dir/$t" -artifact_prefix="fuzz/artifacts/$t/" -max_total_time="$seconds" \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "$scratch/$t" "$seeds" \
        >"$log" 2>&1; then
        runs="$(grep -Eo '^Done [0-9]+ runs in [0-9]+ second' "$log" | tail -1 || true)"
        echo "fuzz-smoke: $t ok (${runs:-no summary})" >&2
    else
        echo "fuzz-smoke: $t FAILED; last lines of its log:" >&2
        grep -v '^"' "$log" | tail -40 >&2
        failed+=("$t")
    fi
done

if ((${#failed[@]})); then
    echo "fuzz-smoke: crashes in: ${failed[*]} (reproducers under fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz-smoke: all ${#targets[@]} targets ran ${seconds}s without a crash" >&2
