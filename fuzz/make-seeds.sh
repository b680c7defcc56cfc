#!/usr/bin/env bash
# Regenerates the seed corpora in fuzz/corpus/<target>/ from real tools (qemu-img, genisoimage,
# mkudffs, sgdisk, sfdisk). See fuzz/corpus/SOURCES.md for what each seed is.
#
# Usage: fuzz/make-seeds.sh            (run from anywhere; rewrites fuzz/corpus/*/seed-*)
#
# The bytes are not bit-for-bit reproducible: VMDK descriptors carry a random CID, VHD/VHDX
# carry timestamps and UUIDs, ISO/UDF carry timestamps. Structure and sizes are reproducible.
# Only files named seed-* are replaced, so crash reproducers (crash-*, regress-*) added to a
# corpus by hand survive a regeneration.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
corpus="$here/corpus"
work="$(mktemp -d "${TMPDIR:-/tmp}/sluice-seeds.XXXXXX")"
trap 'rm -rf "$work"' EXIT

for tool in qemu-img genisoimage mkudffs sgdisk sfdisk; do
    command -v "$tool" >/dev/null || { echo "make-seeds: $tool is not installed" >&2; exit 1; }
done

targets=(inspect_any inspect_qcow2 inspect_vmdk inspect_vhd inspect_vhdx inspect_iso
         inspect_gpt inspect_raw buf_independent)
for t in "${targets[@]}"; do
    mkdir -p "$corpus/$t"
    rm -f "$corpus/$t"/seed-*
done

# A recognisable non-zero pattern (never all zeros, so converted images allocate clusters).
# (`yes` dies of SIGPIPE when `head` has enough, hence `|| true` under pipefail.)
pattern() { yes 'sluice fuzz seed pattern 0123456789abcdef' | head -c "$1" || true; }

# raw source: 1 MiB virtual, 8 KiB of pattern at 0 and at 640 KiB, zeros elsewhere.
src="$work/src.raw"
truncate -s 1M "$src"
pattern 8192 | dd of="$src" conv=notrunc status=none
pattern 8192 | dd of="$src" bs=64K seek=10 conv=notrunc status=none

q() { qemu-img "$@" >/dev/null; }

# --- qcow2 -------------------------------------------------------------------------------
q convert -O qcow2 -o compat=0.10,cluster_size=4096 "$src" "$work/v2.qcow2"
q convert -O qcow2 -o compat=1.1,cluster_size=4096 "$src" "$work/v3.qcow2"
q convert -O qcow2 -o compat=1.1,cluster_size=512 "$src" "$work/v3-c512.qcow2"
q create -f qcow2 "$work/v3-empty.qcow2" 64M     # default 64 KiB clusters, no data
cp "$work/v2.qcow2" "$corpus/inspect_qcow2/seed-qcow2-v2-c4k"
cp "$work/v3.qcow2" "$corpus/inspect_qcow2/seed-qcow2-v3-c4k"
cp "$work/v3-c512.qcow2" "$corpus/inspect_qcow2/seed-qcow2-v3-c512"
cp "$work/v3-empty.qcow2" "$corpus/inspect_qcow2/seed-qcow2-v3-c64k-empty"

# --- vmdk --------------------------------------------------------------------------------
q convert -O vmdk -o subformat=monolithicSparse "$src" "$work/sparse.vmdk"
q convert -O vmdk -o subformat=streamOptimized "$src" "$work/stream.vmdk"
cp "$work/sparse.vmdk" "$corpus/inspect_vmdk/seed-vmdk-monolithicsparse"
cp "$work/stream.vmdk" "$corpus/inspect_vmdk/seed-vmdk-streamoptimized"

# --- vhd (qemu's vpc) --------------------------------------------------------------------
q create -f vpc -o subformat=dynamic "$work/dynamic.vhd" 8M      # footer copy, header, BAT
q create -f vpc -o subformat=fixed,force_size=on "$work/fixed.vhd" 64K
cp "$work/dynamic.vhd" "$corpus/inspect_vhd/seed-vhd-dynamic-empty"
cp "$work/fixed.vhd" "$corpus/inspect_vhd/seed-vhd-fixed-64k"

