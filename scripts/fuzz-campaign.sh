#!/usr/bin/env bash
# A fuzzing campaign: runs every cargo-fuzz target with AddressSanitizer for a given time,
# keeps going after a crash (each crash input is kept, the target restarts with the time
# left), merges and minimises what was found back into fuzz/corpus/<target>/, and prints
# executions, coverage and crashes per target. See fuzz/README.md ("Campaigns").
#
# The working corpora, logs and crash inputs live outside the clone, in
# $SLUICE_FUZZ_CAMPAIGN_DIR (default ~/.cache/sluice/fuzz-campaign); the results table is
# checked in (fuzz/campaign-results.tsv: a cache is lost with its machine, the figures must
# not be), so a campaign can be split over several runs and machines: --resume skips targets
# that already have the asked minutes.
#
# Usage: scripts/fuzz-campaign.sh [--minutes N] [--targets "a b"] [--resume] [--no-merge]
#                                 [--sanitizer address|none]
#   --minutes N    minutes per target (default 30)
#   --sanitizer S  address (default; its own build in $CARGO_TARGET_DIR/fuzz-asan) or none
#                  (the smoke run's build in $CARGO_TARGET_DIR/fuzz, 3-10x the executions)
#   --targets "…"  subset of targets (default: every target in fuzz/Cargo.toml)
#   --resume       skip targets whose recorded time with this sanitizer is already >= N minutes
#   --no-merge     leave fuzz/corpus/ untouched
# Environment: SLUICE_FUZZ_CORPUS_BUDGET_KIB  what one target adds to fuzz/corpus (default 512).
#   SLUICE_FUZZ_TIMEOUT  seconds one input may take (default 60). libFuzzer counts
#   wall time, so a campaign run at low priority on a busy machine needs room; every timeout
#   input is re-run at the end and its time printed, to tell a slow input from a starved one.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

minutes=30
targets_arg=""
resume=0
merge=1
sanitizer=address
while (($#)); do
    case "$1" in
        --minutes) minutes="$2"; shift 2 ;;
        --targets) targets_arg="$2"; shift 2 ;;
        --resume) resume=1; shift ;;
        --no-merge) merge=0; shift ;;
        --sanitizer) sanitizer="$2"; shift 2 ;;
        *) echo "fuzz-campaign: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
    esac
done
case "$sanitizer" in
    address) default_target_dir="$CARGO_TARGET_DIR/fuzz-asan" ;;
    none) default_target_dir="$CARGO_TARGET_DIR/fuzz" ;;
    *) echo "fuzz-campaign: --sanitizer must be address or none" >&2; exit 2 ;;
esac
[[ "$minutes" =~ ^[0-9]+$ ]] && ((minutes > 0)) || {
    echo "fuzz-campaign: --minutes must be a positive integer" >&2; exit 2; }

# What one target's campaign adds to the repository (smallest inputs first): the corpus
# stays small enough to check in; the whole one stays in the campaign directory.
budget_bytes=$((${SLUICE_FUZZ_CORPUS_BUDGET_KIB:-512} * 1024))
# Restarts after crashes per target: a target that crashes this often needs a fix first.
max_restarts=20
timeout="${SLUICE_FUZZ_TIMEOUT:-60}"

campaign_dir="${SLUICE_FUZZ_CAMPAIGN_DIR:-$HOME/.cache/sluice/fuzz-campaign}"
target_dir="${SLUICE_FUZZ_TARGET_DIR:-$default_target_dir}"
results=fuzz/campaign-results.tsv
mkdir -p "$campaign_dir"
[[ -f "$results" ]] || printf 'date\tcommit\ttarget\tsanitizer\tseconds\texecutions\tcov\tft\tcrashes\tpeak_rss_mb\n' >"$results"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-campaign: cargo-fuzz is missing (scripts/setup --test installs it)" >&2
    exit 2
fi
if [[ -n "$targets_arg" ]]; then
    read -r -a targets <<< "$targets_arg"
else
    mapfile -t targets < <(cargo fuzz list)
fi

if [[ "$sanitizer" == address ]]; then
    export RUSTC_BOOTSTRAP=1   # -Zsanitizer=address on the stable compiler
fi
echo "fuzz-campaign: building ${#targets[@]} targets (sanitizer: $sanitizer) in $target_dir" >&2
cargo fuzz build -s "$sanitizer" --target-dir "$target_dir"
triple="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="$target_dir/$triple/release"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"

# Seconds already recorded for a target with this run's sanitizer (an ASan campaign does not
# count the runs without one, and the other way round).
recorded_seconds() {
    awk -F'\t' -v t="$1" -v san="$sanitizer" \
        'NR > 1 && $3 == t && $4 == san { s += $5 } END { print s + 0 }' "$results"
}

