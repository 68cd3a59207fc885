#!/usr/bin/env bash
# build-bench-disk.sh — build (once, cached) the data disk for `npm run bench`.
#
# Output: ${FERRY_FIXTURES:-/var/cache/ferry/fixtures}/benchdisk-<sha256(this file)[0:12]>/disk.raw
#   4 GiB sparse raw, GPT:
#     p1  ext4  2600 MiB  label bench-ext4
#     p2  xfs   the rest  label bench-xfs
#   About 2.1 GiB of files are written (many small text files, medium text and
#   random files, large random files, sparse files), flushed to the image, and
#   then about a quarter of them is deleted: the freed blocks still hold the old
#   data, which a block copier (qemu-img) copies and a file copier (Ferry) does not.
#
# stdout: one line, the image path. Everything else goes to stderr.
# Runs as root, reads no stdin. A second run finds the `done` stamp and returns at
# once; the result directory appears by an atomic rename. Every loop device and
# mount made here is released on any exit; a crashed build's temp dir is cleaned
# by the next run.
set -euo pipefail
umask 022
export LC_ALL=C TZ=UTC
exec </dev/null 3>&1 1>&2 # fd 3 = the real stdout (the result only)

T0=$SECONDS
log() { printf '[build-bench-disk %3ss] %s\n' "$((SECONDS - T0))" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (loop devices, mounts)"
for tool in sfdisk partx losetup mkfs.ext4 mkfs.xfs mount umount mountpoint findmnt truncate split mawk flock; do
  command -v "$tool" >/dev/null || die "$tool is missing: run scripts/setup.sh"
done

SELF=$(readlink -f "${BASH_SOURCE[0]}")
HASH=$(sha256sum "$SELF" | cut -c1-12)
ROOT=$(realpath -m "${FERRY_FIXTURES:-/var/cache/ferry/fixtures}")
OUT="$ROOT/benchdisk-$HASH"

if [ -f "$OUT/done" ] && [ -f "$OUT/disk.raw" ]; then
  echo "$OUT/disk.raw" >&3
  exit 0
fi

mkdir -p "$ROOT"
exec 9>"$ROOT/.benchdisk-$HASH.lock"
flock -w 1800 9 || die "another build holds $ROOT/.benchdisk-$HASH.lock"
if [ -f "$OUT/done" ] && [ -f "$OUT/disk.raw" ]; then
  echo "$OUT/disk.raw" >&3
  exit 0
fi

# ---------------------------------------------------------------- resources and cleanup
release_under() { # $1 = dir: unmount everything below it, detach loops of its images
  local dir=$1 m f l
  while read -r m; do
    [ -n "$m" ] && { umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; }
  done < <(findmnt -rn -o TARGET | awk -v p="$dir/" 'index($0 "/", p) == 1' | sort -r)
  for f in "$dir"/*.raw; do
    [ -e "$f" ] || continue
    losetup -n -O NAME -j "$f" 2>/dev/null | while read -r l; do losetup -d "$l" 2>/dev/null || true; done
  done
}

# We hold the lock: every temp dir of this hash is left over from a crashed build.
for stale in "$ROOT"/.benchdisk-"$HASH".tmp.*; do
  [ -d "$stale" ] || continue
  log "removing stale build dir $stale"
  release_under "$stale"
  rm -rf --one-file-system "$stale"
done
[ -d "$OUT" ] && rm -rf --one-file-system "$OUT" # a result without its stamp is no result

TMP=$(mktemp -d "$ROOT/.benchdisk-$HASH.tmp.XXXXXX")
chmod 0755 "$TMP"
IMG=$TMP/disk.raw
LOOPS=()
FINISHED=0
cleanup() {
  local rc=$? l
  set +e
  trap - EXIT INT TERM HUP
  release_under "$TMP"
  for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null; done
  if [ "$FINISHED" -ne 1 ]; then
    rm -rf --one-file-system "$TMP"
    log "FAILED (exit $rc); mounts, loop devices and $TMP released"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

attach() { # $1 = partition number -> sets DEV (one loop per partition: no partition nodes here)
  local start sectors
  read -r start sectors < <(partx -g -o START,SECTORS -n "$1" "$IMG")
  DEV=$(losetup --find --show --offset $((start * 512)) --sizelimit $((sectors * 512)) "$IMG")
  LOOPS+=("$DEV")
}

# ---------------------------------------------------------------- disk, partitions, file systems
log "creating a 4 GiB sparse image with GPT"
truncate -s 4G "$IMG"
sfdisk --quiet --no-reread --no-tell-kernel "$IMG" <<'EOF'
label: gpt
label-id: 6A3B0C2D-4E5F-4061-8273-94A5B6C7D8E9
start=2048, size=5324800, type=0FC63DAF-8483-4772-8E79-3D69D8E47DE4, name="bench-ext4"
type=0FC63DAF-8483-4772-8E79-3D69D8E47DE4, name="bench-xfs"
EOF

attach 1; EXT=$DEV
attach 2; XFS=$DEV
mkfs.ext4 -q -F -L bench-ext4 -U 3e1f5a7c-0b2d-4c6e-8f91-a2b3c4d5e6f7 -E nodiscard "$EXT"
mkfs.xfs -q -f -K -L bench-xfs -m uuid=7c2e9a41-5d3b-4f60-8e17-b4c5d6e7f809 "$XFS"
mkdir -p "$TMP/ext" "$TMP/xfs"
mount "$EXT" "$TMP/ext"
mount "$XFS" "$TMP/xfs"

# ---------------------------------------------------------------- content
# A 32 MiB text corpus (words, line numbers): small and medium text files are slices of it.
CORPUS=$TMP/corpus.txt
mawk -v n=620000 'BEGIN {
  srand(42)
  nw = split("the of and to in is that for it as was with be by on not he this are or his from at which but have an they you were her she there had been one all we their has would when if so no more out can who about some them other into only its time will like than then could also two first any new these may such after over most config value error warning info debug request response server client disk file block", w, " ")
  for (i = 0; i < n; i++) { l = ""; m = 4 + int(rand() * 12); for (j = 0; j < m; j++) l = l w[1 + int(rand() * nw)] " "; print i ": " l }
}' | head -c 32M >"$CORPUS"

slice() { # $1 = MiB offset in the corpus (mod 24), $2 = MiB count (<= 8)
  dd if="$CORPUS" bs=1M skip=$(($1 % 24)) count="$2" status=none
}
small() { # $1 = dir, $2 = number of subdirs, $3 = MiB per subdir, $4 = file size limit (split -C)
  local d i
  for ((i = 0; i < $2; i++)); do
    d=$1/d$(printf %02d "$i")
    mkdir -p "$d"
    slice "$i" "$3" | split -C "$4" -a 4 -d --additional-suffix=.txt - "$d/f"
  done
}
random() { # $1 = file, $2 = MiB
  dd if=/dev/urandom of="$1" bs=1M count="$2" status=none
}
sparse() { # $1 = file, $2 = apparent MiB; 4 random 1 MiB islands
  local k
  truncate -s "$2M" "$1"
  for k in 0 1 2 3; do
    dd if=/dev/urandom of="$1" bs=1M count=1 seek=$((k * $2 / 4 + 3)) conv=notrunc status=none
  done
}
fill() { # $1 = mountpoint, $2 = scale (ext4 4, xfs 1)
  local m=$1 s=$2 i
  log "writing files into $m"
  small "$m/small/1k" $((4 * s)) 2 1k     # ~2k files per subdir
  small "$m/small/4k" $((4 * s)) 4 4k
  small "$m/small/16k" $((4 * s)) 8 16k
  small "$m/small/64k" $((4 * s)) 8 64k
  mkdir -p "$m/medium" "$m/large" "$m/sparse"
  for ((i = 0; i < 16 * s; i++)); do
    slice "$i" 4 >"$m/medium/text$(printf %03d "$i").log"
    random "$m/medium/rand$(printf %03d "$i").bin" 4
  done
  for ((i = 0; i < (s > 1 ? 3 : 1); i++)); do random "$m/large/big$i.bin" 256; done
  for ((i = 0; i < s; i++)); do sparse "$m/sparse/sparse$i.img" 1024; done
  ln -s ../large/big0.bin "$m/medium/link-to-big0"
}
fill "$TMP/ext" 4
fill "$TMP/xfs" 1
# Flush first: a file deleted before writeback never reaches the image (delayed allocation).
sync
log "written: $(df -h --output=used "$TMP/ext" | tail -1) ext4, $(df -h --output=used "$TMP/xfs" | tail -1) xfs; deleting about a quarter"

unfill() { # $1 = mountpoint: a quarter of each class, spread over the disk
  local m=$1 d i
  for d in "$m"/small/*/; do
    for ((i = 0; i < 16; i += 4)); do rm -rf "$d/d$(printf %02d "$i")"; done # d00 d04 d08 d12: 1 in 4
  done
  rm -f "$m"/medium/rand*[0246].bin "$m"/medium/text*[37].log
}
unfill "$TMP/ext"
unfill "$TMP/xfs"
rm -f "$TMP/ext/large/big1.bin"
sync
log "kept: $(df -h --output=used "$TMP/ext" | tail -1) ext4, $(df -h --output=used "$TMP/xfs" | tail -1) xfs"

umount "$TMP/ext"
umount "$TMP/xfs"
for l in "${LOOPS[@]}"; do losetup -d "$l"; done
LOOPS=()
rm -f "$CORPUS"
rmdir "$TMP/ext" "$TMP/xfs"

chmod 0444 "$IMG"
date -u +%Y-%m-%dT%H:%M:%SZ >"$TMP/done"
sync -f "$IMG"
mv -T "$TMP" "$OUT"
FINISHED=1
log "built $OUT/disk.raw ($(du -h "$OUT/disk.raw" | cut -f1) allocated of 4 GiB)"
echo "$OUT/disk.raw" >&3
