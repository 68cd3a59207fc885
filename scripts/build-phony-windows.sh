#!/usr/bin/env bash
# build-phony-windows.sh — build (once, cached) disk images that look like
# Windows installations to a static inspector, for `ferry inspect` tests. No
# Windows code or image is involved: the NTFS file systems are made with
# mkntfs, the registry hives are written with hivex's tools, HAL and kernel are
# resource-only PE files built with mingw binutils whose version resources
# name the real variants (halmacpi.dll, ntkrpamp.exe, …). Nothing boots.
#
# Contract
#   stdout: four lines, absolute paths below
#           ${FERRY_FIXTURES:-/var/cache/ferry/fixtures}/phony-windows-<hash>/
#           where <hash> = first 12 hex digits of sha256(this script):
#             win2003.raw          Windows Server 2003 SP2, 32-bit
#             win2019.raw          Windows Server 2019, 64-bit
#             win2019-damaged.raw  win2019.raw whose SOFTWARE hive is cut in half
#             manifest.json        every value an inspection should find (last line)
#   stderr: progress.
#   exit 0 with the cached paths at once when the `done` stamp exists.
#   Runs as root (FUSE mounts of ntfs-3g), reads no stdin, needs no network.
#   Attaches no loop device: file systems are made in partition-sized files,
#   filled through ntfs-3g (which opens a file as its device) and copied into
#   the disk image.
#
# Disks (MBR):
#   win2003.raw  p1 NTFS at sector 63 (CHS-aligned, as 2003 setup did), active:
#                boot.ini, ntldr, pagefile.sys, WINDOWS\system32 (lower-case, as
#                2003 has it), "Documents and Settings", "Program Files".
#                HAL halmacpi.dll as hal.dll; kernels ntkrnlmp.exe as ntoskrnl.exe
#                and ntkrpamp.exe as ntkrnlpa.exe; boot.ini turns on DEP, so PAE.
#   win2019.raw  p1 NTFS "System Reserved" (bootmgr, Boot\BCD), active;
#                p2 NTFS "Windows": Windows\System32, Users, Program Files,
#                Program Files (x86), ProgramData. HAL hal.dll, kernel ntkrnlmp.exe.
#                Select\Current = 2: ControlSet001 is a stale set with another
#                computer name, so reading the wrong set shows.
set -euo pipefail
exec </dev/null
# Everything goes to stderr; fd 3 is the real stdout, used only for the result.
exec 3>&1 1>&2

