#!/usr/bin/env bash
# build-debian-guest.sh — build (once, cached) a small, real, BIOS-bootable
# Debian 12 (bookworm) guest disk image for Ferry's end-to-end tests.
#
# Contract
#   stdout: exactly one line, the absolute path of the raw image
#           ${FERRY_FIXTURES:-/var/cache/ferry/fixtures}/debian12-<hash>/disk.raw
#           where <hash> = first 12 hex digits of sha256(this script), so any
#           edit of this file builds a new image next to the old ones.
#   stderr: progress and the build time.
#   exit 0 with the cached path at once when disk.raw and the `done` stamp exist.
#   Runs as root, reads no stdin, needs network access to the Debian mirror
#   configured for apt on this host (the mirror is read from apt's sources).
#
# Image layout (MBR / dos label, 2 GiB sparse):
#   sector 0          GRUB boot.img (first 440 bytes) + disk id + partition table
#   sectors 1..2047   GRUB core.img (the "MBR gap"), prefix (hd0,msdos1)/boot/grub
#   p1  ext4  label ferry-root, bootable, starts at 1 MiB   -> /
#   p2  extended, rest of the disk
#   p5  logical swap, label ferry-swap, fixed UUID
#
# The guest runs ferry-boot-marker.service once it reaches multi-user: it writes
#   FERRY-BOOT-OK root=<uuid of the fs at /> host=<hostname> net=<IF:ADDR/PREFIX or none>
# to /dev/ttyS0 and powers off. Add `ferry.stay` to the kernel command line to
# keep the guest running instead (the root account is locked; use init=/bin/sh).
set -euo pipefail
exec </dev/null
# Everything goes to stderr; fd 3 is the real stdout, used only for the result.
exec 3>&1 1>&2

START_TS=$(date +%s)
log() { printf '[build-debian-guest %4ss] %s\n' "$(( $(date +%s) - START_TS ))" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# --- fixed identities (tests may rely on them) -------------------------------
DISK_ID=0x46455259                               # "FERY"
ROOT_UUID=1b7c4f2a-9d3e-4e51-8a60-f0e1d2c3b4a5
SWAP_UUID=5a0c9e71-3b2d-4f48-9e16-7c8d9e0f1a2b
MACHINE_ID=0f3e2d1c4b5a69788796a5b4c3d2e1f0      # fixed: no "first boot" logic
HOSTNAME_=ferry-guest
DISK_SIZE_MIB=2048
SWAP_SIZE_MIB=255                                # logical partition size
SUITE=bookworm

SCRIPT_PATH=$(readlink -f "${BASH_SOURCE[0]}")
HASH=$(sha256sum "$SCRIPT_PATH" | cut -c1-12)
FIXTURES=$(realpath -m "${FERRY_FIXTURES:-/var/cache/ferry/fixtures}")
OUT="$FIXTURES/debian12-$HASH"

if [[ -f $OUT/disk.raw && -f $OUT/done ]]; then
  echo "$OUT/disk.raw" >&3
  exit 0
fi

[[ $(id -u) -eq 0 ]] || die "run as root (needs loop devices, mount, chroot)"
for tool in debootstrap sfdisk partx losetup mkfs.ext4 mkswap grub-mkimage chroot flock dd; do
  command -v "$tool" >/dev/null || die "missing tool: $tool (run scripts/setup.sh)"
done
GRUB_DIR=/usr/lib/grub/i386-pc
[[ -f $GRUB_DIR/boot.img ]] || die "missing $GRUB_DIR/boot.img (install grub-pc-bin)"

mkdir -p "$FIXTURES"
# One builder per hash at a time; a second caller waits, then finds the result.
exec 9>"$FIXTURES/.debian12-$HASH.lock"
flock 9
if [[ -f $OUT/disk.raw && -f $OUT/done ]]; then
  echo "$OUT/disk.raw" >&3
  exit 0
fi

# --- clean up what a crashed build (kill -9, power loss) may have left ---------
# We hold the lock, so every temp dir of this hash is stale.
release_under() { # $1 = directory: unmount everything below it, detach its loops
  local dir=$1 m f
  while read -r m; do
    [[ -n $m ]] && { umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; }
  done < <(findmnt -rn -o TARGET | awk -v p="$dir/" 'index($0 "/", p) == 1' | sort -r)
  for f in "$dir"/*.raw; do
    [[ -e $f ]] || continue
    losetup -j "$f" -n -O NAME 2>/dev/null | while read -r l; do losetup -d "$l" 2>/dev/null || true; done
  done
}
for stale in "$FIXTURES"/.debian12-"$HASH".tmp.*; do
  [[ -d $stale ]] || continue
  log "removing stale build dir $stale"
  release_under "$stale"
  rm -rf --one-file-system "$stale"
done
# A result dir without the stamp is not a result.
[[ -d $OUT ]] && rm -rf --one-file-system "$OUT"

# --- mirror: the main bookworm entry of this host's apt configuration ----------
find_mirror() {
  local f uri
  if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
    # deb822: the first stanza whose Suites contains exactly "bookworm"
    uri=$(awk '
      BEGIN { RS = ""; FS = "\n" }
      {
        uris = ""; ok = 0
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/)   { sub(/^URIs:[ \t]*/, "", $i); split($i, u, /[ \t]+/); uris = u[1] }
          if ($i ~ /^Suites:/) { n = split($i, s, /[ \t]+/); for (j = 2; j <= n; j++) if (s[j] == "bookworm") ok = 1 }
        }
        if (ok && uris != "") { print uris; exit }
      }' /etc/apt/sources.list.d/debian.sources)
    [[ -n $uri ]] && { echo "$uri"; return; }
  fi
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] || continue
    # deb [options] URI bookworm main ...
    uri=$(awk '$1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                              if ($(i+1) == "bookworm") { print $i; exit } }' "$f")
    [[ -n $uri ]] && { echo "$uri"; return; }
  done
  return 1
}
MIRROR=$(find_mirror) || die "no bookworm entry in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"
log "mirror: $MIRROR"

