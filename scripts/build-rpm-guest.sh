#!/usr/bin/env bash
# build-rpm-guest.sh — build (once, cached) a static-inspection fixture: the disk
# of an rpm-family (Rocky Linux 9.4 / RHEL 9-like) UEFI installation, made from
# real packages where Debian ships them, and a manifest of every value
# `ferry inspect` should find on it.
#
# Contract
#   stdout: exactly two lines, the absolute paths of
#             ${FERRY_FIXTURES:-/var/cache/ferry/fixtures}/rpm-guest-<hash>/disk.raw
#             ${FERRY_FIXTURES:-/var/cache/ferry/fixtures}/rpm-guest-<hash>/manifest.json   (the LAST line)
#           where <hash> = first 12 hex digits of sha256(this script), so any
#           edit of this file builds a new fixture next to the old ones.
#   stderr: progress and the build time.
#   exit 0 with the cached paths at once when disk.raw, manifest.json and the
#   `done` stamp exist. Runs as root, reads no stdin. Needs the Debian mirror of
#   this host's apt only when the .deb files below are not cached yet.
#   The image is left mode 0444: open it read-only. It is NOT bootable (Debian's
#   GRUB has no `blscfg` and the kernels are stand-ins); it is for inspection.
#
# Image layout (GPT, 1 GiB sparse, disk GUID $DISK_GUID):
#   p1  ESP  vfat  label ROCKYESP, id 7A3E-91C4   -> /boot/efi (fstab by PARTUUID)
#        EFI/rocky/{shimx64.efi (Debian's signed shim), grubx64.efi (grub-mkimage
#        x86_64-efi from grub-efi-amd64-bin), grub.cfg (RHEL 9.3+ stub that
#        chains to /boot/grub2/grub.cfg), BOOTX64.CSV}, EFI/BOOT/BOOTX64.EFI (shim)
#   p2  ext4 label boot                            -> /boot (fstab by LABEL)
#        vmlinuz-<v> (bzImage header with the version string), initramfs-<v>.img
#        (dracut-like: uncompressed early cpio with microcode + zstd or xz newc cpio),
#        System.map/config/.hmac, loader/entries/<machine-id>-<v>.conf (BLS),
#        grub2/grub.cfg (blscfg), grub2/grubenv (saved_entry = the newer kernel)
#   p3  xfs  label rocky-root                      -> /     (fstab by UUID)
#        usr-merged tree (bin lib lib64 sbin -> usr/…), os-release & friends,
#        /usr/lib/modules/<v>/ with real module files (Debian's kernel, xz-compressed
#        and renamed into place) + depmod output, network configuration in five
#        forms (NetworkManager keyfile, ifcfg, netplan, systemd-networkd + .link,
#        udev rules), a real sqlite rpm database written by rpm from packages that
#        rpmbuild made here
#   p4  LUKS2 label ferry-data (pbkdf2, 1000 iterations, passphrase in the manifest)
#        -> /data via /dev/mapper/luks-<uuid> (crypttab, fstab by path)
#
# Kernels: 5.14.0-427.13.1.el9_4.x86_64 (default, chosen by grubenv's saved_entry;
#   initramfs zstd, has virtio_blk) and 5.14.0-70.13.1.el9_0.x86_64 (initramfs xz,
#   no virtio at all). Note "5.14.0-70…" sorts AFTER "5.14.0-427…" as plain text:
#   a reader that guesses "last in lexical order" picks the wrong default.
set -euo pipefail
exec </dev/null
# Everything goes to stderr; fd 3 is the real stdout, used only for the result.
exec 3>&1 1>&2
umask 022
export LC_ALL=C.UTF-8 TZ=UTC SOURCE_DATE_EPOCH=1715678000