START_TS=$(date +%s)
log() { printf '[build-phony-windows %4ss] %s\n' "$(( $(date +%s) - START_TS ))" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

SCRIPT_PATH=$(readlink -f "${BASH_SOURCE[0]}")
HASH=$(sha256sum "$SCRIPT_PATH" | cut -c1-12)
FIXTURES=$(realpath -m "${FERRY_FIXTURES:-/var/cache/ferry/fixtures}")
OUT="$FIXTURES/phony-windows-$HASH"
RESULTS=(win2003.raw win2019.raw win2019-damaged.raw manifest.json)

print_results() { local f; for f in "${RESULTS[@]}"; do echo "$OUT/$f" >&3; done; }

if [[ -f $OUT/done ]]; then print_results; exit 0; fi

[[ $(id -u) -eq 0 ]] || die "run as root (ntfs-3g mounts)"
PY=/usr/bin/python3
for tool in sfdisk mkntfs ntfslabel ntfs-3g hivexregedit hivexsh cpp flock dd \
            i686-w64-mingw32-windres i686-w64-mingw32-ld x86_64-w64-mingw32-windres x86_64-w64-mingw32-ld; do
  command -v "$tool" >/dev/null || die "missing tool: $tool (run scripts/setup.sh)"
done
[[ -x $PY ]] || die "missing $PY (run scripts/setup.sh)"

mkdir -p "$FIXTURES"
# One builder per hash at a time; a second caller waits, then finds the result.
exec 9>"$FIXTURES/.phony-windows-$HASH.lock"
flock 9
if [[ -f $OUT/done ]]; then print_results; exit 0; fi

# --- clean up what a crashed build may have left (we hold the lock) ----------
release_under() { # $1 = directory: unmount everything below it
  local dir=$1 m
  while read -r m; do
    [[ -n $m ]] && { umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; }
  done < <(findmnt -rn -o TARGET | awk -v p="$dir/" 'index($0 "/", p) == 1' | sort -r)
}
for stale in "$FIXTURES"/.phony-windows-"$HASH".tmp.*; do
  [[ -d $stale ]] || continue
  log "removing stale build dir $stale"
  release_under "$stale"
  rm -rf --one-file-system "$stale"
done
[[ -d $OUT ]] && rm -rf --one-file-system "$OUT"

TMP=$(mktemp -d "$FIXTURES/.phony-windows-$HASH.tmp.XXXXXX")
chmod 0755 "$TMP"
STAGE=$TMP/stage
MNT=$TMP/mnt
FINISHED=0

cleanup() {
  local rc=$?
  set +e
  [[ -d $TMP ]] && release_under "$TMP"
  if [[ $FINISHED -ne 1 && -d $TMP ]]; then
    rm -rf --one-file-system "$TMP"
    log "build failed (exit $rc); temp dir removed"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the guests' contents, from one description --------------------------------
# A python generator writes, per disk, the file trees (placeholders), .reg files
# for the hives, .rc files for the PE files, the partition layout, and the
# values an inspection must find (expect.json): registry and manifest come from
# the same data, so the tests compare against this script's own truth.
mkdir -p "$STAGE"
log "generating trees, .reg and .rc files"
"$PY" - "$STAGE" <<'PY'
import json, os, struct, sys

stage = sys.argv[1]
NET = '{4D36E972-E325-11CE-BFC1-08002BE10318}'
HDC = '{4D36E96A-E325-11CE-BFC1-08002BE10318}'
SCSI = '{4D36E97B-E325-11CE-BFC1-08002BE10318}'
SYSTEMCLASS = '{4D36E97D-E325-11CE-BFC1-08002BE10318}'

# ---- an empty hive, from the regf format: base block + one hive bin holding
# the root key (nk), its security descriptor (sk) and one free cell.
def empty_hive(root_name):
    def cell(payload):
        size = (4 + len(payload) + 7) & ~7
        return struct.pack('<i', -size) + payload + b'\0' * (size - 4 - len(payload))
    def sid(authority, subs):
        return struct.pack('<BB', 1, len(subs)) + authority.to_bytes(6, 'big') + b''.join(struct.pack('<I', s) for s in subs)
    def ace(mask, s):  # ACCESS_ALLOWED_ACE, inherited by subkeys
        return struct.pack('<BBHI', 0, 0x02, 8 + len(s), mask) + s
    everyone, admins, system = sid(1, [0]), sid(5, [32, 544]), sid(5, [18])
    aces = ace(0x20019, everyone) + ace(0xF003F, admins) + ace(0xF003F, system)
    acl = struct.pack('<BBHHH', 2, 0, 8 + len(aces), 3, 0) + aces
    owner = 20
    group = owner + len(admins)
    dacl = group + len(system)
    sd = struct.pack('<BBHIIII', 1, 0, 0x8004, owner, group, 0, dacl) + admins + system + acl  # self-relative, DACL present
    name = root_name.encode('ascii')
    nk_off = 0x20                                   # offsets count from the first hive bin
    sk_off = nk_off + ((4 + 0x4C + len(name) + 7) & ~7)
    NONE = 0xFFFFFFFF
    nk = b'nk' + struct.pack('<HQIIIIIIIIIIIIIIIHH',
        0x2C,               # KEY_HIVE_ENTRY | KEY_NO_DELETE | KEY_COMP_NAME
        0, 0, NONE,         # timestamp, access bits, parent
        0, 0, NONE, NONE,   # subkeys, volatile subkeys, their lists
        0, NONE,            # values, value list
        sk_off, NONE,       # security, class name
        0, 0, 0, 0, 0,      # max subkey name/class/value name/value data lengths, workvar
        len(name), 0) + name
    sk = b'sk' + struct.pack('<HIIII', 0, sk_off, sk_off, 1, len(sd)) + sd  # a ring of one, used once
    cells = cell(nk) + cell(sk)
    free = 4096 - 0x20 - len(cells)
    hbin = b'hbin' + struct.pack('<IIQQI', 0, 4096, 0, 0, 0) + cells + struct.pack('<i', free) + b'\0' * (free - 4)
    base = bytearray(4096)
    # regf, sequence 1/1 (clean), time, version 1.3, primary file, direct memory load, root, bins size, clustering
    base[0:0x30] = b'regf' + struct.pack('<IIQIIIIIII', 1, 1, 0, 1, 3, 0, 1, nk_off, len(hbin), 1)
    csum = 0
    for i in range(0, 508, 4):
        csum ^= struct.unpack_from('<I', base, i)[0]
    struct.pack_into('<I', base, 508, csum)
    return bytes(base) + hbin

# ---- .reg text
def reg_string(s):
    return '"' + s.replace('\\', '\\\\').replace('"', '\\"') + '"'
def reg_hex(t, data):
    return 'hex(%x):' % t + ','.join('%02x' % b for b in data)
def reg_value(v):
    if isinstance(v, bool):
        raise TypeError('bool')
    if isinstance(v, int):
        return 'dword:%08x' % v
    if isinstance(v, str):
        return reg_string(v)
    kind, x = v
    if kind == 'expand':
        return reg_hex(2, (x + '\0').encode('utf-16le'))
    if kind == 'multi':
        return reg_hex(7, ''.join(s + '\0' for s in x).encode('utf-16le') + b'\0\0')
    if kind == 'qword':
        return reg_hex(0xb, struct.pack('<Q', x))
    if kind == 'binary':
        return reg_hex(3, x)
    raise ValueError(kind)

class Reg:
    """keys in the order given; every parent key is written before its children (hivexregedit needs that)"""
    def __init__(self, prefix):
        self.prefix = prefix
        self.keys = {}
    def key(self, path, values=None):
        parts = path.split('\\')
        for i in range(1, len(parts)):
            self.keys.setdefault('\\'.join(parts[:i]), {})
        self.keys.setdefault(path, {}).update(values or {})
    def text(self):
        out = ['Windows Registry Editor Version 5.00', '']
        for path, values in self.keys.items():
            out.append('[%s\\%s]' % (self.prefix, path))
            for name, v in values.items():
                out.append('%s=%s' % (reg_string(name), reg_value(v)))
            out.append('')
        return '\r\n'.join(out) + '\r\n'

def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
        f.write(data if isinstance(data, bytes) else data.encode())

# ---- PE version resources
def rc(original, version, description, internal=None):
    nums = version.split('.')
    return '''1 VERSIONINFO
FILEVERSION %(c)s
PRODUCTVERSION %(c)s
FILEOS 0x40004
FILETYPE 0x3
BEGIN
  BLOCK "StringFileInfo"
  BEGIN
    BLOCK "040904B0"
    BEGIN
      VALUE "CompanyName", "Microsoft Corporation"
      VALUE "FileDescription", "%(desc)s"
      VALUE "FileVersion", "%(v)s"
      VALUE "InternalName", "%(internal)s"
      VALUE "LegalCopyright", "phony file for Ferry tests"
      VALUE "OriginalFilename", "%(orig)s"
      VALUE "ProductName", "Microsoft Windows Operating System"
      VALUE "ProductVersion", "%(v)s"
    END
  END
  BLOCK "VarFileInfo"
  BEGIN
    VALUE "Translation", 0x409, 1200
  END
END
''' % {'c': ','.join(nums), 'v': version, 'desc': description, 'orig': original, 'internal': internal or original}

# ---- the two guests
def service(name, start, type_, group=None, image=None, error=1, extra=None):
    return {'name': name, 'start': start, 'type': type_, 'group': group, 'imagePath': image, 'error': error, 'extra': extra or {}}

def expected_driver(s):
    d = {'name': s['name'], 'start': s['start']}
    if s['group']: d['group'] = s['group']
    if s['imagePath']: d['imagePath'] = s['imagePath'][1] if isinstance(s['imagePath'], tuple) else s['imagePath']
    d['type'] = s['type']
    return d

W2003 = {
    'name': 'win2003', 'systemRoot': '/WINDOWS', 'sys32': 'WINDOWS/system32', 'partition': 1,
    'partitions': [  # number, start sector, sectors, label, serial, role
        (1, 63, 131072, 'W2K3-SYS', '4E5446455259A003', 'windows'),
    ],
    'hostname': 'FERRY-W2K3', 'arch_reg': 'x86', 'arch': 'i386',
    'controlSet': 1, 'staleSet': None,
    'currentVersion': {
        'ProductName': 'Microsoft Windows Server 2003', 'CurrentVersion': '5.2', 'CurrentBuildNumber': '3790',
        'CurrentBuild': '3790.srv03_sp2_rtm.070216-1710', 'CSDVersion': 'Service Pack 2', 'CSDBuildNumber': '2',
        'CurrentType': 'Multiprocessor Free', 'SystemRoot': 'C:\\WINDOWS', 'RegisteredOwner': 'Ferry',
        'RegisteredOrganization': 'Ferry Test Lab', 'SoftwareType': 'SYSTEM', 'InstallDate': 0x45F1A2B0,
        'PathName': 'C:\\WINDOWS', 'ProductId': '69713-640-0000000-45000',
    },
    'expect': {'productName': 'Microsoft Windows Server 2003', 'version': '5.2', 'build': '3790', 'patchLevel': 'Service Pack 2'},
    'pe': [  # arch, kind, guest file, OriginalFilename, version, description
        ('i686', 'dll', 'hal.dll', 'halmacpi.dll', '5.2.3790.3959', 'Hardware Abstraction Layer DLL'),
        ('i686', 'exe', 'ntoskrnl.exe', 'ntkrnlmp.exe', '5.2.3790.4354', 'NT Kernel & System'),
        ('i686', 'exe', 'ntkrnlpa.exe', 'ntkrpamp.exe', '5.2.3790.4354', 'NT Kernel & System'),
    ],
    'hal': {'file': '/WINDOWS/system32/hal.dll', 'variant': 'halmacpi.dll', 'acpi': True, 'multiprocessor': True, 'how': 'version-resource', 'fileVersion': '5.2.3790.3959'},
    'kernel': {'file': '/WINDOWS/system32/ntkrnlpa.exe', 'variant': 'ntkrpamp.exe', 'multiprocessor': True, 'pae': True, 'how': 'version-resource', 'fileVersion': '5.2.3790.4354'},
    'halHardwareId': 'acpiapic_mp',
    'services': [
        service('ACPI', 0, 1, 'Boot Bus Extender', 'system32\\DRIVERS\\ACPI.sys'),
        service('pci', 0, 1, 'Boot Bus Extender', 'system32\\DRIVERS\\pci.sys'),
        service('PartMgr', 0, 1, 'Filter', 'system32\\DRIVERS\\partmgr.sys'),
        service('atapi', 0, 1, 'SCSI miniport', 'system32\\DRIVERS\\atapi.sys'),
        service('intelide', 0, 1, 'System Bus Extender', 'system32\\DRIVERS\\intelide.sys'),
        service('pciide', 0, 1, 'Boot Bus Extender', 'system32\\DRIVERS\\pciide.sys'),
        service('LSI_SAS', 0, 1, 'SCSI miniport', 'system32\\DRIVERS\\lsi_sas.sys'),
        service('vmscsi', 3, 1, 'SCSI miniport', 'system32\\DRIVERS\\vmscsi.sys'),
        service('Disk', 0, 1, 'SCSI Class', 'system32\\DRIVERS\\disk.sys'),
        service('E1000', 3, 1, 'NDIS', 'system32\\DRIVERS\\E1000325.sys'),
        service('vmxnet3ndis5', 3, 1, 'NDIS', 'system32\\DRIVERS\\vmxnet3n51x86.sys'),
        service('NdisWan', 3, 1, 'NDIS', 'system32\\DRIVERS\\ndiswan.sys'),
        service('Tcpip', 1, 1, 'PNP_TDI', 'system32\\DRIVERS\\tcpip.sys'),
        service('VMTools', 2, 16, None, '"C:\\Program Files\\VMware\\VMware Tools\\vmtoolsd.exe"'),
        service('Eventlog', 2, 32, 'Event log', ('expand', '%SystemRoot%\\system32\\services.exe')),
    ],
    'bootStorage': ['atapi', 'Disk', 'intelide', 'LSI_SAS', 'pciide'],
    'critical': [  # id, service, class
        ('pci#ven_8086&dev_7111', 'intelide', HDC),
        ('pci#cc_0101', 'pciide', HDC),
        ('primary_ide_channel', 'atapi', HDC),
        ('secondary_ide_channel', 'atapi', HDC),
        ('pci#ven_1000&dev_0054', 'LSI_SAS', SCSI),
        ('pci#ven_104b&dev_1040', 'vmscsi', SCSI),
        ('*pnp0a03', 'pci', SYSTEMCLASS),
    ],
    'nics': [  # class index, guid, connection name, driver desc, service, characteristics, card number, tcpip
        ('0000', '{E2B1D8C4-7A3F-4C19-8D2E-5F6A7B8C9D01}', 'WAN Miniport (IP)', 'WAN Miniport (IP)', 'NdisWan', 0x29, None,
         {'EnableDHCP': 0, 'IPAddress': ('multi', ['0.0.0.0']), 'SubnetMask': ('multi', ['0.0.0.0'])}),
        ('0001', '{5B7D2A48-1D2C-4E6F-9A31-0C2F6E8B7A10}', 'Production', 'Intel(R) PRO/1000 MT Network Connection', 'E1000', 0x84, 2,
         {'EnableDHCP': 0, 'IPAddress': ('multi', ['192.168.50.10', '192.168.50.11']),
          'SubnetMask': ('multi', ['255.255.255.0', '255.255.0.0']), 'DefaultGateway': ('multi', ['192.168.50.1']),
          'DefaultGatewayMetric': ('multi', ['0']), 'NameServer': '192.168.50.2,192.168.50.3', 'Domain': 'corp.example'}),
        ('0002', '{A1C3E5F7-2B4D-4F60-8E1A-3C5D7E9F0B12}', 'Backup LAN', 'VMware vmxnet3 Ethernet Adapter', 'vmxnet3ndis5', 0x84, 3,
         {'EnableDHCP': 1, 'IPAddress': ('multi', ['0.0.0.0']), 'SubnetMask': ('multi', ['0.0.0.0']),
          'DhcpIPAddress': '10.20.30.40', 'DhcpSubnetMask': '255.255.255.0', 'NameServer': ''}),
    ],
    'expectNics': [
        {'guid': '{5B7D2A48-1D2C-4E6F-9A31-0C2F6E8B7A10}', 'name': 'Production', 'dhcp': False,
         'addresses': ['192.168.50.10/24', '192.168.50.11/16'], 'gateways': ['192.168.50.1'], 'dns': ['192.168.50.2', '192.168.50.3'],
         'service': 'E1000', 'description': 'Intel(R) PRO/1000 MT Network Connection'},
        {'guid': '{A1C3E5F7-2B4D-4F60-8E1A-3C5D7E9F0B12}', 'name': 'Backup LAN', 'dhcp': True,
         'addresses': [], 'gateways': [], 'dns': [], 'service': 'vmxnet3ndis5', 'description': 'VMware vmxnet3 Ethernet Adapter'},
    ],
    'apps': {  # view -> key -> values
        '': {
            '{FE2F6A2C-196E-4210-9C04-2B1BC21F07EF}': {'DisplayName': 'VMware Tools', 'DisplayVersion': '7.8.5.9488', 'Publisher': 'VMware, Inc.', 'InstallLocation': 'C:\\Program Files\\VMware\\VMware Tools\\'},
            '{AC76BA86-7AD7-1033-7B44-A70000000000}': {'DisplayName': 'Adobe Reader 7.0.9', 'DisplayVersion': '7.0.9', 'Publisher': 'Adobe Systems Incorporated'},
            'WinZip': {'DisplayName': 'WinZip', 'UninstallString': '"C:\\Program Files\\WinZip\\WINZIP32.EXE" /uninstallx'},
            'KB925902': {'DisplayName': 'Windows Server 2003 Hotfix - KB925902', 'Publisher': 'Microsoft Corporation', 'ParentKeyName': 'OperatingSystem'},
            'AddressBook': {},
        },
    },
    'expectApps': [
        {'name': 'Adobe Reader 7.0.9', 'version': '7.0.9', 'publisher': 'Adobe Systems Incorporated'},
        {'name': 'VMware Tools', 'version': '7.8.5.9488', 'publisher': 'VMware, Inc.'},
        {'name': 'Windows Server 2003 Hotfix - KB925902', 'publisher': 'Microsoft Corporation'},
        {'name': 'WinZip'},
    ],
}

W2019 = {
    'name': 'win2019', 'systemRoot': '/Windows', 'sys32': 'Windows/System32', 'partition': 2,
    'partitions': [
        (1, 2048, 32768, 'System Reserved', '4E544645525A2019', 'boot'),
        (2, 34816, 131072, 'Windows', '4E5446455259B019', 'windows'),
    ],
    'hostname': 'FERRY-W2K19', 'arch_reg': 'AMD64', 'arch': 'x86_64',
    'controlSet': 2, 'staleSet': (1, 'FERRY-OLDNAME'),
    'currentVersion': {
        'ProductName': 'Windows Server 2019 Datacenter', 'EditionID': 'ServerDatacenter', 'InstallationType': 'Server',
        'CurrentVersion': '6.3', 'CurrentMajorVersionNumber': 10, 'CurrentMinorVersionNumber': 0,
        'CurrentBuildNumber': '17763', 'CurrentBuild': '17763', 'UBR': 5830, 'ReleaseId': '1809',
        'BuildLabEx': '17763.1.amd64fre.rs5_release.180914-1434', 'CurrentType': 'Multiprocessor Free',
        'SystemRoot': 'C:\\Windows', 'PathName': 'C:\\Windows', 'RegisteredOwner': 'Ferry', 'SoftwareType': 'System',
        'InstallTime': ('qword', 132000000000000000),
    },
    'expect': {'productName': 'Windows Server 2019 Datacenter', 'edition': 'ServerDatacenter', 'version': '10.0', 'build': '17763', 'patchLevel': '17763.5830'},
    'pe': [
        ('x86_64', 'dll', 'hal.dll', 'hal.dll', '10.0.17763.5830', 'Hardware Abstraction Layer DLL'),
        ('x86_64', 'exe', 'ntoskrnl.exe', 'ntkrnlmp.exe', '10.0.17763.5830', 'NT Kernel & System'),
    ],
    'hal': {'file': '/Windows/System32/hal.dll', 'variant': 'hal.dll', 'acpi': True, 'multiprocessor': True, 'how': 'version-resource', 'fileVersion': '10.0.17763.5830'},
    'kernel': {'file': '/Windows/System32/ntoskrnl.exe', 'variant': 'ntkrnlmp.exe', 'multiprocessor': True, 'how': 'version-resource', 'fileVersion': '10.0.17763.5830'},
    'halHardwareId': None,
    'services': [
        service('ACPI', 0, 1, 'Core', 'System32\\drivers\\ACPI.sys', 3),
        service('pci', 0, 1, 'Boot Bus Extender', 'System32\\drivers\\pci.sys', 3),
        service('partmgr', 0, 1, 'Boot Bus Extender', 'System32\\drivers\\partmgr.sys', 3),
        service('storahci', 0, 1, 'SCSI Miniport', 'System32\\drivers\\storahci.sys', 3),
        service('stornvme', 0, 1, 'SCSI Miniport', 'System32\\drivers\\stornvme.sys', 3),
        service('LSI_SAS', 0, 1, 'SCSI miniport', 'System32\\drivers\\lsi_sas.sys', 3),
        service('pvscsi', 0, 1, 'SCSI miniport', 'System32\\drivers\\pvscsi.sys', 3),
        service('atapi', 3, 1, 'SCSI Miniport', 'System32\\drivers\\atapi.sys', 3),
        service('intelide', 3, 1, 'System Bus Extender', 'System32\\drivers\\intelide.sys', 3),
        service('pciide', 3, 1, 'Boot Bus Extender', 'System32\\drivers\\pciide.sys', 3),
        service('disk', 0, 1, 'SCSI Class', 'System32\\drivers\\disk.sys', 3),
        service('e1iexpress', 3, 1, 'NDIS', '\\SystemRoot\\System32\\drivers\\e1i63x64.sys'),
        service('vmxnet3ndis6', 3, 1, 'NDIS', 'System32\\drivers\\vmxnet3.sys'),
        service('Tcpip', 0, 1, 'PNP_TDI', 'System32\\drivers\\tcpip.sys'),
        service('VMTools', 2, 16, None, '"C:\\Program Files\\VMware\\VMware Tools\\vmtoolsd.exe"'),
        service('EventLog', 2, 32, None, ('expand', '%SystemRoot%\\System32\\svchost.exe -k LocalServiceNetworkRestricted -p')),
    ],
    'bootStorage': ['disk', 'LSI_SAS', 'pvscsi', 'storahci', 'stornvme'],
    'critical': [],  # Windows 8 and later have no CriticalDeviceDatabase
    'nics': [
        ('0001', '{3C9E1F24-8B6A-4D0E-9F12-6A7B8C9D0E21}', 'Ethernet0', 'Intel(R) 82574L Gigabit Network Connection', 'e1iexpress', 0x84, 4,
         {'EnableDHCP': 0, 'IPAddress': ('multi', ['10.1.0.25']), 'SubnetMask': ('multi', ['255.255.252.0']),
          'DefaultGateway': ('multi', ['10.1.0.1']), 'NameServer': '10.1.0.2,10.1.0.3'}),
        ('0002', '{7D2E4A61-5C3B-4E8F-A019-2B3C4D5E6F72}', 'Ethernet1', 'vmxnet3 Ethernet Adapter', 'vmxnet3ndis6', 0x84, 7,
         {'EnableDHCP': 1, 'DhcpIPAddress': '172.16.4.77', 'DhcpSubnetMask': '255.255.255.0', 'NameServer': ''}),
        ('0003', '{9F8E7D6C-5B4A-4392-8170-6F5E4D3C2B1A}', 'Local Area Connection* 1', 'WAN Miniport (IP)', 'NdisWan', 0x29, None,
         {'EnableDHCP': 0}),
    ],
    'expectNics': [
        {'guid': '{3C9E1F24-8B6A-4D0E-9F12-6A7B8C9D0E21}', 'name': 'Ethernet0', 'dhcp': False,
         'addresses': ['10.1.0.25/22'], 'gateways': ['10.1.0.1'], 'dns': ['10.1.0.2', '10.1.0.3'],
         'service': 'e1iexpress', 'description': 'Intel(R) 82574L Gigabit Network Connection'},
        {'guid': '{7D2E4A61-5C3B-4E8F-A019-2B3C4D5E6F72}', 'name': 'Ethernet1', 'dhcp': True,
         'addresses': [], 'gateways': [], 'dns': [], 'service': 'vmxnet3ndis6', 'description': 'vmxnet3 Ethernet Adapter'},
    ],
    'apps': {
        '': {
            '{B3F1B1D5-1C33-4C86-9A4B-3A6C8E2F1D90}': {'DisplayName': 'VMware Tools', 'DisplayVersion': '11.3.5.18557794', 'Publisher': 'VMware, Inc.'},
            '7-Zip': {'DisplayName': '7-Zip 23.01 (x64)', 'DisplayVersion': '23.01', 'Publisher': 'Igor Pavlov'},
            'AddressBook': {},
        },
        'Wow6432Node\\': {
            'Notepad++': {'DisplayName': 'Notepad++ (32-bit x86)', 'DisplayVersion': '8.6.4', 'Publisher': 'Notepad++ Team'},
            '{6AA7E2E2-1B0B-4A4B-9E2B-5D0C1E2F3A4B}': {'DisplayName': 'Microsoft Visual C++ 2015-2019 Redistributable (x86) - 14.29.30133', 'DisplayVersion': '14.29.30133.0', 'Publisher': 'Microsoft Corporation'},
        },
    },
    'expectApps': [
        {'name': '7-Zip 23.01 (x64)', 'version': '23.01', 'publisher': 'Igor Pavlov'},
        {'name': 'Microsoft Visual C++ 2015-2019 Redistributable (x86) - 14.29.30133', 'version': '14.29.30133.0', 'publisher': 'Microsoft Corporation'},
        {'name': 'Notepad++ (32-bit x86)', 'version': '8.6.4', 'publisher': 'Notepad++ Team'},
        {'name': 'VMware Tools', 'version': '11.3.5.18557794', 'publisher': 'VMware, Inc.'},
    ],
}

def build(g):
    d = os.path.join(stage, g['name'])
    win_part = [p for p in g['partitions'] if p[5] == 'windows'][0][0]
    tree = os.path.join(d, 'part%d' % win_part)
    sys32 = os.path.join(tree, g['sys32'])
    placeholder = lambda what: ('phony %s for Ferry tests; not a Windows file\r\n' % what).encode()

    # -- SYSTEM
    s = Reg('HKEY_LOCAL_MACHINE\\SYSTEM')
    cs_n = g['controlSet']
    lkg = g['staleSet'][0] if g['staleSet'] else cs_n
    s.key('Select', {'Current': cs_n, 'Default': cs_n, 'Failed': 0, 'LastKnownGood': lkg})
    s.key('MountedDevices')
    s.key('Setup', {'SystemPartition': '\\Device\\HarddiskVolume1', 'OsLoaderPath': '\\'})
    if g['staleSet']:
        n, name = g['staleSet']
        st = 'ControlSet%03d' % n
        s.key(st + '\\Control\\ComputerName\\ComputerName', {'ComputerName': name})
        s.key(st + '\\Control\\Session Manager\\Environment', {'PROCESSOR_ARCHITECTURE': 'x86'})
        s.key(st + '\\Services\\atapi', {'Start': 0, 'Type': 1, 'Group': 'SCSI miniport'})
    cs = 'ControlSet%03d' % cs_n
    s.key(cs + '\\Control', {'SystemBootDevice': 'multi(0)disk(0)rdisk(0)partition(%d)' % win_part})
    s.key(cs + '\\Control\\ComputerName\\ComputerName', {'ComputerName': g['hostname']})
    s.key(cs + '\\Control\\Session Manager\\Environment', {
        'PROCESSOR_ARCHITECTURE': g['arch_reg'], 'NUMBER_OF_PROCESSORS': '2', 'OS': 'Windows_NT',
        'ComSpec': ('expand', '%SystemRoot%\\system32\\cmd.exe'),
        'Path': ('expand', '%SystemRoot%\\system32;%SystemRoot%;%SystemRoot%\\System32\\Wbem'),
        'windir': ('expand', '%SystemRoot%')})
    s.key(cs + '\\Control\\Session Manager\\Memory Management', {'PagingFiles': ('multi', ['C:\\pagefile.sys 1536 3072'])})
    if g['critical']:
        s.key(cs + '\\Control\\CriticalDeviceDatabase')
        for id_, svc, cls in g['critical']:
            s.key(cs + '\\Control\\CriticalDeviceDatabase\\' + id_, {'Service': svc, 'ClassGUID': cls})
    if g['halHardwareId']:
        s.key(cs + '\\Enum\\Root\\ACPI_HAL\\0000', {'HardwareID': ('multi', [g['halHardwareId']]), 'Class': 'Computer'})
    for svc in g['services']:
        v = {'Start': svc['start'], 'Type': svc['type'], 'ErrorControl': svc['error']}
        if svc['group']: v['Group'] = svc['group']
        if svc['imagePath']: v['ImagePath'] = svc['imagePath']
        s.key(cs + '\\Services\\' + svc['name'], v)
    s.key(cs + '\\Services\\Tcpip\\Parameters', {'Hostname': g['hostname'], 'NV Hostname': g['hostname'], 'Domain': ''})
    s.key(cs + '\\Control\\Class\\' + NET, {'Class': 'Net'})
    s.key(cs + '\\Control\\Network\\' + NET)
    for idx, guid, conn, desc, svc, chars, card, tcpip in g['nics']:
        s.key(cs + '\\Control\\Class\\%s\\%s' % (NET, idx), {'DriverDesc': desc, 'NetCfgInstanceId': guid, 'Characteristics': chars})
        s.key(cs + '\\Control\\Class\\%s\\%s\\Ndi' % (NET, idx), {'Service': svc})
        s.key(cs + '\\Control\\Network\\%s\\%s\\Connection' % (NET, guid), {'Name': conn, 'PnpInstanceID': 'PCI\\VEN_8086&DEV_100F\\' + idx})
        s.key(cs + '\\Services\\Tcpip\\Parameters\\Interfaces\\' + guid, tcpip)

    # -- SOFTWARE
    w = Reg('HKEY_LOCAL_MACHINE\\SOFTWARE')
    cv = 'Microsoft\\Windows NT\\CurrentVersion'
    w.key(cv, g['currentVersion'])
    # subkeys of CurrentVersion that are large on a real system (only values are read)
    w.key(cv + '\\Perflib\\009', {'Counter': ('multi', ['1', '1847', '2', 'System', '4', 'Memory'])})
    w.key(cv + '\\Winlogon', {'Shell': 'explorer.exe', 'DefaultUserName': 'Administrator'})
    for idx, guid, conn, desc, svc, chars, card, tcpip in g['nics']:
        if card is not None:
            w.key(cv + '\\NetworkCards\\%d' % card, {'ServiceName': guid, 'Description': desc})
    for view, apps in g['apps'].items():
        w.key(view + 'Microsoft\\Windows\\CurrentVersion\\Uninstall')
        for key, values in apps.items():
            w.key(view + 'Microsoft\\Windows\\CurrentVersion\\Uninstall\\' + key, values)
    w.key('VMware, Inc.\\VMware Tools', {'InstallPath': 'C:\\Program Files\\VMware\\VMware Tools\\'})

    hives = []  # reg file (or -), prefix, destination
    write(os.path.join(d, 'SYSTEM.reg'), s.text())
    write(os.path.join(d, 'SOFTWARE.reg'), w.text())
    cfg = os.path.join(sys32, 'config')
    write(os.path.join(cfg, 'SYSTEM'), empty_hive('CMI-CreateHive{2A7FB991-7BBE-4F9D-B91E-7CB51D4737F5}'))
    write(os.path.join(cfg, 'SOFTWARE'), empty_hive('CMI-CreateHive{199DAFC2-6F16-4946-BF90-5A3FC3A60902}'))
    hives.append(('SYSTEM.reg', 'HKEY_LOCAL_MACHINE\\SYSTEM', os.path.join(cfg, 'SYSTEM')))
    hives.append(('SOFTWARE.reg', 'HKEY_LOCAL_MACHINE\\SOFTWARE', os.path.join(cfg, 'SOFTWARE')))
    for h in ('SAM', 'SECURITY', 'DEFAULT'):
        write(os.path.join(cfg, h), empty_hive('CMI-CreateHive{%s}' % h))

    # -- PE files
    pe = []
    for arch, kind, fname, orig, ver, desc in g['pe']:
        rcfile = os.path.join(d, fname + '.rc')
        write(rcfile, rc(orig, ver, desc))
        pe.append((arch, kind, rcfile, os.path.join(sys32, fname)))

    # -- the rest of the layout
    drivers = os.path.join(sys32, 'drivers')
    for svc in g['services']:
        img = svc['imagePath']
        if isinstance(img, str) and img.lower().endswith('.sys'):
            write(os.path.join(drivers, img.split('\\')[-1]), placeholder('driver ' + svc['name']))
    for f in ('cmd.exe', 'kernel32.dll', 'ntdll.dll', 'winload.exe' if g['name'] != 'win2003' else 'smss.exe'):
        write(os.path.join(sys32, f), placeholder(f))
    write(os.path.join(tree, 'pagefile.sys'), b'\0' * (1 << 20))
    if g['name'] == 'win2003':
        write(os.path.join(tree, 'boot.ini'), (
            '[boot loader]\r\ntimeout=30\r\ndefault=multi(0)disk(0)rdisk(0)partition(1)\\WINDOWS\r\n'
            '[operating systems]\r\n'
            'multi(0)disk(0)rdisk(0)partition(1)\\WINDOWS="Windows Server 2003, Standard" /noexecute=optout /fastdetect\r\n').encode())
        for f in ('ntldr', 'NTDETECT.COM'):
            write(os.path.join(tree, f), placeholder(f))
        write(os.path.join(tree, 'Documents and Settings', 'Administrator', 'NTUSER.DAT'), empty_hive('ROOT'))
        write(os.path.join(tree, 'Documents and Settings', 'All Users', 'Desktop', 'desktop.ini'), placeholder('desktop.ini'))
        write(os.path.join(tree, 'Program Files', 'VMware', 'VMware Tools', 'vmtoolsd.exe'), placeholder('vmtoolsd.exe'))
        write(os.path.join(tree, 'Program Files', 'WinZip', 'WINZIP32.EXE'), placeholder('WINZIP32.EXE'))
        write(os.path.join(tree, 'WINDOWS', 'system.ini'), b'; for 16-bit app support\r\n[drivers]\r\nwave=mmdrv.dll\r\n')
    else:
        boot = os.path.join(d, 'part1')
        write(os.path.join(boot, 'bootmgr'), placeholder('bootmgr'))
        write(os.path.join(boot, 'Boot', 'BCD'), empty_hive('NewStoreRoot'))
        write(os.path.join(boot, 'Boot', 'en-US', 'bootmgr.exe.mui'), placeholder('bootmgr.exe.mui'))
        write(os.path.join(tree, 'Users', 'Administrator', 'NTUSER.DAT'), empty_hive('ROOT'))
        write(os.path.join(tree, 'Users', 'Public', 'Desktop', 'desktop.ini'), placeholder('desktop.ini'))
        write(os.path.join(tree, 'ProgramData', 'Microsoft', 'Windows', 'Start Menu', 'desktop.ini'), placeholder('desktop.ini'))
        write(os.path.join(tree, 'Program Files', 'VMware', 'VMware Tools', 'vmtoolsd.exe'), placeholder('vmtoolsd.exe'))
        write(os.path.join(tree, 'Program Files', '7-Zip', '7z.exe'), placeholder('7z.exe'))
        write(os.path.join(tree, 'Program Files (x86)', 'Notepad++', 'notepad++.exe'), placeholder('notepad++.exe'))
        write(os.path.join(tree, 'Windows', 'Temp', '.keep'), b'')

    with open(os.path.join(d, 'hives.list'), 'w') as f:
        for r, prefix, dest in hives:
            f.write('%s\t%s\t%s\n' % (os.path.join(d, r), prefix, dest))
    with open(os.path.join(d, 'pe.list'), 'w') as f:
        for row in pe:
            f.write('\t'.join(row) + '\n')
    with open(os.path.join(d, 'layout'), 'w') as f:
        for num, start, size, label, serial, role in g['partitions']:
            f.write('%d\t%d\t%d\t%s\t%s\n' % (num, start, size, label, serial))

    services = sorted((expected_driver(x) for x in g['services']), key=lambda x: x['name'].lower())
    expect = {
        'type': 'windows', 'partition': g['partition'], 'systemRoot': g['systemRoot'],
        **g['expect'], 'arch': g['arch'], 'hostname': g['hostname'],
        'hal': g['hal'], 'kernel': g['kernel'],
        'bootStorageDrivers': [x for x in services if x['name'] in g['bootStorage']],
        'services': services,
        'criticalDevices': sorted(({'id': i, 'service': s_, 'classGuid': c} for i, s_, c in g['critical']), key=lambda x: x['id']),
        'nics': g['expectNics'],
        'applications': g['expectApps'],
    }
    assert [x['name'] for x in expect['bootStorageDrivers']] == sorted(g['bootStorage'], key=str.lower)
    return {
        'fileSystems': [{'partition': n, 'type': 'ntfs', 'label': l, 'uuid': sr, 'start': st * 512, 'size': sz * 512}
                        for n, st, sz, l, sr, role in g['partitions']],
        'expect': expect,
        'staleHostname': g['staleSet'][1] if g['staleSet'] else None,
    }

out = {g['name']: build(g) for g in (W2003, W2019)}
# the damaged copy: what SYSTEM and the PE files give stays; SOFTWARE's part is gone
dmg = json.loads(json.dumps(out['win2019']))
for k in ('productName', 'edition', 'version', 'build', 'patchLevel'):
    dmg['expect'].pop(k)
dmg['expect']['applications'] = []
dmg['damagedHive'] = '/Windows/System32/config/SOFTWARE'
out['win2019-damaged'] = dmg
with open(os.path.join(stage, 'expect.json'), 'w') as f:
    json.dump(out, f, indent=2)
PY

# --- hives, PE files, file systems, disks -------------------------------------
mkdir -p "$MNT"
MOUNTED=''
ntfs_mount() { ntfs-3g -o "$2" "$1" "$MNT"; MOUNTED=$MNT; }
ntfs_umount() { umount "$MNT"; MOUNTED=''; }

build_disk() { # $1 = disk name
  local name=$1 d=$STAGE/$1 reg prefix dest arch kind rcf num start size label serial last=0 img
  while IFS=$'\t' read -r reg prefix dest; do
    log "$name: hivexregedit --merge $(basename "$dest")"
    hivexregedit --merge --prefix "$prefix" "$dest" "$reg" >&2
  done <"$d/hives.list"
  while IFS=$'\t' read -r arch kind rcf dest; do
    log "$name: PE $(basename "$dest") ($arch $kind)"
    "$arch-w64-mingw32-windres" --preprocessor=cpp -O coff -i "$rcf" -o "$rcf.o"
    # resource only: no code, no entry point
    if [[ $kind == dll ]]; then
      "$arch-w64-mingw32-ld" --dll --subsystem native -e 0 -o "$dest" "$rcf.o"
    else
      "$arch-w64-mingw32-ld" --subsystem native -e 0 -o "$dest" "$rcf.o"
    fi
  done <"$d/pe.list"

  img=$TMP/$name.raw
  while IFS=$'\t' read -r num start size label serial; do
    if (( start + size > last )); then last=$(( start + size )); fi
  done <"$d/layout"
  truncate -s $(( (last + 2048) * 512 )) "$img"
  {
    echo "label: dos"
    echo "label-id: 0x$(printf '%s' "$name" | sha256sum | cut -c1-8)"
    echo "unit: sectors"
    echo
    local boot=', bootable'   # the first partition is the active one
    while IFS=$'\t' read -r num start size label serial; do
      echo "start=$start, size=$size, type=7$boot"
      boot=''
    done <"$d/layout"
  } | sfdisk --quiet --no-reread --no-tell-kernel "$img"

  while IFS=$'\t' read -r num start size label serial; do
    local part=$TMP/$name-p$num.ntfs
    log "$name: p$num mkntfs '$label' serial $serial"
    truncate -s $(( size * 512 )) "$part"
    # hidden sectors and geometry as Windows writes them into the boot sector
    mkntfs -F -Q -s 512 -L "$label" -p "$start" -H 255 -S 63 "$part" >&2
    ntfslabel --new-serial="$serial" "$part" >&2
    ntfs_mount "$part" rw
    cp -r "$d/part$num/." "$MNT/"
    ntfs_umount
  done <"$d/layout"
}

assemble() { # $1 = disk image, $2 = disk name (its partition files)
  local num start size label serial
  while IFS=$'\t' read -r num start size label serial; do
    dd if="$TMP/$2-p$num.ntfs" of="$1" bs=512 seek="$start" conv=notrunc,sparse status=none
  done <"$STAGE/$2/layout"
}

for disk in win2003 win2019; do
  build_disk "$disk"
  assemble "$TMP/$disk.raw" "$disk"
  sfdisk -d "$TMP/$disk.raw" >&2
done

# The damaged variant: win2019 with SOFTWARE cut in half (as after a crash
# while the hive was written, or a bad copy).
log "win2019-damaged: truncating SOFTWARE"
cp --sparse=always "$TMP/win2019.raw" "$TMP/win2019-damaged.raw"
ntfs_mount "$TMP/win2019-p2.ntfs" rw
SOFT=$MNT/Windows/System32/config/SOFTWARE
truncate -s $(( $(stat -c %s "$SOFT") / 2 )) "$SOFT"
ntfs_umount
assemble "$TMP/win2019-damaged.raw" win2019

# --- manifest -------------------------------------------------------------------
log "manifest"
"$PY" - "$STAGE/expect.json" "$OUT" "$HASH" "$TMP" >"$TMP/manifest.json" <<'PY'
import hashlib, json, sys
expect_file, out, script_hash, tmp = sys.argv[1:]
disks = json.load(open(expect_file))
for name, d in disks.items():
    d['image'] = '%s/%s.raw' % (out, name)
    h = hashlib.sha256()
    with open('%s/%s.raw' % (tmp, name), 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    d['sha256'] = h.hexdigest()
json.dump({'scriptHash': script_hash, 'disks': disks}, sys.stdout, indent=2)
print()
PY

rm -rf "$STAGE" "$MNT" "$TMP"/*.ntfs
date -u +%Y-%m-%dT%H:%M:%SZ >"$TMP/done"
sync
mv -T "$TMP" "$OUT"
FINISHED=1
log "built $OUT in $(( $(date +%s) - START_TS )) s"
print_results