# --- temp build dir on the same file system as $OUT (atomic rename) ----------
TMP=$(mktemp -d "$FIXTURES/.debian12-$HASH.tmp.XXXXXX")
chmod 0755 "$TMP"   # mktemp makes it 0700; the result is read by other users (libvirt-qemu)
IMG=$TMP/disk.raw
MNT=$TMP/root
LOOPS=()      # every loop device we attach, detached by cleanup
MOUNTS=()     # every mount we make, unmounted in reverse by cleanup
FINISHED=0

cleanup() {
  local rc=$? i
  set +e
  # Unmount everything below the temp dir, deepest first: our own mounts and
  # the proc/sys mounts debootstrap makes inside the chroot if it was killed.
  [[ -d $TMP ]] && release_under "$TMP"
  for (( i=${#MOUNTS[@]}-1; i>=0; i-- )); do
    mountpoint -q "${MOUNTS[i]}" && { umount "${MOUNTS[i]}" || umount -l "${MOUNTS[i]}"; }
  done
  for i in "${LOOPS[@]}"; do losetup -d "$i" 2>/dev/null; done
  if [[ $FINISHED -ne 1 && -d $TMP ]]; then
    rm -rf --one-file-system "$TMP"
    log "build failed (exit $rc); temp dir removed"
  fi
  exit "$rc"
}
# Note: bash runs these traps only after the running foreground command ends;
# signal the whole process group (Ctrl-C, kill -- -PGID) to stop at once.
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

do_mount() { mount "$@"; MOUNTS+=("${!#}"); }
# Not called as $(attach ...): a subshell would lose the LOOPS entry, and the
# trap would leave the device attached. The result is in $LOOP_DEV instead.
attach() { # $1 = byte offset, $2 = byte size -> sets LOOP_DEV
  LOOP_DEV=$(losetup --find --show --offset "$1" --sizelimit "$2" "$IMG")
  LOOPS+=("$LOOP_DEV")
}

# --- disk and partitions ------------------------------------------------------
log "creating ${DISK_SIZE_MIB} MiB sparse image"
truncate -s "${DISK_SIZE_MIB}M" "$IMG"

SECTORS_PER_MIB=2048
ROOT_START=$SECTORS_PER_MIB
EXT_START=$(( (DISK_SIZE_MIB - SWAP_SIZE_MIB - 1) * SECTORS_PER_MIB ))
ROOT_SIZE=$(( EXT_START - ROOT_START ))
# sfdisk: partitions listed after an extended one become logical (p5, ...);
# it leaves 1 MiB for the EBR in front of the logical partition.
sfdisk --quiet --no-reread --no-tell-kernel "$IMG" <<EOF
label: dos
label-id: $DISK_ID
unit: sectors

start=$ROOT_START, size=$ROOT_SIZE, type=83, bootable
start=$EXT_START, type=5
type=82
EOF
sfdisk -d "$IMG" >&2

# partx reads the table from the file itself: no partition nodes needed.
part_bytes() { # $1 = partition number -> "offset size" in bytes
  partx -g -o START,SECTORS -n "$1" "$IMG" | awk '{ print $1 * 512, $2 * 512 }'
}
read -r ROOT_OFF ROOT_LEN < <(part_bytes 1)
read -r SWAP_OFF SWAP_LEN < <(part_bytes 5)
[[ -n ${SWAP_OFF:-} ]] || die "logical partition 5 was not created"

attach "$ROOT_OFF" "$ROOT_LEN"; ROOT_DEV=$LOOP_DEV
attach "$SWAP_OFF" "$SWAP_LEN"; SWAP_DEV=$LOOP_DEV

# Pin the ext4 feature list instead of taking this host's mke2fs defaults:
# newer e2fsprogs add orphan_file / metadata_csum_seed, which bookworm's
# GRUB 2.06 cannot read. This list is what bookworm itself makes.
log "mkfs.ext4 $ROOT_DEV, mkswap $SWAP_DEV"
mkfs.ext4 -q -F -U "$ROOT_UUID" -L ferry-root \
  -O none,has_journal,ext_attr,resize_inode,dir_index,filetype,extent,64bit,flex_bg,sparse_super,large_file,huge_file,dir_nlink,extra_isize,metadata_csum \
  "$ROOT_DEV"
mkswap -U "$SWAP_UUID" -L ferry-swap "$SWAP_DEV" >&2

mkdir -p "$MNT"
do_mount "$ROOT_DEV" "$MNT"

# --- debootstrap, in two stages ----------------------------------------------
# Stage one only unpacks; before stage two configures packages (and the kernel's
# postinst builds the initramfs) we drop in the initramfs settings, so the
# initramfs is built once, small, instead of once with MODULES=most and again.
CACHE="$FIXTURES/debootstrap-cache"   # .deb cache shared by all builds
mkdir -p "$CACHE"
log "debootstrap stage 1 ($SUITE, minbase)"
debootstrap --foreign --variant=minbase --arch=amd64 --cache-dir="$CACHE" \
  --include=linux-image-amd64,systemd-sysv,udev,initramfs-tools,kmod,ifupdown \
  "$SUITE" "$MNT" "$MIRROR" >&2

# MODULES=dep cannot see the guest's hardware from a chroot; "list" takes only
# the modules named in /etc/initramfs-tools/modules (plus their dependencies):
# IDE/SATA/virtio disks and ext4 (crc32c for its metadata checksums).
INITRAMFS_MODULES="ata_piix ata_generic ahci sd_mod virtio_pci virtio_blk virtio_scsi ext4 crc32c_generic"
mkdir -p "$MNT/etc/initramfs-tools/conf.d" "$MNT/usr/share/initramfs-tools/modules.d"
cat >"$MNT/etc/initramfs-tools/conf.d/ferry.conf" <<'EOF'
# Ferry test guest: small initramfs with an explicit module list.
MODULES=list
COMPRESS=gzip
EOF
# No resume device: otherwise the initramfs may wait for the swap partition.
echo "RESUME=none" >"$MNT/etc/initramfs-tools/conf.d/resume"
# /etc/initramfs-tools/modules is a conffile of initramfs-tools: writing it
# before dpkg installs the package would raise a conffile question. For the
# initramfs that stage 2 builds, the list goes to the package's modules.d
# (mkinitramfs reads that too; it does not read /etc/initramfs-tools/modules.d);
# it moves to /etc afterwards.
printf '%s\n' $INITRAMFS_MODULES >"$MNT/usr/share/initramfs-tools/modules.d/ferry-build"

log "debootstrap stage 2"
chroot "$MNT" /debootstrap/debootstrap --second-stage >&2
rm -f "$MNT/usr/share/initramfs-tools/modules.d/ferry-build"
{ echo "# Ferry test guest: disk and file-system drivers for IDE, SATA and virtio"
  printf '%s\n' $INITRAMFS_MODULES; } >>"$MNT/etc/initramfs-tools/modules"

# --- chroot mounts for the remaining configuration ---------------------------
do_mount -t proc proc "$MNT/proc"
do_mount -t sysfs sysfs "$MNT/sys"
do_mount --bind /dev "$MNT/dev"
do_mount --bind /dev/pts "$MNT/dev/pts"

# --- guest configuration -----------------------------------------------------
log "configuring the guest"
cat >"$MNT/etc/fstab" <<EOF
# <file system>                                <mount point> <type> <options>         <dump> <pass>
UUID=$ROOT_UUID  /             ext4   errors=remount-ro 0      1
UUID=$SWAP_UUID  none          swap   sw                0      0
EOF
echo "$HOSTNAME_" >"$MNT/etc/hostname"
cat >"$MNT/etc/hosts" <<EOF
127.0.0.1	localhost
127.0.1.1	$HOSTNAME_

::1	localhost ip6-localhost ip6-loopback
ff02::1	ip6-allnodes
ff02::2	ip6-allrouters
EOF
# allow-hotplug: boot does not wait for a NIC that is not there.
cat >"$MNT/etc/network/interfaces" <<'EOF'
auto lo
iface lo inet loopback

allow-hotplug ens3
iface ens3 inet static
    address 10.0.2.15/24
    gateway 10.0.2.2
EOF
echo "$MACHINE_ID" >"$MNT/etc/machine-id"
: >"$MNT/etc/resolv.conf"

cat >"$MNT/usr/local/sbin/ferry-boot-marker" <<'EOF'
#!/bin/sh
# Ferry boot marker: prove on the serial line that this guest reached userspace
# from its own root file system, then power off (unless booted with ferry.stay).
uuid=$(findmnt -no UUID / 2>/dev/null)
if [ -z "$uuid" ]; then
  src=$(findmnt -no SOURCE / 2>/dev/null)
  [ -n "$src" ] && uuid=$(blkid -s UUID -o value "$src" 2>/dev/null)
fi
if [ -z "$uuid" ]; then
  uuid=$(tr ' ' '\n' </proc/cmdline | sed -n 's/^root=UUID=//p' | head -n1)
fi
host=$(cat /proc/sys/kernel/hostname)
# the first global IPv4 address (IF:ADDR/PREFIX), waited for a little; none: net=none
net=none
for i in 1 2 3 4 5 6 7 8 9 10; do
  addr=$(ip -o -4 addr show scope global 2>/dev/null | awk '{ print $2 ":" $4; exit }')
  [ -n "$addr" ] && { net=$addr; break; }
  sleep 1
done
printf '\nFERRY-BOOT-OK root=%s host=%s net=%s\n' "${uuid:-unknown}" "$host" "$net" >/dev/ttyS0
case " $(cat /proc/cmdline) " in
  *" ferry.stay "*) exit 0 ;;
esac
exec systemctl --no-block poweroff
EOF
chmod 0755 "$MNT/usr/local/sbin/ferry-boot-marker"

cat >"$MNT/etc/systemd/system/ferry-boot-marker.service" <<'EOF'
[Unit]
Description=Ferry boot marker (serial line) and power-off
# a deployed machine's first-boot report (ferry deploy) goes out before the power-off
After=local-fs.target ferry-firstboot.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/ferry-boot-marker
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
EOF

chroot "$MNT" systemctl enable ferry-boot-marker.service >&2
# Keep boot short and quiet: nothing periodic, no VT login.
chroot "$MNT" systemctl disable getty@tty1.service >&2 || true
for unit in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
            e2scrub_reap.service fstrim.timer systemd-timesyncd.service; do
  chroot "$MNT" systemctl mask "$unit" >&2 2>/dev/null || true
done

# --- kernel, initramfs -------------------------------------------------------
KVER=$(cd "$MNT/boot" && ls -1 vmlinuz-* 2>/dev/null | sort -V | tail -n1 || true)
KVER=${KVER#vmlinuz-}
[[ -n $KVER ]] || die "no kernel in the guest's /boot"
if [[ ! -f $MNT/boot/initrd.img-$KVER ]]; then
  log "building initramfs for $KVER"
  chroot "$MNT" update-initramfs -c -k "$KVER" >&2
fi
INITRD_KO=$(chroot "$MNT" lsinitramfs "/boot/initrd.img-$KVER" | sed -n 's|.*/\([^/]*\)\.ko$|\1|p' | sort | tr '\n' ' ')
for m in ata_piix ahci virtio_blk virtio_pci ext4; do
  [[ " $INITRD_KO " == *" $m "* ]] || die "initramfs lacks $m (has: $INITRD_KO)"
done
log "kernel $KVER, initramfs $(du -h "$MNT/boot/initrd.img-$KVER" | cut -f1) with: $INITRD_KO"

# --- GRUB for BIOS, without grub-install ------------------------------------
# Config + modules in /boot/grub (as grub-install would leave them).
mkdir -p "$MNT/boot/grub/i386-pc"
cp "$GRUB_DIR"/*.mod "$GRUB_DIR"/*.lst "$MNT/boot/grub/i386-pc/"
cat >"$MNT/boot/grub/grub.cfg" <<EOF
# Ferry test guest (written by scripts/build-debian-guest.sh)
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=0
set default=0
menuentry 'Debian GNU/Linux 12 (ferry-guest)' {
	search --no-floppy --fs-uuid --set=root $ROOT_UUID
	linux /boot/vmlinuz-$KVER root=UUID=$ROOT_UUID ro console=ttyS0,115200 quiet
	initrd /boot/initrd.img-$KVER
}
EOF

# core.img = diskboot.img (1 sector) + the GRUB kernel with these modules.
# It is written to sectors 1.. of the disk (the gap before p1 at 1 MiB).
CORE=$TMP/core.img
grub-mkimage -O i386-pc -o "$CORE" -p '(hd0,msdos1)/boot/grub' \
  biosdisk part_msdos ext2 normal linux search search_fs_uuid \
  configfile echo test serial terminal
CORE_SECTORS=$(( ($(stat -c %s "$CORE") + 511) / 512 ))
(( CORE_SECTORS < ROOT_START )) || die "core.img ($CORE_SECTORS sectors) does not fit the MBR gap"

le() { # $1 = value, $2 = bytes -> little-endian bytes on stdout
  local v=$1 n=$2 i out=''
  for (( i=0; i<n; i++ )); do out+=$(printf '\\x%02x' $(( (v >> (8*i)) & 0xff ))); done
  printf "$out"
}
patch() { # $1 = file, $2 = byte offset; bytes from stdin
  dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

# What grub-bios-setup does when it embeds core.img after the MBR (util/setup.c):
# 1. core.img's first sector (diskboot.img) ends with a blocklist that says where
#    the rest of core.img lies: {start u64, len u16, segment u16} at 0x200-12,
#    preceded by a zero terminator entry. The rest starts at disk sector 2,
#    is CORE_SECTORS-1 long and is loaded at segment 0x820 (0x800 + 512/16).
#    grub-mkimage already writes these defaults; write them anyway, explicitly.
{ le 2 8; le $(( CORE_SECTORS - 1 )) 2; le $(( 0x820 )) 2; } | patch "$CORE" $(( 512 - 12 ))
head -c 12 /dev/zero | patch "$CORE" $(( 512 - 24 ))
# 2. boot.img: kernel_sector (u64 at 0x5c) = first sector of core.img = 1;
#    boot_drive (0x64) = 0xff (use the drive the BIOS passes in DL);
#    the 2-byte jump at 0x66 becomes two NOPs so that a hard disk (0x80) is
#    forced when a buggy BIOS passes 0x00/0x01 (what setup.c does for disks).
BOOT=$TMP/boot.img
cp "$GRUB_DIR/boot.img" "$BOOT"
le 1 8 | patch "$BOOT" $(( 0x5c ))
printf '\xff' | patch "$BOOT" $(( 0x64 ))
printf '\x90\x90' | patch "$BOOT" $(( 0x66 ))
# 3. Write only the code area: bytes 0..2 (jump) and 0x5a..439; the BPB area
#    (3..0x59) stays as the disk had it, and 440..511 keep the disk id and the
#    partition table sfdisk wrote.
dd if="$BOOT" of="$IMG" bs=1 count=3 conv=notrunc status=none
dd if="$BOOT" of="$IMG" bs=1 skip=$(( 0x5a )) seek=$(( 0x5a )) count=$(( 440 - 0x5a )) conv=notrunc status=none
dd if="$CORE" of="$IMG" bs=512 seek=1 conv=notrunc status=none
log "GRUB: boot.img in MBR, core.img in sectors 1..$CORE_SECTORS"

# --- tidy up the guest and make the image sparse again ------------------------
chroot "$MNT" apt-get clean >&2
rm -rf "$MNT"/var/lib/apt/lists/* "$MNT"/debootstrap "$MNT"/var/log/bootstrap.log
rm -f "$MNT"/etc/ssh/ssh_host_* 2>/dev/null || true

for (( i=${#MOUNTS[@]}-1; i>=1; i-- )); do umount "${MOUNTS[i]}"; done
MOUNTS=("${MOUNTS[0]}")
fstrim "$MNT" >&2 2>/dev/null || log "fstrim not possible here; image is less sparse"
umount "$MNT"; MOUNTS=()
e2fsck -fy "$ROOT_DEV" >&2 || [[ $? -le 1 ]]
for l in "${LOOPS[@]}"; do losetup -d "$l"; done
LOOPS=()

# sanity: the table still parses and the MBR signature is intact
[[ $(od -An -tx1 -j510 -N2 "$IMG" | tr -d " \n") == 55aa ]] || die "MBR signature lost"
sfdisk -d "$IMG" >&2

rm -f "$CORE" "$BOOT"
rmdir "$MNT"
cat >"$TMP/info" <<EOF
script_hash=$HASH
suite=$SUITE
kernel=$KVER
disk_id=$DISK_ID
root_uuid=$ROOT_UUID
swap_uuid=$SWAP_UUID
hostname=$HOSTNAME_
built=$(date -u +%Y-%m-%dT%H:%M:%SZ)
EOF
date -u +%Y-%m-%dT%H:%M:%SZ >"$TMP/done"
sync -f "$IMG" 2>/dev/null || sync
mv -T "$TMP" "$OUT"
FINISHED=1

log "built $OUT/disk.raw in $(( $(date +%s) - START_TS )) s ($(du -h "$OUT/disk.raw" | cut -f1) allocated of ${DISK_SIZE_MIB} MiB)"
echo "$OUT/disk.raw" >&3