# --- vhdx --------------------------------------------------------------------------------
# The smallest image qemu-img makes is 4 MiB+ (header region, 1 MiB log, metadata region at
# 2 MiB, BAT at 3 MiB). The seed keeps the first 256 KiB: file identifier, both headers and
# both region tables; the probe reports it truncated, but the header parsers are reached.
q create -f vhdx -o log_size=1M,block_size=1M "$work/empty.vhdx" 8M
head -c 262144 "$work/empty.vhdx" > "$corpus/inspect_vhdx/seed-vhdx-head256k"

# --- iso / udf ---------------------------------------------------------------------------
mkdir -p "$work/isodir"
echo "sluice fuzz seed" > "$work/isodir/hello.txt"
genisoimage -quiet -no-pad -V SLUICE -o "$work/seed.iso" "$work/isodir"
truncate -s 256K "$work/seed.udf"
mkudffs --media-type=hd --blocksize=512 --label=SLUICE "$work/seed.udf" >/dev/null
cp "$work/seed.iso" "$corpus/inspect_iso/seed-iso9660"
cp "$work/seed.udf" "$corpus/inspect_iso/seed-udf-256k"

# --- gpt / mbr / raw ---------------------------------------------------------------------
truncate -s 64K "$work/gpt.img"
sgdisk -q -o -n 1:34:0 -t 1:8300 "$work/gpt.img" >/dev/null
cp "$work/gpt.img" "$corpus/inspect_gpt/seed-gpt-64k"
truncate -s 64K "$work/mbr.img"
echo ',,83' | sfdisk -q "$work/mbr.img" >/dev/null
pattern 4096 > "$work/pattern.raw"
cp "$work/mbr.img" "$corpus/inspect_raw/seed-mbr-64k"
cp "$work/pattern.raw" "$corpus/inspect_raw/seed-raw-pattern-4k"

# --- inspect_any: one small image of each family -----------------------------------------
any="$corpus/inspect_any"
cp "$work/v3.qcow2" "$any/seed-qcow2-v3-c4k"
cp "$work/stream.vmdk" "$any/seed-vmdk-streamoptimized"
cp "$work/dynamic.vhd" "$any/seed-vhd-dynamic-empty"
head -c 262144 "$work/empty.vhdx" > "$any/seed-vhdx-head256k"
cp "$work/seed.iso" "$any/seed-iso9660"
cp "$work/gpt.img" "$any/seed-gpt-64k"
cp "$work/pattern.raw" "$any/seed-raw-pattern-4k"
pattern 4096 | gzip -n -c > "$any/seed-gzip"

# --- buf_independent: [count][count chunk sizes][image] (see formats/src/fuzzing.rs) -------
bi="$corpus/buf_independent"
prefix() { printf '\x03\x07\xff\x40'; }   # 3 chunk sizes, cycled: 7, 255, 64 bytes
{ prefix; cat "$work/v3-c512.qcow2"; } > "$bi/seed-qcow2-v3-c512"
{ prefix; cat "$work/stream.vmdk"; } > "$bi/seed-vmdk-streamoptimized"
{ prefix; cat "$work/dynamic.vhd"; } > "$bi/seed-vhd-dynamic-empty"
{ prefix; head -c 262144 "$work/empty.vhdx"; } > "$bi/seed-vhdx-head256k"
{ prefix; cat "$work/seed.iso"; } > "$bi/seed-iso9660"
{ prefix; cat "$work/gpt.img"; } > "$bi/seed-gpt-64k"

# --- converter targets: [control][image] (see formats/src/fuzzing.rs), the same images as the
# inspect_<format> targets after a control byte 0x21: 1023-byte chunks, and tight limits of
# 512 spill bytes and 2 tracked entries. roundtrip_qcow2 takes a control byte too, but any
# bytes are a raw image: it gets the inspect_raw seeds as they are.
for pair in convert_qcow2:inspect_qcow2 convert_vmdk:inspect_vmdk convert_vhd:inspect_vhd \
            convert_vhdx:inspect_vhdx; do
    mkdir -p "$corpus/${pair%%:*}"
    for f in "$corpus/${pair#*:}"/seed-*; do
        { printf '\x21'; cat "$f"; } > "$corpus/${pair%%:*}/${f##*/}"
    done
done
mkdir -p "$corpus/roundtrip_qcow2"
cp "$corpus/inspect_raw"/* "$corpus/roundtrip_qcow2/"

du -sh "$corpus"