START_TS=$(date +%s)
log() { printf '[build-rpm-guest %4ss] %s\n' "$(( $(date +%s) - START_TS ))" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# --- fixed identities (the manifest repeats them; tests rely on them) ---------
export DISK_GUID=8d6a1f2e-5c3b-4a49-9e7d-2f1c0b9a8e71
export P1_PARTUUID=3f0e9c7a-1b2d-4c5e-8f90-a1b2c3d4e501
export P2_PARTUUID=3f0e9c7a-1b2d-4c5e-8f90-a1b2c3d4e502
export P3_PARTUUID=3f0e9c7a-1b2d-4c5e-8f90-a1b2c3d4e503
export P4_PARTUUID=3f0e9c7a-1b2d-4c5e-8f90-a1b2c3d4e504
export ESP_ID=7A3E91C4 ESP_UUID=7A3E-91C4 ESP_LABEL=ROCKYESP
export BOOT_UUID=6c1e5f3a-2b4d-4e8f-9a0b-1c2d3e4f5a62 BOOT_LABEL=boot
export ROOT_UUID=9b8a7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c63 ROOT_LABEL=rocky-root
export LUKS_UUID=4e5d6c7b-8a9f-4b0c-9d1e-2f3a4b5c6d64 LUKS_LABEL=ferry-data
export LUKS_PASSPHRASE=ferry-rpm-guest-throwaway
export MACHINE_ID=3c4d5e6f7a8b49c0a1b2c3d4e5f60718
export HOSTNAME_=ferry-rocky.example.com
export KVER_NEW=5.14.0-427.13.1.el9_4.x86_64     # default; initramfs zstd, with virtio_blk
export KVER_OLD=5.14.0-70.13.1.el9_0.x86_64      # initramfs xz, no virtio
export CMDLINE_NEW="root=UUID=$ROOT_UUID ro crashkernel=1G-4G:192M,4G-64G:256M,64G-:512M console=tty0 console=ttyS0,115200n8 net.ifnames=0 rhgb quiet"
export CMDLINE_OLD="root=UUID=$ROOT_UUID ro crashkernel=1G-4G:192M,4G-64G:256M,64G-:512M rhgb quiet"
DISK_SIZE_MIB=1024
ESP_MIB=100 BOOT_MIB=256 ROOT_MIB=584             # p4 (LUKS) takes the rest, ~83 MiB

# network: one interface (and MAC) per configuration system, so each is checkable
export NM_IF=ens192  NM_MAC=00:50:56:ab:cd:01 NM_ADDR=192.168.10.20/24 NM_GW=192.168.10.1 NM_DNS="192.168.10.53 192.168.10.54"
export IFCFG_IF=eth1 IFCFG_MAC=52:54:00:ab:cd:02                          # dhcp
export NP_IF=lan0    NP_MAC=52:54:00:ab:cd:03 NP_ADDR=10.20.0.5/24 NP_GW=10.20.0.1 NP_DNS=10.20.0.53
export NP_DHCP_IF=eth3                                                    # netplan dhcp4, no MAC
export ND_IF=wan0    ND_MAC=52:54:00:ab:cd:04 ND_ADDR=172.16.5.10/16 ND_GW=172.16.0.1 ND_DNS=172.16.0.53
export UDEV_IF=eth4  UDEV_MAC=52:54:00:ab:cd:05                           # a binding only

# rpm packages: name|epoch|version|release|arch (epoch empty = none)
PACKAGES=(
  "kernel-core||5.14.0|427.13.1.el9_4|x86_64"
  "kernel-core||5.14.0|70.13.1.el9_0|x86_64"
  "bash||5.1.8|9.el9|x86_64"
  "glibc||2.34|100.el9_4.2|x86_64"
  "rocky-release||9.4|1.7.el9|noarch"
  "NetworkManager|1|1.46.0|8.el9_4|x86_64"
  "open-vm-tools||12.3.5|2.el9|x86_64"
  "qemu-guest-agent|17|8.2.0|11.el9_4|x86_64"
  "hyperv-daemons||0|0.42.20190303git.el9|x86_64"
)
export GUEST_TOOLS="hyperv-daemons open-vm-tools qemu-guest-agent"

# kernel modules placed in /usr/lib/modules/<v> (both kernels; plus their dependencies)
MODULES_STORAGE="virtio_blk virtio_scsi ahci ata_piix ata_generic nvme sd_mod sr_mod vmw_pvscsi hv_storvsc"
MODULES_NETWORK="virtio_net e1000 e1000e vmxnet3 hv_netvsc"
MODULES_OTHER="virtio_pci xfs ext4"
# ... and in each initramfs (plus dependencies)
INITRD_NEW="virtio_blk virtio_pci ahci ata_piix sd_mod nvme xfs ext4"
INITRD_OLD="ahci ata_piix ata_generic sd_mod vmw_pvscsi xfs"
export MODULES_STORAGE MODULES_NETWORK

SCRIPT_PATH=$(readlink -f "${BASH_SOURCE[0]}")
HASH=$(sha256sum "$SCRIPT_PATH" | cut -c1-12)
FIXTURES=$(realpath -m "${FERRY_FIXTURES:-/var/cache/ferry/fixtures}")
OUT="$FIXTURES/rpm-guest-$HASH"
export HASH

is_done() { [[ -f $OUT/disk.raw && -s $OUT/manifest.json && -f $OUT/done ]]; }
print_result() { printf '%s\n%s\n' "$OUT/disk.raw" "$OUT/manifest.json" >&3; }
if is_done; then print_result; exit 0; fi

[[ $(id -u) -eq 0 ]] || die "run as root (needs loop devices and mount)"
PY=/usr/bin/python3
[[ -x $PY ]] || die "missing /usr/bin/python3 (run scripts/setup.sh)"
for tool in sfdisk partx losetup blkid mount umount findmnt mountpoint flock truncate \
  mkfs.vfat mmd mcopy mkfs.ext4 e2fsck mkfs.xfs xfs_repair fstrim cryptsetup \
  grub-mkimage grub-editenv rpm rpmbuild depmod modinfo cpio zstd xz iconv \
  dpkg-deb apt-get apt-cache sha256sum; do
  command -v "$tool" >/dev/null || die "missing tool: $tool (run scripts/setup.sh)"
done
GRUB_EFI_DIR=/usr/lib/grub/x86_64-efi
[[ -f $GRUB_EFI_DIR/fat.mod ]] || die "missing $GRUB_EFI_DIR (install grub-efi-amd64-bin)"

mkdir -p "$FIXTURES"
# One builder per hash at a time; a second caller waits, then finds the result.
exec 9>"$FIXTURES/.rpm-guest-$HASH.lock"
flock 9
if is_done; then print_result; exit 0; fi

# --- clean up what a crashed build (kill -9, power loss) may have left ---------
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
# We hold the lock, so every temp dir of this hash is stale.
for stale in "$FIXTURES"/.rpm-guest-"$HASH".tmp.*; do
  [[ -d $stale ]] || continue
  log "removing stale build dir $stale"
  release_under "$stale"
  rm -rf --one-file-system "$stale"
done
[[ -d $OUT ]] && rm -rf --one-file-system "$OUT"

TMP=$(mktemp -d "$FIXTURES/.rpm-guest-$HASH.tmp.XXXXXX")
chmod 0755 "$TMP"
IMG=$TMP/disk.raw
WORK=$TMP/work          # scratch, removed before the final rename
MNT=$WORK/root
mkdir -p "$WORK" "$MNT"
LOOPS=()
MOUNTS=()
FINISHED=0

cleanup() {
  local rc=$? i
  set +e
  trap - EXIT INT TERM
  for (( i=${#MOUNTS[@]}-1; i>=0; i-- )); do
    mountpoint -q "${MOUNTS[i]}" && { umount "${MOUNTS[i]}" || umount -l "${MOUNTS[i]}"; }
  done
  [[ -d $TMP ]] && release_under "$TMP"
  for i in "${LOOPS[@]}"; do losetup -d "$i" 2>/dev/null; done
  if [[ $FINISHED -ne 1 && -d $TMP ]]; then
    rm -rf --one-file-system "$TMP"
    log "build failed (exit $rc); temp dir removed"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

do_mount() { mount "$@"; MOUNTS+=("${!#}"); }
attach() { # $1 = byte offset, $2 = byte size -> sets LOOP_DEV (not via $(…): LOOPS must see it)
  LOOP_DEV=$(losetup --find --show --offset "$1" --sizelimit "$2" "$IMG")
  LOOPS+=("$LOOP_DEV")
}

# --- python helper: bzImage stand-in, microcode stand-in, manifest -----------
H=$WORK/fixture.py
cat >"$H" <<'PYEOF'
import hashlib, json, os, struct, sys

def bzimage(out, version_string):
    """A stand-in kernel with a real x86 boot-protocol header: `file` and any
    reader of the setup header's kernel_version field see the version."""
    setup_sects = 4
    buf = bytearray(64 * 1024)
    buf[0:2] = b'MZ'                                   # as the EFI-stub kernels have
    buf[0x1F1] = setup_sects
    struct.pack_into('<H', buf, 0x1F2, 1)              # root_flags: mount root read-only
    struct.pack_into('<H', buf, 0x1FE, 0xAA55)         # boot_flag
    buf[0x202:0x206] = b'HdrS'                         # header magic
    struct.pack_into('<H', buf, 0x206, 0x020F)         # boot protocol 2.15
    ver_off = 0x400
    struct.pack_into('<H', buf, 0x20E, ver_off - 0x200)  # kernel_version (relative to 0x200)
    s = version_string.encode() + b'\0'
    buf[ver_off:ver_off + len(s)] = s
    buf[0x211] = 0x01                                  # loadflags: LOADED_HIGH
    # the "compressed kernel": deterministic filler
    seed = hashlib.sha256(version_string.encode()).digest()
    pos = (setup_sects + 1) * 512
    while pos < len(buf):
        seed = hashlib.sha256(seed).digest()
        buf[pos:pos + 32] = seed
        pos += 32
    open(out, 'wb').write(bytes(buf[:64 * 1024]))

def microcode(out):
    """Intel microcode container layout (header v1, 2000-byte data), stand-in content."""
    data = hashlib.sha256(b'ferry microcode').digest() * 63
    data = data[:2000]
    hdr = struct.pack('<IIIIIIIII12x', 1, 0x2b000590, 0x04102024, 0x000806f8, 0, 1, 2000, 2048, 0x87)
    open(out, 'wb').write(hdr + data)

def norm(name):
    n = os.path.basename(name)
    for ext in ('.xz', '.zst', '.gz'):
        if n.endswith(ext): n = n[:-len(ext)]
    if n.endswith('.ko'): n = n[:-3]
    return n.replace('-', '_')

def lines(path):
    return [l.strip() for l in open(path) if l.strip()]

def manifest(work, out):
    E = os.environ
    parts = json.load(open(os.path.join(work, 'parts.json')))
    storage = E['MODULES_STORAGE'].split()
    network = E['MODULES_NETWORK'].split()
    default_ver = E['KVER_NEW']
    kernels = []
    for key, comp in (('NEW', 'zstd'), ('OLD', 'xz')):
        v = E['KVER_' + key]
        all_mods = sorted({norm(p) for p in lines(os.path.join(work, 'mods.all'))})
        initrd = sorted({norm(p) for p in lines(os.path.join(work, 'mods.initrd.' + key))})
        kernels.append({
            'version': v,
            'flavour': v.rsplit('.', 1)[1],      # RHEL names its flavours by architecture (x86_64, x86_64+debug)
            'path': '/boot/vmlinuz-' + v,
            'default': v == default_ver,
            'cmdline': E['CMDLINE_' + key],
            'initramfs': {
                'path': '/boot/initramfs-%s.img' % v,
                'compression': comp,
                'earlyCpio': 1,
                'modules': initrd,
            },
            # the storage / network drivers this fixture is built to have (a reader
            # may classify more, e.g. libata or scsi_mod: these are "at least")
            'modules': {'storage': sorted(storage), 'network': sorted(network)},
            'missingFromInitramfs': {
                'storage': sorted(m for m in storage if m not in initrd),
                'network': sorted(m for m in network if m not in initrd),
            },
            # extras, not in report.ts
            'hasVirtioInInitramfs': any(m.startswith('virtio') for m in initrd),
            'allModules': all_mods,
        })
    packages = []
    for l in lines(os.path.join(work, 'packages.txt')):
        name, version, arch = l.split(' ')
        packages.append({'name': name, 'version': version, 'arch': arch})
    packages.sort(key=lambda p: (p['name'], p['version']))
    nm_dns = E['NM_DNS'].split()
    interfaces = [
        {'name': E['NM_IF'], 'source': 'networkmanager',
         'file': '/etc/NetworkManager/system-connections/%s.nmconnection' % E['NM_IF'],
         'method': 'static', 'addresses': [E['NM_ADDR']], 'gateway': E['NM_GW'], 'dns': nm_dns},
        {'name': E['IFCFG_IF'], 'source': 'ifcfg',
         'file': '/etc/sysconfig/network-scripts/ifcfg-%s' % E['IFCFG_IF'],
         'method': 'dhcp', 'addresses': []},
        {'name': E['NP_IF'], 'source': 'netplan', 'file': '/etc/netplan/01-netcfg.yaml',
         'method': 'static', 'addresses': [E['NP_ADDR']], 'gateway': E['NP_GW'], 'dns': [E['NP_DNS']]},
        {'name': E['NP_DHCP_IF'], 'source': 'netplan', 'file': '/etc/netplan/01-netcfg.yaml',
         'method': 'dhcp', 'addresses': []},
        {'name': E['ND_IF'], 'source': 'networkd', 'file': '/etc/systemd/network/20-%s.network' % E['ND_IF'],
         'method': 'static', 'addresses': [E['ND_ADDR']], 'gateway': E['ND_GW'], 'dns': [E['ND_DNS']]},
    ]
    bindings = [
        {'name': E['NM_IF'], 'mac': E['NM_MAC'], 'source': 'networkmanager',
         'file': '/etc/NetworkManager/system-connections/%s.nmconnection' % E['NM_IF']},
        {'name': E['IFCFG_IF'], 'mac': E['IFCFG_MAC'], 'source': 'ifcfg',
         'file': '/etc/sysconfig/network-scripts/ifcfg-%s' % E['IFCFG_IF']},
        {'name': E['NP_IF'], 'mac': E['NP_MAC'], 'source': 'netplan', 'file': '/etc/netplan/01-netcfg.yaml'},
        {'name': E['ND_IF'], 'mac': E['ND_MAC'], 'source': 'systemd-link',
         'file': '/etc/systemd/network/10-%s.link' % E['ND_IF']},
        {'name': E['UDEV_IF'], 'mac': E['UDEV_MAC'], 'source': 'udev-rules',
         'file': '/etc/udev/rules.d/70-persistent-net.rules'},
    ]
    luks_mapper = '/dev/mapper/luks-' + E['LUKS_UUID']
    fstab = [
        {'spec': 'UUID=' + E['ROOT_UUID'], 'by': 'uuid', 'mountpoint': '/', 'type': 'xfs', 'options': 'defaults'},
        {'spec': 'LABEL=' + E['BOOT_LABEL'], 'by': 'label', 'mountpoint': '/boot', 'type': 'ext4', 'options': 'defaults'},
        {'spec': 'PARTUUID=' + E['P1_PARTUUID'], 'by': 'partuuid', 'mountpoint': '/boot/efi', 'type': 'vfat',
         'options': 'umask=0077,shortname=winnt'},
        {'spec': luks_mapper, 'by': 'path', 'mountpoint': '/data', 'type': 'xfs',
         'options': 'defaults,nofail,x-systemd.device-timeout=10s'},
    ]
    fs = [
        {'partition': 1, 'start': parts['1'][0], 'size': parts['1'][1], 'type': 'vfat',
         'uuid': E['ESP_UUID'], 'label': E['ESP_LABEL']},
        {'partition': 2, 'start': parts['2'][0], 'size': parts['2'][1], 'type': 'ext4',
         'uuid': E['BOOT_UUID'], 'label': E['BOOT_LABEL']},
        {'partition': 3, 'start': parts['3'][0], 'size': parts['3'][1], 'type': 'xfs',
         'uuid': E['ROOT_UUID'], 'label': E['ROOT_LABEL']},
        {'partition': 4, 'start': parts['4'][0], 'size': parts['4'][1], 'type': 'crypto_LUKS',
         'uuid': E['LUKS_UUID'], 'label': E['LUKS_LABEL'], 'encrypted': 'luks'},
    ]
    m = {
        'fixture': 'rpm-guest',
        'scriptHash': E['HASH'],
        'disk': {
            'file': 'disk.raw',
            'sha256': E['DISK_SHA256'],
            'virtualSize': int(E['DISK_BYTES']),
            'partitionTable': {'label': 'gpt', 'id': E['DISK_GUID']},
            'partUuids': {'1': E['P1_PARTUUID'], '2': E['P2_PARTUUID'], '3': E['P3_PARTUUID'], '4': E['P4_PARTUUID']},
        },
        'fileSystems': fs,
        'luks': {'partition': 4, 'uuid': E['LUKS_UUID'], 'passphrase': E['LUKS_PASSPHRASE'], 'version': 2},
        'os': {
            'type': 'linux',
            'mounts': {'/': 3, '/boot': 2, '/boot/efi': 1},
            'distro': 'rocky',
            'name': 'Rocky Linux 9.4 (Blue Onyx)',      # PRETTY_NAME
            'osReleaseName': 'Rocky Linux',             # NAME (extra)
            'version': '9.4',
            'patchLevel': '9.4',                        # /etc/redhat-release
            'arch': 'x86_64',
            'hostname': E['HOSTNAME_'],
            'machineId': E['MACHINE_ID'],
            'firmware': 'uefi',
            'bootloader': {'kind': 'grub-efi', 'config': '/boot/grub2/grub.cfg',
                           'espConfig': '/boot/efi/EFI/rocky/grub.cfg'},
            'defaultKernel': default_ver,
            'kernels': kernels,
            'fstab': fstab,
            'network': {'interfaces': interfaces, 'macBindings': bindings},
            'packages': {'manager': 'rpm', 'list': packages},
            'guestTools': sorted(E['GUEST_TOOLS'].split()),
            'selinux': 'enforcing',
        },
    }
    with open(out, 'w') as f:
        json.dump(m, f, indent=2)
        f.write('\n')

if __name__ == '__main__':
    cmd = sys.argv[1]
    if cmd == 'bzimage': bzimage(sys.argv[2], sys.argv[3])
    elif cmd == 'microcode': microcode(sys.argv[2])
    elif cmd == 'manifest': manifest(sys.argv[2], sys.argv[3])
    else: raise SystemExit('unknown command ' + cmd)
PYEOF

# --- the Debian packages we take real files from -----------------------------
DEBS="$FIXTURES/rpm-guest-debs"     # shared by all builds of this script
mkdir -p "$DEBS"
fetch_deb() { # $1 = package name -> prints the path of its .deb in $DEBS (downloads once)
  local pkg=$1 f dl
  f=$(ls -1 "$DEBS"/"${pkg}"_*.deb 2>/dev/null | sort -V | tail -n1 || true)
  if [[ -z $f ]]; then
    dl=$(mktemp -d "$WORK/dl.XXXXXX")
    log "apt-get download $pkg"
    (cd "$dl" && apt-get download -q "$pkg" >&2) || die "apt-get download $pkg failed (is the Debian mirror reachable? apt-get update?)"
    f=$(ls -1 "$dl"/*.deb | head -n1)
    mv -n "$f" "$DEBS/" && f="$DEBS/$(basename "$f")"
    rm -rf "$dl"
  fi
  echo "$f"
}
# The kernel: the one the Debian guest fixture's debootstrap cache holds, else download.
KDEB=$(ls -1 "$FIXTURES"/debootstrap-cache/linux-image-[0-9]*-amd64_*.deb "$DEBS"/linux-image-[0-9]*-amd64_*.deb 2>/dev/null \
       | grep -v -- '-unsigned_' | sort -V | tail -n1 || true)
if [[ -z $KDEB ]]; then
  KPKG=$(apt-cache depends linux-image-amd64 | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
  [[ -n $KPKG ]] || die "cannot resolve linux-image-amd64's kernel package (apt-get update?)"
  KDEB=$(fetch_deb "$KPKG")
fi
SHIMDEB=$(fetch_deb shim-signed)
log "kernel modules from $(basename "$KDEB"), shim from $(basename "$SHIMDEB")"

# --- disk and partitions ------------------------------------------------------
log "creating ${DISK_SIZE_MIB} MiB sparse image (GPT)"
truncate -s "${DISK_SIZE_MIB}M" "$IMG"
S=2048  # sectors per MiB
P1=$S; P2=$(( P1 + ESP_MIB * S )); P3=$(( P2 + BOOT_MIB * S )); P4=$(( P3 + ROOT_MIB * S ))
sfdisk --quiet --no-reread --no-tell-kernel "$IMG" <<EOF
label: gpt
label-id: $DISK_GUID
unit: sectors
first-lba: 2048

start=$P1, size=$(( ESP_MIB * S )), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=$P1_PARTUUID, name="EFI System Partition"
start=$P2, size=$(( BOOT_MIB * S )), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=$P2_PARTUUID
start=$P3, size=$(( ROOT_MIB * S )), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=$P3_PARTUUID
start=$P4, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=$P4_PARTUUID
EOF
sfdisk -d "$IMG" >&2

part_bytes() { partx -g -o START,SECTORS -n "$1" "$IMG" | awk '{ print $1 * 512, $2 * 512 }'; }
declare -A POFF PLEN
for n in 1 2 3 4; do read -r "POFF[$n]" "PLEN[$n]" < <(part_bytes "$n"); done
printf '{"1":[%s,%s],"2":[%s,%s],"3":[%s,%s],"4":[%s,%s]}\n' \
  "${POFF[1]}" "${PLEN[1]}" "${POFF[2]}" "${PLEN[2]}" "${POFF[3]}" "${PLEN[3]}" "${POFF[4]}" "${PLEN[4]}" >"$WORK/parts.json"

attach "${POFF[1]}" "${PLEN[1]}"; ESP_DEV=$LOOP_DEV
attach "${POFF[2]}" "${PLEN[2]}"; BOOT_DEV=$LOOP_DEV
attach "${POFF[3]}" "${PLEN[3]}"; ROOT_DEV=$LOOP_DEV
attach "${POFF[4]}" "${PLEN[4]}"; LUKS_DEV=$LOOP_DEV

log "mkfs: vfat $ESP_DEV, ext4 $BOOT_DEV, xfs $ROOT_DEV, LUKS2 $LUKS_DEV"
mkfs.vfat -F 32 -i "$ESP_ID" -n "$ESP_LABEL" "$ESP_DEV" >&2
# Feature lists pinned to what EL9's own mkfs makes (not this host's defaults).
mkfs.ext4 -q -F -U "$BOOT_UUID" -L "$BOOT_LABEL" \
  -O none,has_journal,ext_attr,resize_inode,dir_index,filetype,extent,64bit,flex_bg,sparse_super,large_file,huge_file,dir_nlink,extra_isize,metadata_csum \
  "$BOOT_DEV"
mkfs.xfs -q -f -m uuid="$ROOT_UUID",crc=1,finobt=1,reflink=1,rmapbt=0,bigtime=1,inobtcount=1 \
  -i sparse=1,nrext64=0 -L "$ROOT_LABEL" "$ROOT_DEV"
printf '%s' "$LUKS_PASSPHRASE" >"$WORK/luks.key"
cryptsetup luksFormat --batch-mode --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
  --hash sha256 --cipher aes-xts-plain64 --key-size 512 --use-urandom \
  --uuid "$LUKS_UUID" --label "$LUKS_LABEL" --key-file "$WORK/luks.key" "$LUKS_DEV" >&2
rm -f "$WORK/luks.key"

do_mount "$ROOT_DEV" "$MNT"
mkdir -p "$MNT/boot"
do_mount "$BOOT_DEV" "$MNT/boot"

# --- the root tree: usr-merged skeleton ---------------------------------------
log "root tree"
mkdir -p "$MNT"/{usr/bin,usr/sbin,usr/lib,usr/lib64,usr/share,etc,var/lib/rpm,var/log,var/tmp,home,root,tmp,proc,sys,dev,run,mnt,opt,srv,data,media,afs}
ln -s usr/bin "$MNT/bin"; ln -s usr/sbin "$MNT/sbin"; ln -s usr/lib "$MNT/lib"; ln -s usr/lib64 "$MNT/lib64"
chmod 0555 "$MNT/proc" "$MNT/sys"; chmod 1777 "$MNT/tmp" "$MNT/var/tmp"; chmod 0550 "$MNT/root"
mkdir -p "$MNT/boot/efi" "$MNT/boot/loader/entries" "$MNT/boot/grub2"
cat >"$MNT/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/bash
bin:x:1:1:bin:/bin:/sbin/nologin
daemon:x:2:2:daemon:/sbin:/sbin/nologin
nobody:x:65534:65534:Kernel Overflow User:/:/sbin/nologin
systemd-network:x:192:192:systemd Network Management:/:/usr/sbin/nologin
EOF
cat >"$MNT/etc/group" <<'EOF'
root:x:0:
bin:x:1:
daemon:x:2:
wheel:x:10:
nobody:x:65534:
systemd-network:x:192:
EOF
printf 'root:!locked::0:99999:7:::\n' >"$MNT/etc/shadow"; chmod 0000 "$MNT/etc/shadow"

# --- rpm packages: built here with rpmbuild, installed with rpm ---------------
log "building and installing rpm packages"
RB=$WORK/rpmbuild
mkdir -p "$RB"
pkg_payload() { # $1 = name, $2 = version-release -> fills $PAY, writes extra %files lines to $PAY.extra
  local name=$1 vr=$2 kv
  case $name in
    kernel-core)
      kv="$vr.x86_64"
      mkdir -p "$PAY/usr/lib/modules/$kv"
      cp "$WORK/vmlinuz-$kv" "$PAY/usr/lib/modules/$kv/vmlinuz"
      printf '%%dir /usr/lib/modules/%s\n%%ghost /boot/vmlinuz-%s\n%%ghost /boot/initramfs-%s.img\n%%ghost /boot/System.map-%s\n%%ghost /boot/config-%s\n' \
        "$kv" "$kv" "$kv" "$kv" "$kv" >"$PAY.extra" ;;
    bash)
      mkdir -p "$PAY/usr/bin"
      cp /usr/bin/bash "$PAY/usr/bin/bash"    # a real x86-64 ELF: arch is readable from the tree
      ln -s bash "$PAY/usr/bin/sh" ;;
    glibc)
      mkdir -p "$PAY/usr/lib64"
      # the real dynamic loader (this host's): an x86-64 ELF at EL9's path
      cp "$(readlink -f /lib64/ld-linux-x86-64.so.2)" "$PAY/usr/lib64/ld-linux-x86-64.so.2" ;;
    rocky-release)
      mkdir -p "$PAY/usr/lib" "$PAY/etc"
      cat >"$PAY/usr/lib/os-release" <<'EOF'
NAME="Rocky Linux"
VERSION="9.4 (Blue Onyx)"
ID="rocky"
ID_LIKE="rhel centos fedora"
VERSION_ID="9.4"
PLATFORM_ID="platform:el9"
PRETTY_NAME="Rocky Linux 9.4 (Blue Onyx)"
ANSI_COLOR="0;32"
LOGO="fedora-logo-icon"
CPE_NAME="cpe:/o:rocky:rocky:9::baseos"
HOME_URL="https://rockylinux.org/"
BUG_REPORT_URL="https://bugs.rockylinux.org/"
SUPPORT_END="2032-05-31"
ROCKY_SUPPORT_PRODUCT="Rocky-Linux-9"
ROCKY_SUPPORT_PRODUCT_VERSION="9.4"
REDHAT_SUPPORT_PRODUCT="Rocky Linux"
REDHAT_SUPPORT_PRODUCT_VERSION="9.4"
EOF
      ln -s ../usr/lib/os-release "$PAY/etc/os-release"     # as on EL9: a relative symlink
      echo "Rocky Linux release 9.4 (Blue Onyx)" >"$PAY/etc/rocky-release"
      echo "Derived from Red Hat Enterprise Linux 9.4" >"$PAY/etc/rocky-release-upstream"
      ln -s rocky-release "$PAY/etc/redhat-release"
      ln -s rocky-release "$PAY/etc/system-release"
      echo "cpe:/o:rocky:rocky:9::baseos" >"$PAY/etc/system-release-cpe" ;;
    NetworkManager)
      mkdir -p "$PAY/usr/sbin" "$PAY/usr/lib/systemd/system" "$PAY/etc/NetworkManager/system-connections" "$PAY/etc/NetworkManager/conf.d"
      printf '#!/bin/sh\n# Ferry fixture stand-in for NetworkManager\nexit 0\n' >"$PAY/usr/sbin/NetworkManager"
      chmod 0755 "$PAY/usr/sbin/NetworkManager"
      printf '[main]\n#plugins=keyfile,ifcfg-rh\n\n[logging]\n' >"$PAY/etc/NetworkManager/NetworkManager.conf"
      printf '[Unit]\nDescription=Network Manager\n\n[Service]\nExecStart=/usr/sbin/NetworkManager --no-daemon\n\n[Install]\nWantedBy=multi-user.target\n' \
        >"$PAY/usr/lib/systemd/system/NetworkManager.service"
      printf '%%dir /etc/NetworkManager/system-connections\n%%dir /etc/NetworkManager/conf.d\n' >"$PAY.extra" ;;
    open-vm-tools)
      mkdir -p "$PAY/usr/bin" "$PAY/usr/lib/systemd/system" "$PAY/etc/vmware-tools"
      printf '#!/bin/sh\n# Ferry fixture stand-in for vmtoolsd\nexit 0\n' >"$PAY/usr/bin/vmtoolsd"; chmod 0755 "$PAY/usr/bin/vmtoolsd"
      printf '[Unit]\nDescription=Service for virtual machines hosted on VMware\nConditionVirtualization=vmware\n\n[Service]\nExecStart=/usr/bin/vmtoolsd\n\n[Install]\nWantedBy=multi-user.target\n' \
        >"$PAY/usr/lib/systemd/system/vmtoolsd.service"
      printf '# tools.conf example\n' >"$PAY/etc/vmware-tools/tools.conf.example" ;;
    qemu-guest-agent)
      mkdir -p "$PAY/usr/bin" "$PAY/usr/lib/systemd/system" "$PAY/etc/sysconfig"
      printf '#!/bin/sh\n# Ferry fixture stand-in for qemu-ga\nexit 0\n' >"$PAY/usr/bin/qemu-ga"; chmod 0755 "$PAY/usr/bin/qemu-ga"
      printf '[Unit]\nDescription=QEMU Guest Agent\nBindsTo=dev-virtio\\x2dports-org.qemu.guest_agent.0.device\n\n[Service]\nExecStart=/usr/bin/qemu-ga\n\n[Install]\nWantedBy=dev-virtio\\x2dports-org.qemu.guest_agent.0.device\n' \
        >"$PAY/usr/lib/systemd/system/qemu-guest-agent.service"
      printf 'FILTER_RPC_ARGS="--allow-rpcs=guest-ping"\n' >"$PAY/etc/sysconfig/qemu-ga" ;;
    hyperv-daemons)
      mkdir -p "$PAY/usr/sbin" "$PAY/usr/lib/systemd/system"
      printf '#!/bin/sh\n# Ferry fixture stand-in for hypervkvpd\nexit 0\n' >"$PAY/usr/sbin/hypervkvpd"; chmod 0755 "$PAY/usr/sbin/hypervkvpd"
      printf '[Unit]\nDescription=Hyper-V KVP daemon\nConditionVirtualization=microsoft\n\n[Service]\nExecStart=/usr/sbin/hypervkvpd -n\n\n[Install]\nWantedBy=multi-user.target\n' \
        >"$PAY/usr/lib/systemd/system/hypervkvpd.service" ;;
    *) die "no payload for $name" ;;
  esac
}
# stand-in kernels (bzImage header with the version string), needed by the kernel-core payload
"$PY" "$H" bzimage "$WORK/vmlinuz-$KVER_NEW" "$KVER_NEW (mockbuild@iad1-prod-build001.bld.equ.rockylinux.org) (gcc (GCC) 11.4.1 20231218 (Red Hat 11.4.1-3), GNU ld version 2.35.2-43.el9) #1 SMP PREEMPT_DYNAMIC Wed May 1 19:11:28 UTC 2024"
"$PY" "$H" bzimage "$WORK/vmlinuz-$KVER_OLD" "$KVER_OLD (mockbuild@dal1-prod-builder001.bld.equ.rockylinux.org) (gcc (GCC) 11.2.1 20220127 (Red Hat 11.2.1-9), GNU ld version 2.35.2-17.el9) #1 SMP PREEMPT_DYNAMIC Wed May 25 21:01:57 UTC 2022"

: >"$WORK/packages.txt"
RPMS=()
i=0
for spec in "${PACKAGES[@]}"; do
  IFS='|' read -r name epoch version release arch <<<"$spec"
  i=$(( i + 1 ))
  PAY=$WORK/payload-$i
  mkdir -p "$PAY"
  : >"$PAY.extra"
  pkg_payload "$name" "$version-$release"
  { (cd "$PAY" && find . -mindepth 1 \( -type f -o -type l \) | sed 's|^\.||' | LC_ALL=C sort); cat "$PAY.extra"; } >"$PAY.files"
  {
    echo "Name: $name"
    [[ -n $epoch ]] && echo "Epoch: $epoch"
    echo "Version: $version"
    echo "Release: $release"
    echo "Summary: Ferry test fixture stand-in for $name"
    echo "License: MIT"
    echo "URL: https://ferry.invalid/fixtures/rpm-guest"
    [[ $arch == noarch ]] && echo "BuildArch: noarch"
    echo "AutoReqProv: no"
    echo
    echo "%description"
    echo "A stand-in for $name, built by Ferry's scripts/build-rpm-guest.sh for static inspection tests."
    echo
    echo "%install"
    echo "cp -a $PAY/. %{buildroot}/"
    echo
    echo "%files -f $PAY.files"
  } >"$RB/$name-$i.spec"
  rpmbuild -bb --quiet --target x86_64 \
    --define "_topdir $RB" --define "_vendor redhat" --define "_buildhost build.ferry.test" \
    --define 'debug_package %{nil}' --define '__os_install_post %{nil}' --define '_build_id_links none' \
    --define 'use_source_date_epoch_as_buildtime 1' --define 'clamp_mtime_to_source_date_epoch 1' \
    "$RB/$name-$i.spec" >&2
  RPMS+=("$RB/RPMS/$arch/$name-$version-$release.$arch.rpm")
  [[ -f ${RPMS[-1]} ]] || die "rpmbuild made no ${RPMS[-1]}"
  echo "$name ${epoch:+$epoch:}$version-$release $arch" >>"$WORK/packages.txt"
done
# Debian's rpm defaults to ~/.rpmdb: the guest's database path is given explicitly.
RPMDB=(--root "$MNT" --dbpath /var/lib/rpm --define '_db_backend sqlite')
rpm "${RPMDB[@]}" --initdb
rpm "${RPMDB[@]}" -i --nodeps --noscripts --nosignature "${RPMS[@]}" >&2 2> >(grep -v -e 'use Alien' -e 'assuming you know' >&2)
# The host's rpm must read it exactly as the inspector will (no --root, a plain --dbpath).
rpm -qa --dbpath "$MNT/var/lib/rpm" --qf '%{NAME} %|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE} %{ARCH}\n' | LC_ALL=C sort >"$WORK/rpm-qa.txt"
LC_ALL=C sort "$WORK/packages.txt" | diff -u - "$WORK/rpm-qa.txt" >&2 || die "rpm -qa does not list the packages installed"
[[ -f $MNT/var/lib/rpm/rpmdb.sqlite ]] || die "no rpmdb.sqlite in the guest"
rm -f "$MNT/var/lib/rpm/.rpm.lock"

# --- kernel modules: real files from Debian's kernel package ------------------
log "extracting kernel modules from $(basename "$KDEB")"
KX=$WORK/kdeb
mkdir -p "$KX"
dpkg-deb --fsys-tarfile "$KDEB" | tar -x -C "$KX" --wildcards \
  './lib/modules/*/kernel/drivers/*' './lib/modules/*/kernel/fs/*' './lib/modules/*/kernel/lib/*' \
  './lib/modules/*/kernel/crypto/*' './lib/modules/*/kernel/block/*' './lib/modules/*/kernel/net/*' \
  './lib/modules/*/kernel/arch/*' './lib/modules/*/modules.builtin' './lib/modules/*/modules.builtin.modinfo' \
  './lib/modules/*/modules.order'
DEBKDIR=$(ls -d "$KX"/lib/modules/*/ | head -n1); DEBKDIR=${DEBKDIR%/}
declare -A KO   # normalised name -> path relative to the module dir (kernel/…/x.ko)
while read -r rel; do
  b=${rel##*/}; b=${b%.ko}; KO[${b//-/_}]=$rel
done < <(cd "$DEBKDIR" && find kernel -name '*.ko')
closure() { # module names -> every module they need, one relative path per line, sorted
  local -A seen=()
  local queue=("$@") m n deps d
  while (( ${#queue[@]} )); do
    m=${queue[0]}; queue=("${queue[@]:1}")
    n=${m//-/_}
    [[ -n ${seen[$n]:-} ]] && continue
    seen[$n]=1
    if [[ -z ${KO[$n]:-} ]]; then
      grep -q "/${m}.ko\$\|/${n}.ko\$" "$DEBKDIR/modules.builtin" && continue
      die "module $m is neither in $(basename "$KDEB") nor built in"
    fi
    deps=$(modinfo -F depends "$DEBKDIR/${KO[$n]}")
    IFS=, read -ra d <<<"$deps"
    queue+=("${d[@]}")
  done
  for n in "${!seen[@]}"; do [[ -n ${KO[$n]:-} ]] && echo "${KO[$n]}"; done | LC_ALL=C sort
}
# shellcheck disable=SC2086
closure $MODULES_STORAGE $MODULES_NETWORK $MODULES_OTHER >"$WORK/mods.all"
# shellcheck disable=SC2086
closure $INITRD_NEW >"$WORK/mods.initrd.NEW"
# shellcheck disable=SC2086
closure $INITRD_OLD >"$WORK/mods.initrd.OLD"
grep -q virtio_blk "$WORK/mods.initrd.NEW" || die "virtio_blk not in the new initramfs list"
! grep -q virtio "$WORK/mods.initrd.OLD" || die "virtio in the old initramfs list"
# EL9 ships modules xz-compressed (kmod reads any check; the kernel's own needs crc32)
KZ=$WORK/kmods
while read -r rel; do
  mkdir -p "$KZ/${rel%/*}"
  xz -T0 --check=crc32 --lzma2=dict=1MiB -c "$DEBKDIR/$rel" >"$KZ/$rel.xz"
done <"$WORK/mods.all"
log "$(wc -l <"$WORK/mods.all") module files ($(du -sh "$KZ" | cut -f1) xz)"

install_modules() { # $1 = root dir, $2 = kernel version, $3 = list of relative .ko paths
  local root=$1 v=$2 list=$3 rel md
  md=$root/usr/lib/modules/$v
  mkdir -p "$md"
  while read -r rel; do
    mkdir -p "$md/${rel%/*}"
    cp "$KZ/$rel.xz" "$md/$rel.xz"
  done <"$list"
  cp "$DEBKDIR/modules.builtin" "$DEBKDIR/modules.builtin.modinfo" "$md/"
  grep -Fx -f "$list" "$DEBKDIR/modules.order" >"$md/modules.order" || true
  depmod -b "$root" "$v"
  [[ -s $md/modules.dep && -s $md/modules.alias ]] || die "depmod wrote no modules.dep/alias for $v in $root"
}

# --- kernels, initramfs, /boot -------------------------------------------------
"$PY" "$H" microcode "$WORK/GenuineIntel.bin"
EARLY=$WORK/early
mkdir -p "$EARLY/kernel/x86/microcode"
echo 1 >"$EARLY/early_cpio"
cp "$WORK/GenuineIntel.bin" "$EARLY/kernel/x86/microcode/GenuineIntel.bin"
newc() { # $1 = dir -> newc cpio on stdout, as dracut makes it (root-owned, sorted, reproducible)
  (cd "$1" && find . -mindepth 1 -print0 | LC_ALL=C sort -z | cpio -o -H newc -0 --quiet -R 0:0 --reproducible)
}
newc "$EARLY" >"$WORK/early.cpio"
EARLY_BYTES=$(stat -c %s "$WORK/early.cpio")

make_initramfs() { # $1 = kernel version, $2 = NEW|OLD, $3 = zstd|xz
  local v=$1 key=$2 comp=$3 st=$WORK/initrd-$2 out=$MNT/boot/initramfs-$1.img
  mkdir -p "$st"/{usr/bin,usr/sbin,usr/lib/systemd,usr/lib64,usr/lib/dracut,etc/cmdline.d,dev,proc,sys,run,var,tmp,root,sysroot}
  ln -s usr/bin "$st/bin"; ln -s usr/sbin "$st/sbin"; ln -s usr/lib "$st/lib"; ln -s usr/lib64 "$st/lib64"
  printf '#!/bin/sh\n# Ferry fixture stand-in for systemd\n' >"$st/usr/lib/systemd/systemd"; chmod 0755 "$st/usr/lib/systemd/systemd"
  ln -s usr/lib/systemd/systemd "$st/init"
  { sed 's/^PRETTY_NAME=.*/PRETTY_NAME="Rocky Linux 9.4 (Blue Onyx) dracut-057-53.git20240104.el9 (Initramfs)"/' "$MNT/usr/lib/os-release"
    echo 'VARIANT="Initramfs"'; echo 'VARIANT_ID="initramfs"'; } >"$st/usr/lib/initrd-release"
  ln -s ../usr/lib/initrd-release "$st/etc/initrd-release"
  ln -s initrd-release "$st/etc/os-release"
  printf " --kver '%s' -f\n" "$v" >"$st/usr/lib/dracut/build-parameter.txt"
  printf '%s\n' bash systemd systemd-initrd i18n drm kernel-modules kernel-modules-extra rootfs-block udev-rules dracut-systemd usrmount base fs-lib shutdown >"$st/usr/lib/dracut/modules.txt"
  install_modules "$st" "$v" "$WORK/mods.initrd.$key"
  case $comp in
    zstd) newc "$st" | zstd -q -15 -T0 >"$WORK/main.cpio.$comp" ;;
    xz)   newc "$st" | xz -T0 --check=crc32 --lzma2=dict=1MiB >"$WORK/main.cpio.$comp" ;;
  esac
  cat "$WORK/early.cpio" "$WORK/main.cpio.$comp" >"$out"
  rm -f "$WORK/main.cpio.$comp"
  # check: an early cpio, then the compressed archive holding exactly the listed modules
  [[ $(head -c 6 "$out") == 070701 ]] || die "initramfs for $v does not start with a newc cpio"
  local got want
  got=$(tail -c +$(( EARLY_BYTES + 1 )) "$out" | "$comp" -dc | cpio -it --quiet | sed -n 's|.*/\([^/]*\)\.ko\.xz$|\1|p' | LC_ALL=C sort | tr '\n' ' ')
  want=$(sed 's|.*/||; s|\.ko$||' "$WORK/mods.initrd.$key" | LC_ALL=C sort | tr '\n' ' ')
  [[ $got == "$want" ]] || die "initramfs $v holds [$got], expected [$want]"
  log "initramfs-$v.img: early cpio $EARLY_BYTES B + $comp, $(stat -c %s "$out") B, modules: $got"
}

log "kernels $KVER_NEW (default) and $KVER_OLD"
for key in NEW OLD; do
  ver_var=KVER_$key; v=${!ver_var}
  cp "$WORK/vmlinuz-$v" "$MNT/boot/vmlinuz-$v"
  printf '%s  vmlinuz-%s\n' "$(sha512sum "$MNT/boot/vmlinuz-$v" | cut -d' ' -f1)" "$v" >"$MNT/boot/.vmlinuz-$v.hmac"
  printf 'ffffffff81000000 T _text\nffffffff81000000 T startup_64\nffffffff82e00000 D linux_banner\n' >"$MNT/boot/System.map-$v"
  printf '# Linux/x86_64 %s Kernel Configuration\nCONFIG_64BIT=y\nCONFIG_MODULES=y\nCONFIG_MODULE_COMPRESS_XZ=y\nCONFIG_VIRTIO_BLK=m\nCONFIG_VIRTIO_NET=m\nCONFIG_SCSI_VIRTIO=m\nCONFIG_SATA_AHCI=m\nCONFIG_ATA_PIIX=m\nCONFIG_E1000=m\nCONFIG_VMXNET3=m\nCONFIG_XFS_FS=m\nCONFIG_EXT4_FS=m\nCONFIG_EFI_STUB=y\n' \
    "${v%%-*}" >"$MNT/boot/config-$v"
  install_modules "$MNT" "$v" "$WORK/mods.all"
done
make_initramfs "$KVER_NEW" NEW zstd
make_initramfs "$KVER_OLD" OLD xz

# BLS entries, as kernel-install writes them on EL9 (linux/initrd relative to /boot)
bls() { # $1 = kernel version, $2 = options
  cat >"$MNT/boot/loader/entries/$MACHINE_ID-$1.conf" <<EOF
title Rocky Linux ($1) 9.4 (Blue Onyx)
version $1
linux /vmlinuz-$1
initrd /initramfs-$1.img \$tuned_initrd
options $2 \$tuned_params
grub_users \$grub_users
grub_arg --unrestricted
grub_class rocky
EOF
}
bls "$KVER_NEW" "$CMDLINE_NEW"
bls "$KVER_OLD" "$CMDLINE_OLD"

cat >"$MNT/boot/grub2/grub.cfg" <<EOF
#
# DO NOT EDIT THIS FILE
#
# It is automatically generated by grub2-mkconfig using templates
# from /etc/grub.d and settings from /etc/default/grub
#

### BEGIN /etc/grub.d/00_header ###
set pager=1

if [ -f \${config_directory}/grubenv ]; then
  load_env -f \${config_directory}/grubenv
elif [ -s \$prefix/grubenv ]; then
  load_env
fi
if [ "\${next_entry}" ] ; then
   set default="\${next_entry}"
   set next_entry=
   save_env next_entry
   set boot_once=true
else
   set default="\${saved_entry}"
fi

if [ x"\${feature_menuentry_id}" = xy ]; then
  menuentry_id_option="--id"
else
  menuentry_id_option=""
fi

export menuentry_id_option

if [ "\${prev_saved_entry}" ]; then
  set saved_entry="\${prev_saved_entry}"
  save_env saved_entry
  set prev_saved_entry=
  save_env prev_saved_entry
  set boot_once=true
fi

function savedefault {
  if [ -z "\${boot_once}" ]; then
    saved_entry="\${chosen}"
    save_env saved_entry
  fi
}

function load_video {
  if [ x\$feature_all_video_module = xy ]; then
    insmod all_video
  else
    insmod efi_gop
    insmod efi_uga
    insmod ieee1275_fb
    insmod vbe
    insmod vga
    insmod video_bochs
    insmod video_cirrus
  fi
}

terminal_output console
if [ x\$feature_timeout_style = xy ] ; then
  set timeout_style=menu
  set timeout=5
# Fallback normal timeout code in case the timeout_style feature is
# unavailable.
else
  set timeout=5
fi
### END /etc/grub.d/00_header ###

### BEGIN /etc/grub.d/00_tuned ###
set tuned_params=""
set tuned_initrd=""
### END /etc/grub.d/00_tuned ###

### BEGIN /etc/grub.d/10_linux ###
insmod part_gpt
insmod ext2
search --no-floppy --fs-uuid --set=root $BOOT_UUID
insmod blscfg
blscfg
### END /etc/grub.d/10_linux ###

### BEGIN /etc/grub.d/30_uefi-firmware ###
if [ "\$grub_platform" = "efi" ]; then
	menuentry 'UEFI Firmware Settings' \$menuentry_id_option 'uefi-firmware' {
		fwsetup
	}
fi
### END /etc/grub.d/30_uefi-firmware ###
EOF
# grubenv: the default is the NEWER kernel, named by its BLS id (file name without .conf)
grub-editenv "$MNT/boot/grub2/grubenv" create
grub-editenv "$MNT/boot/grub2/grubenv" set "saved_entry=$MACHINE_ID-$KVER_NEW" menu_auto_hide=1 boot_success=1 boot_indeterminate=0
[[ $(stat -c %s "$MNT/boot/grub2/grubenv") -eq 1024 ]] || die "grubenv is not 1024 bytes"

# --- /etc -------------------------------------------------------------------------
log "guest configuration"
echo "$HOSTNAME_" >"$MNT/etc/hostname"
echo "$MACHINE_ID" >"$MNT/etc/machine-id"
cat >"$MNT/etc/hosts" <<'EOF'
127.0.0.1   localhost localhost.localdomain localhost4 localhost4.localdomain4
::1         localhost localhost.localdomain localhost6 localhost6.localdomain6
EOF
cat >"$MNT/etc/fstab" <<EOF

#
# /etc/fstab
# Created by anaconda on Tue May 14 09:12:41 2024
#
# Accessible filesystems, by reference, are maintained under '/dev/disk/'.
# See man pages fstab(5), findfs(8), mount(8) and/or blkid(8) for more info.
#
# After editing this file, run 'systemctl daemon-reload' to update systemd
# units generated from this file.
#
UUID=$ROOT_UUID /                       xfs     defaults        0 0
LABEL=$BOOT_LABEL                                  /boot                   ext4    defaults        1 2
PARTUUID=$P1_PARTUUID /boot/efi vfat umask=0077,shortname=winnt 0 2
/dev/mapper/luks-$LUKS_UUID /data xfs defaults,nofail,x-systemd.device-timeout=10s 0 0
EOF
echo "luks-$LUKS_UUID UUID=$LUKS_UUID none discard,nofail" >"$MNT/etc/crypttab"; chmod 0600 "$MNT/etc/crypttab"
mkdir -p "$MNT/etc/selinux" "$MNT/etc/default" "$MNT/etc/sysconfig" "$MNT/etc/kernel"
printf 'SELINUX=enforcing\nSELINUXTYPE=targeted\n' >"$MNT/etc/selinux/config"
cat >"$MNT/etc/default/grub" <<EOF
GRUB_TIMEOUT=5
GRUB_DISTRIBUTOR="\$(sed 's, release .*\$,,g' /etc/system-release)"
GRUB_DEFAULT=saved
GRUB_DISABLE_SUBMENU=true
GRUB_TERMINAL_OUTPUT="console"
GRUB_CMDLINE_LINUX="crashkernel=1G-4G:192M,4G-64G:256M,64G-:512M console=tty0 console=ttyS0,115200n8 net.ifnames=0 rhgb quiet"
GRUB_DISABLE_RECOVERY="true"
GRUB_ENABLE_BLSCFG=true
EOF
echo "$CMDLINE_NEW" >"$MNT/etc/kernel/cmdline"
printf '# Created by anaconda\n' >"$MNT/etc/sysconfig/network"
printf 'UPDATEDEFAULT=yes\nDEFAULTKERNEL=kernel-core\n' >"$MNT/etc/sysconfig/kernel"
printf 'LANG="en_US.UTF-8"\n' >"$MNT/etc/locale.conf"
ln -s ../usr/share/zoneinfo/UTC "$MNT/etc/localtime"
# services enabled as systemctl would link them
mkdir -p "$MNT/etc/systemd/system/multi-user.target.wants"
for u in NetworkManager vmtoolsd hypervkvpd; do
  ln -s "/usr/lib/systemd/system/$u.service" "$MNT/etc/systemd/system/multi-user.target.wants/$u.service"
done

# network, form 1: NetworkManager keyfile (static, MAC-bound); NM refuses files not 0600
mkdir -p "$MNT/etc/NetworkManager/system-connections"
read -r dns1 dns2 <<<"$NM_DNS"
cat >"$MNT/etc/NetworkManager/system-connections/$NM_IF.nmconnection" <<EOF
[connection]
id=$NM_IF
uuid=5fb06bd0-0bb0-7ffb-45f1-d6edd65f3e03
type=ethernet
autoconnect-priority=-999
interface-name=$NM_IF
timestamp=1715678000

[ethernet]
mac-address=${NM_MAC^^}

[ipv4]
address1=$NM_ADDR,$NM_GW
dns=$dns1;$dns2;
dns-search=example.com;
method=manual

[ipv6]
addr-gen-mode=eui64
method=ignore

[proxy]
EOF
chmod 0600 "$MNT/etc/NetworkManager/system-connections/$NM_IF.nmconnection"
# form 2: legacy ifcfg (dhcp, HWADDR); NAME is not the device name
mkdir -p "$MNT/etc/sysconfig/network-scripts"
cat >"$MNT/etc/sysconfig/network-scripts/ifcfg-$IFCFG_IF" <<EOF
# Carried over from an older release
TYPE=Ethernet
BOOTPROTO=dhcp
DEFROUTE=yes
IPV6INIT=no
NAME="System $IFCFG_IF"
UUID=9c92fad9-6ecb-3e6c-eb4d-8a47c6f50c04
DEVICE=$IFCFG_IF
HWADDR=${IFCFG_MAC^^}
ONBOOT=yes
EOF
printf 'NetworkManager stores new network profiles in keyfile format in the\n/etc/NetworkManager/system-connections/ directory.\n' \
  >"$MNT/etc/sysconfig/network-scripts/readme-ifcfg-rh.txt"
# form 3: netplan (one static, renamed by MAC; one dhcp)
mkdir -p "$MNT/etc/netplan"
cat >"$MNT/etc/netplan/01-netcfg.yaml" <<EOF
# Ferry fixture: netplan on an rpm-family guest
network:
  version: 2
  renderer: networkd
  ethernets:
    $NP_IF:
      match:
        macaddress: "$NP_MAC"
      set-name: $NP_IF
      addresses:
        - $NP_ADDR
      routes:
        - to: default
          via: $NP_GW
      nameservers:
        addresses: [$NP_DNS]
    $NP_DHCP_IF:
      dhcp4: true
EOF
chmod 0600 "$MNT/etc/netplan/01-netcfg.yaml"
# form 4: systemd-networkd (.link renames by MAC, .network configures statically)
mkdir -p "$MNT/etc/systemd/network"
cat >"$MNT/etc/systemd/network/10-$ND_IF.link" <<EOF
[Match]
MACAddress=$ND_MAC

[Link]
Name=$ND_IF
EOF
cat >"$MNT/etc/systemd/network/20-$ND_IF.network" <<EOF
[Match]
Name=$ND_IF

[Network]
Address=$ND_ADDR
Gateway=$ND_GW
DNS=$ND_DNS
EOF
# form 5: udev persistent-net rule (a binding, no address configuration)
mkdir -p "$MNT/etc/udev/rules.d"
cat >"$MNT/etc/udev/rules.d/70-persistent-net.rules" <<EOF
# This file was automatically generated by the /lib/udev/write_net_rules
# program, run by the persistent-net-generator.rules rules file.
#
# You can modify it, as long as you keep each rule on a single
# line, and change only the value of the NAME= key.

# PCI device 0x8086:0x100e (e1000)
SUBSYSTEM=="net", ACTION=="add", DRIVERS=="?*", ATTR{address}=="$UDEV_MAC", ATTR{type}=="1", KERNEL=="eth*", NAME="$UDEV_IF"
EOF

# --- ESP: shim + GRUB EFI image + the EL9 stub config (mtools: no vfat in this kernel) ---
log "ESP"
export MTOOLS_SKIP_CHECK=1
grub-mkimage -O x86_64-efi -o "$WORK/grubx64.efi" -p /EFI/rocky \
  part_gpt part_msdos fat ext2 xfs normal configfile search search_fs_uuid search_label \
  linux loadenv echo test regexp all_video efi_gop gzio reboot halt
dpkg-deb --fsys-tarfile "$SHIMDEB" | tar -x -O ./usr/lib/shim/shimx64.efi.signed >"$WORK/shimx64.efi"
[[ $(head -c 2 "$WORK/shimx64.efi") == MZ && $(head -c 2 "$WORK/grubx64.efi") == MZ ]] || die "EFI images are not PE files"
cat >"$WORK/esp-grub.cfg" <<EOF
search --no-floppy --fs-uuid --set=dev $BOOT_UUID
set prefix=(\$dev)/grub2

export \$prefix
configfile \$prefix/grub.cfg
EOF
printf 'shimx64.efi,Rocky Linux,,This is the boot entry for Rocky Linux\r\n' | iconv -f UTF-8 -t UTF-16 >"$WORK/BOOTX64.CSV"
mtool() { # mtools on a loop device: drop its harmless "Could not get geometry" complaint
  local rc=0
  "$@" 2>"$WORK/mtools.err" || rc=$?
  grep -v 'Could not get geometry' "$WORK/mtools.err" >&2 || true
  return "$rc"
}
mtool mmd -i "$ESP_DEV" ::/EFI ::/EFI/rocky ::/EFI/BOOT
mtool mcopy -i "$ESP_DEV" "$WORK/shimx64.efi" ::/EFI/rocky/shimx64.efi
mtool mcopy -i "$ESP_DEV" "$WORK/grubx64.efi" ::/EFI/rocky/grubx64.efi
mtool mcopy -i "$ESP_DEV" "$WORK/esp-grub.cfg" ::/EFI/rocky/grub.cfg
mtool mcopy -i "$ESP_DEV" "$WORK/BOOTX64.CSV" ::/EFI/rocky/BOOTX64.CSV
mtool mcopy -i "$ESP_DEV" "$WORK/shimx64.efi" ::/EFI/BOOT/BOOTX64.EFI
mtool mdir -i "$ESP_DEV" -/ ::/EFI >&2

# --- checks, then release everything and make the image sparse ----------------
for n in 1 2 3 4; do
  dev_var=(x "$ESP_DEV" "$BOOT_DEV" "$ROOT_DEV" "$LUKS_DEV"); dev=${dev_var[n]}
  log "p$n: $(blkid -p -o export "$dev" | grep -E '^(TYPE|UUID|LABEL)=' | tr '\n' ' ')"
done
[[ $(blkid -p -s TYPE -o value "$LUKS_DEV") == crypto_LUKS ]] || die "p4 is not LUKS"
[[ $(blkid -p -s UUID -o value "$ESP_DEV") == "$ESP_UUID" ]] || die "ESP id is not $ESP_UUID"

fstrim "$MNT/boot" >&2 2>/dev/null || true
fstrim "$MNT" >&2 2>/dev/null || log "fstrim not possible here; image is less sparse"
umount "$MNT/boot"; umount "$MNT"; MOUNTS=()
e2fsck -fn "$BOOT_DEV" >&2 || die "e2fsck found errors on /boot"
xfs_repair -n "$ROOT_DEV" >&2 2>/dev/null || die "xfs_repair found errors on /"
for l in "${LOOPS[@]}"; do losetup -d "$l"; done
LOOPS=()

sfdisk --verify "$IMG" >&2 || die "partition table does not verify"
export DISK_BYTES; DISK_BYTES=$(stat -c %s "$IMG")
export DISK_SHA256; DISK_SHA256=$(sha256sum "$IMG" | cut -d' ' -f1)
"$PY" "$H" manifest "$WORK" "$TMP/manifest.json"
rm -rf --one-file-system "$WORK"
chmod 0444 "$IMG" "$TMP/manifest.json"
date -u +%Y-%m-%dT%H:%M:%SZ >"$TMP/done"
sync -f "$IMG" 2>/dev/null || sync
mv -T "$TMP" "$OUT"
FINISHED=1

log "built $OUT in $(( $(date +%s) - START_TS )) s ($(du -h "$OUT/disk.raw" | cut -f1) allocated of ${DISK_SIZE_MIB} MiB)"
print_result