# Folds the campaign corpus of one target into fuzz/corpus/<target>/ as cmin-<sha1> files:
# a libFuzzer merge (keeps only inputs that add coverage) over the checked-in seeds first,
# so nothing that a seed or regression input already covers is added; then the smallest of
# those inputs up to the per-target budget (the whole merged corpus stays in the campaign
# directory, where the next campaign starts from it).
merge_corpus() {
    local t="$1" bin="$2" min="$3"
    rm -rf "$min" && mkdir -p "$min"
    "$bin" -merge=1 -timeout="$timeout" -rss_limit_mb=2048 "$min" "fuzz/corpus/$t" \
        "$campaign_dir/corpus/$t" >"$campaign_dir/logs/$t.merge.log" 2>&1
    local known
    known="$(find "fuzz/corpus/$t" -type f ! -name 'cmin-*' -exec sha1sum {} + | cut -d' ' -f1)"
    find "fuzz/corpus/$t" -name 'cmin-*' -delete
    local added=0 total=0 size f sum
    while read -r size f; do
        sum="$(sha1sum "$f" | cut -d' ' -f1)"
        grep -qx "$sum" <<< "$known" && continue
        ((total + size <= budget_bytes)) || break
        cp "$f" "fuzz/corpus/$t/cmin-$sum"
        total=$((total + size))
        added=$((added + 1))
    done < <(find "$min" -type f -printf '%s %p\n' | sort -n)
    echo "$added"
}

summary=()
for t in "${targets[@]}"; do
    want=$((minutes * 60))
    done_s="$(recorded_seconds "$t")"
    if ((resume)) && ((done_s >= want)); then
        echo "fuzz-campaign: $t already has ${done_s}s, skipped (--resume)" >&2
        continue
    fi
    bin="$bin_dir/$t"
    mkdir -p "$campaign_dir/corpus/$t" "$campaign_dir/artifacts/$t" "$campaign_dir/logs"
    echo "fuzz-campaign: $t for ${minutes} min" >&2
    start=$(date +%s)
    execs=0 crashes=0 cov=0 ft=0 rss=0 restarts=0
    while :; do
        left=$((want - ($(date +%s) - start)))
        ((left > 0)) || break
        log="$campaign_dir/logs/$t.$restarts.log"
        # New inputs go to the campaign corpus (first directory); seeds are read only.
        if "$bin" -artifact_prefix="$campaign_dir/artifacts/$t/" -max_total_time="$left" \
            -timeout="$timeout" -rss_limit_mb=2048 -print_final_stats=1 \
            "$campaign_dir/corpus/$t" "fuzz/corpus/$t" >"$log" 2>&1; then
            status=ok
        else
            status=crash
        fi
        n="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
        execs=$((execs + ${n:-0}))
        r="$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)"
        ((${r:-0} > rss)) && rss="$r"
        last="$(grep -Eo 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1 || true)"
        if [[ -n "$last" ]]; then
            read -r _ c _ f <<< "$last"
            ((c > cov)) && cov="$c"
            ((f > ft)) && ft="$f"
        fi
        [[ "$status" == ok ]] && break
        crashes=$((crashes + 1))
        echo "fuzz-campaign: $t crashed; input kept under $campaign_dir/artifacts/$t/, log $log" >&2
        restarts=$((restarts + 1))
        ((restarts <= max_restarts)) || { echo "fuzz-campaign: $t: too many crashes, next target" >&2; break; }
    done
    secs=$(($(date +%s) - start))
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%F)" "$commit" "$t" "$sanitizer" "$secs" \
        "$execs" "$cov" "$ft" "$crashes" "$rss" >>"$results"
    added="-"
    if ((merge)); then
        added="$(merge_corpus "$t" "$bin" "$campaign_dir/min/$t")"
    fi
    summary+=("$(printf '%-16s %6s %12s %8s %7s %7s %7s %8s' "$t" "$secs" "$execs" \
        "$((execs / (secs > 0 ? secs : 1)))" "$cov" "$ft" "$crashes" "$added")")
done

printf '%-16s %6s %12s %8s %7s %7s %7s %8s\n' target seconds executions exec/s cov ft \
    crashes corpus+
printf '%s\n' "${summary[@]}"
# A timeout input that runs fast now was starved of CPU, not slow: say which.
for f in "$campaign_dir"/artifacts/*/timeout-*; do
    [[ -f "$f" ]] || continue
    t="$(basename "$(dirname "$f")")"
    s0=$(date +%s%N)
    "$bin_dir/$t" -timeout="$timeout" "$f" >/dev/null 2>&1 || true
    echo "fuzz-campaign: $f re-runs in $((($(date +%s%N) - s0) / 1000000)) ms" >&2
done
echo "fuzz-campaign: every run is recorded in $results; crash inputs in $campaign_dir/artifacts/" >&2
