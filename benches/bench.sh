#!/usr/bin/env bash
# onramp benchmark (issue 5): builds a realistic image and times onramp against
# qemu-img side by side in one run, printing medians and onramp/anchor ratios.
#
# Image: a debootstrap'd Debian bookworm minbase with a kernel, in an 8 GiB MBR
# disk with one ext4 partition (cached in target/bench-cache). When debootstrap
# cannot run, a generated tree of similar size and file count is used instead.
#
# Usage: benches/bench.sh [RUNS]   (root for debootstrap; hyperfine, /usr/bin/time)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
cache=target/bench-cache
mkdir -p "$cache"
export PATH=$PATH:/usr/sbin:/sbin
for t in hyperfine qemu-img openssl mkfs.ext4 sfdisk python3; do
  command -v "$t" >/dev/null || { echo "missing $t (apt-get install hyperfine qemu-utils openssl e2fsprogs fdisk time debootstrap)"; exit 3; }
done
[ -x /usr/bin/time ] || { echo "missing /usr/bin/time (apt-get install time)"; exit 3; }

cargo build --release --quiet
ONRAMP=$PWD/target/release/onramp

root=$cache/rootfs
if [ ! -f "$cache/rootfs.done" ]; then
  rm -rf "$root"; mkdir -p "$root"
  if command -v debootstrap >/dev/null && [ "$(id -u)" = 0 ] && \
     debootstrap --variant=minbase --include=linux-image-cloud-amd64,systemd-sysv bookworm "$root" >"$cache/debootstrap.log" 2>&1; then
    echo "rootfs: debootstrap bookworm minbase + linux-image-cloud-amd64" | tee "$cache/rootfs.kind"
  else
    echo "rootfs: debootstrap unavailable; generated tree of similar size" | tee "$cache/rootfs.kind"
    rm -rf "$root"; mkdir -p "$root"
    python3 - "$root" <<'PY'
import os, random, sys
root = sys.argv[1]; rnd = random.Random(42)
words = [bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz_./= \n") for _ in range(rnd.randint(3, 12))) for _ in range(5000)]
total = 0; n = 0
while total < 450 << 20:
    d = os.path.join(root, "usr", "lib", f"pkg{n // 200:03d}")
    os.makedirs(d, exist_ok=True)
    size = min(int(rnd.paretovariate(1.2) * 4000), 8 << 20)
    if n % 3 == 0:
        data = rnd.randbytes(size // 2) + b"\0" * (size - size // 2)
    else:
        parts = []; got = 0
        while got < size:
            w = rnd.choice(words); parts.append(w); got += len(w)
        data = b"".join(parts)[:size]
    with open(os.path.join(d, f"f{n:06d}"), "wb") as f: f.write(data)
    total += size; n += 1
print(f"generated {n} files, {total >> 20} MiB")
PY
  fi
  touch "$cache/rootfs.done"
fi
cat "$cache/rootfs.kind" 2>/dev/null || true

disk=$cache/disk.raw
if [ ! -f "$disk" ]; then
  part=$cache/part.img
  rm -f "$part"
  mkfs.ext4 -q -F -d "$root" "$part" 8190M
  truncate -s 8G "$disk"
  printf 'label: dos\nstart=2048, type=83\n' | sfdisk --no-reread --no-tell-kernel -q "$disk" >/dev/null
  dd if="$part" of="$disk" bs=1M seek=1 conv=notrunc,sparse status=none
  rm -f "$part"
fi
[ -f "$cache/c.qcow2" ] || qemu-img convert -f raw -O qcow2 -c -o compat=1.1,compression_type=zlib "$disk" "$cache/c.qcow2"
[ -f "$cache/u.qcow2" ] || qemu-img convert -f raw -O qcow2 -o compat=1.1 "$disk" "$cache/u.qcow2"
[ -f "$cache/s.vmdk" ] || qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$disk" "$cache/s.vmdk"
echo "image: 8 GiB disk, $(du -m "$disk" | cut -f1) MiB allocated"
ls -l "$cache"/*.qcow2 "$cache"/*.vmdk

out=$cache/out.vhd
median() { python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['results']; print(' '.join(f\"{x['median']:.3f}\" for x in r))" "$1"; }
row() { # name onramp_cmd anchor_cmd
  local name=$1 a=$2 b=$3 j=$cache/h.json
  hyperfine --style none -r "$RUNS" -w 1 --export-json "$j" -p "rm -f $out" "$a" "$b" >/dev/null
  read -r x y < <(median "$j")
  printf '| %-40s | %8ss | %8ss | %5.2f |\n' "$name" "$x" "$y" "$(python3 -c "print(round($x/$y, 2))")"
}
QVPC="qemu-img convert -O vpc -o subformat=fixed,force_size=on"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(qemu-img --version | head -1); $(openssl version)"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| case | onramp | anchor | ratio |"
echo "|---|---|---|---|"
row "compressed qcow2 -> azure-vhd" "$ONRAMP -q convert $cache/c.qcow2 $out --to azure-vhd --force" "$QVPC $cache/c.qcow2 $out"
row "uncompressed qcow2 -> azure-vhd" "$ONRAMP -q convert $cache/u.qcow2 $out --to azure-vhd --force" "$QVPC $cache/u.qcow2 $out"
row "streamOptimized vmdk -> azure-vhd" "$ONRAMP -q convert $cache/s.vmdk $out --to azure-vhd --force" "$QVPC $cache/s.vmdk $out"
row "convert+sha256 vs qemu-img then openssl" "$ONRAMP -q convert $cache/u.qcow2 $out --to azure-vhd --digest sha256 --force" \
  "bash -c '$QVPC $cache/u.qcow2 $out && openssl dgst -sha256 $out'"
$QVPC "$cache/u.qcow2" "$cache/ref.vhd"
row "convert+sha256 vs openssl dgst alone" "$ONRAMP -q convert $cache/u.qcow2 $out --to azure-vhd --digest sha256 --force" \
  "openssl dgst -sha256 $cache/ref.vhd"
rss() { /usr/bin/time -v "$@" 2>&1 >/dev/null | awk -F: '/Maximum resident/ {gsub(/ /,"",$2); print $2}'; }
rm -f "$out"; r1=$(rss "$ONRAMP" -q convert "$cache/c.qcow2" "$out" --to azure-vhd --digest sha256 --force)
rm -f "$out"; r2=$(rss $QVPC "$cache/c.qcow2" "$out")
printf '| %-40s | %6s KiB | %6s KiB | %5.2f |\n' "peak RSS (compressed qcow2 -> vhd)" "$r1" "$r2" "$(python3 -c "print(round($r1/$r2, 2))")"
rm -f "$out"; r3=$(rss "$ONRAMP" -q convert "$cache/u.qcow2" "$out" --to azure-vhd --digest sha256 --force)
rm -f "$out"; r4=$(rss $QVPC "$cache/u.qcow2" "$out")
printf '| %-40s | %6s KiB | %6s KiB | %5.2f |\n' "peak RSS (uncompressed qcow2 -> vhd)" "$r3" "$r4" "$(python3 -c "print(round($r3/$r4, 2))")"
rm -f "$out"
echo
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
