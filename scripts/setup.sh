#!/usr/bin/env bash
# One idempotent set-up for Ferry: Debian packages, npm packages, the TypeScript build.
# Safe to run again: apt only installs what is missing, npm ci only when the lock changed.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: run as root (Ferry needs loop devices, mounts and apt-get)" >&2
  exit 1
fi

PACKAGES=(
  qemu-utils qemu-system-x86 qemu-system-common qemu-block-extra
  fdisk util-linux e2fsprogs xfsprogs btrfs-progs dosfstools mtools
  debootstrap grub-pc-bin grub-common fuse3 attr acl rsync
  cpio zstd xz-utils python3 libcap2-bin
  libiscsi-bin libnbd-bin nbdkit tgt
  gcc libc6-dev openssl
  rpm cryptsetup-bin grub-efi-amd64-bin kmod
  ovmf  # UEFI boots of test guests (verify/boot.ts firmware uefi) and libvirt domains with firmware=efi
  lvm2  # LVM sources and targets: pvs/vgs/lvs, vgcfgbackup, pvcreate --restorefile, vgcfgrestore (no activation)
  libarchive-tools xorriso cabextract gcab python3-pefile binutils-mingw-w64-i686  # ferry drivers import (+ its tests)
  libvirt-dev pkg-config  # builds @unraid/libvirt's native binding during npm ci
  libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients  # ferry register (+ its test: virtlogd, libvirtd, the libvirt-qemu user, virsh)
  libxml2-utils  # xmllint: the export test checks the OVF envelope
  linux-image-amd64 busybox-static  # ferry agent build: the agent's kernel (not booted on the host) and busybox
  ntfs-3g libhivex-bin libwin-hivex-perl python3-pefile binutils-mingw-w64-i686 binutils-mingw-w64-x86-64  # Windows inspection (+ the phony Windows fixture)
  dnsmasq-base ipxe busybox-static  # ferry pxe serve: DHCP/TFTP and iPXE (+ its test: udhcpc, tftp)
  chromium  # the console's browser test (test/console.test.ts, driven by playwright-core; no browser download)
  postgresql  # the fleet's shared job store (+ its test: initdb/pg_ctl of PostgreSQL 15, psql)
)

# `setup.sh --bench` (npm run bench) also installs what only the bench needs: virt-inspector
# (libguestfs-tools), timed against `ferry inspect`. It boots an appliance that supermin
# builds from the host's own packages, with a kernel from /boot and its modules (Debian's
# linux-image-amd64, in PACKAGES for the agent anyway).
BENCH_PACKAGES=(libguestfs-tools)
for arg in "$@"; do
  case $arg in
    --bench) PACKAGES+=("${BENCH_PACKAGES[@]}") ;;
    *) echo "setup.sh: unknown option $arg (only --bench)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# /dev/kvm as Debian's udev rule leaves it (root:kvm 0660); these machines run no udevd and
# have it root-only. libvirtd probes QEMU as root (KVM found) but checks its cache as
# libvirt-qemu (KVM missing), so it called the cache stale and probed QEMU again, about
# 30 s, at every domain definition. Domains are still defined with type qemu (TCG).
if [ -c /dev/kvm ] && getent group kvm >/dev/null; then
  chgrp kvm /dev/kvm
  chmod 0660 /dev/kvm
fi

# npm ci only when node_modules is older than the lock file (or absent).
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi

npx tsc -p tsconfig.json
chmod +x dist/src/cli/main.js  # the package bin: `npx ferry` runs it directly
