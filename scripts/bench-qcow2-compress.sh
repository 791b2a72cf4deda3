#!/bin/sh
# Compressed qcow2 output: onramp vs qemu-img on the same ext4 image, same run.
# Usage: scripts/bench-qcow2-compress.sh [tree-dir] [runs]
# Builds a 1 GiB ext4 image from tree-dir (default /usr/bin) with mkfs.ext4 -d,
# then times `onramp convert --to qcow2 --compress deflate|zstd` against
# `qemu-img convert -c -O qcow2 [-o compression_type=zstd]`, interleaved,
# printing wall, user and sys seconds, peak RSS and output sizes.
set -eu
tree=${1:-/usr/bin}
runs=${2:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$here/Cargo.toml"
bin="$here/target/release/onramp"
work=$(mktemp -d "${TMPDIR:-/var/tmp}/onramp-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkfs.ext4 -q -F -d "$tree" "$work/data.raw" 1G
echo "data: $(du -h "$work/data.raw" | cut -f1) allocated in a 1 GiB image; load: $(cut -d' ' -f1-3 /proc/loadavg)"
cat "$work/data.raw" > /dev/null
for i in $(seq "$runs"); do
  /usr/bin/time -f "onramp-deflate %e wall %U user %S sys %M KiB" "$bin" -q convert "$work/data.raw" "$work/o.qcow2" --to qcow2 --compress deflate --force
  /usr/bin/time -f "qemu-deflate   %e wall %U user %S sys %M KiB" qemu-img convert -c -O qcow2 "$work/data.raw" "$work/q.qcow2"
  /usr/bin/time -f "onramp-zstd    %e wall %U user %S sys %M KiB" "$bin" -q convert "$work/data.raw" "$work/oz.qcow2" --to qcow2 --compress zstd --force
  /usr/bin/time -f "qemu-zstd      %e wall %U user %S sys %M KiB" qemu-img convert -c -O qcow2 -o compression_type=zstd "$work/data.raw" "$work/qz.qcow2"
done
ls -l "$work"/*.qcow2
