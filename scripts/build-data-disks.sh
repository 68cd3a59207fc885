#!/usr/bin/env bash
# build-data-disks.sh — build Ferry's test data disks (cached, idempotent, non-interactive, root).
#
# Outputs, in ${FERRY_FIXTURES:-/var/cache/ferry/fixtures}/datadisks-<sha256(this file)[0:12]>/ :
#   gpt.raw        sparse raw, ~1.2 GiB, GPT: bios-boot, ESP (vfat), xfs, btrfs (subvolumes), ext4 (awkward files),
#                  a partition of an unknown type GUID holding a data pattern
#   mbr.raw        sparse raw, 600 MiB, MBR: ext2, ext3, extended{ ext4, swap }, plus MBR boot code and a
#                  pattern in the gap between sector 1 and the first partition
#   manifest.json  what is where: partitions (number, start, size, type, GUIDs), file systems (type, UUID,
#                  label, features), notable files with their observed facts, byte regions with their sha256
#   done           stamp, written last; the directory appears by an atomic rename
#
# stdout contract: one absolute path per line: gpt.raw, mbr.raw, manifest.json and, as the LAST line, the
# cache directory. Everything else (logs, tool chatter, build time) goes to stderr.
# A second run with the same script finds the stamp and returns at once. Any change to this file changes the
# cache directory name, so the fixtures are rebuilt. Images are left mode 0444: open them read-only.
#
# Every loop device and mount made here is released on any exit; a crashed run's temp dir (and its loops and
# mounts) is cleaned by the next run.
set -euo pipefail
umask 022
export LC_ALL=C.UTF-8 TZ=UTC
exec 3>&1 1>&2 # fd 3 = the real stdout (results only); stdout of every tool goes to stderr

T0=$EPOCHREALTIME
log() { printf '[build-data-disks %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
elapsed() { awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

[ "$(id -u)" -eq 0 ] || die "run as root (loop devices, mounts, mknod, chattr)"

SELF=$(readlink -f "${BASH_SOURCE[0]}")
HASH=$(sha256sum "$SELF" | cut -c1-12)
ROOT=$(realpath -m "${FERRY_FIXTURES:-/var/cache/ferry/fixtures}")
CACHE="$ROOT/datadisks-$HASH"
OUTPUTS=(gpt.raw mbr.raw manifest.json)

is_complete() {
  local f
  [ -f "$CACHE/done" ] || return 1
  for f in "${OUTPUTS[@]}"; do [ -s "$CACHE/$f" ] || return 1; done
}
print_result() {
  local f
  for f in "${OUTPUTS[@]}"; do printf '%s\n' "$CACHE/$f" >&3; done
  printf '%s\n' "$CACHE" >&3
}

if is_complete; then
  log "cached: $CACHE ($(elapsed)s)"
  print_result
  exit 0
fi

PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3) || die "python3 is missing: run scripts/setup.sh"
for tool in sfdisk losetup blkid mount umount mountpoint findmnt truncate fallocate sha256sum \
  mkfs.vfat fsck.vfat mmd mcopy mattrib mdir mkfs.xfs xfs_repair xfs_db mkfs.btrfs btrfs \
  mkfs.ext2 mkfs.ext3 mkfs.ext4 e2fsck dumpe2fs mkswap chattr setfattr setfacl setcap mknod mkfifo flock; do
  command -v "$tool" >/dev/null || die "$tool is missing: run scripts/setup.sh"
done

mkdir -p "$ROOT"
exec 9>"$ROOT/datadisks-$HASH.lock"
log "waiting for the build lock $ROOT/datadisks-$HASH.lock"
flock -w 1800 9 || die "another build holds $ROOT/datadisks-$HASH.lock for more than 30 min"
if is_complete; then # built by a concurrent run while we waited
  log "cached (built by a concurrent run): $CACHE ($(elapsed)s)"
  print_result
  exit 0
fi

# ---------------------------------------------------------------- resources and cleanup
LOOPS=()
MOUNTS=()
TMP=""

owned_loop() { # $1 = loop device; true when it is backed by a file under $TMP
  local back
  back=$(losetup -n -O BACK-FILE "$1" 2>/dev/null) || return 1
  [ -n "$TMP" ] && [[ "$back" == "$TMP"/* ]]
}

cleanup() {
  local rc=$? i
  set +e
  trap - EXIT INT TERM HUP
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    if mountpoint -q "${MOUNTS[i]}"; then
      umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}"
    fi
  done
  for i in "${LOOPS[@]}"; do owned_loop "$i" && losetup -d "$i"; done
  sync
  if [ -n "$TMP" ] && [ -d "$TMP" ]; then rm -rf --one-file-system "$TMP"; fi
  [ "$rc" -eq 0 ] || log "FAILED (exit $rc) after $(elapsed)s; mounts, loop devices and $TMP released"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# attach IMG OFFSET_BYTES SIZE_BYTES -> REPLY=/dev/loopN (one loop per partition, no partition nodes here)
attach() {
  REPLY=$(losetup --find --show --offset "$2" --sizelimit "$3" "$1")
  LOOPS+=("$REPLY")
}
detach() {
  local d keep=()
  losetup -d "$1"
  for d in "${LOOPS[@]}"; do [ "$d" = "$1" ] || keep+=("$d"); done
  LOOPS=("${keep[@]}")
}
# mnt DEV DIR [mount options...]
mnt() {
  local dev=$1 dir=$2
  shift 2
  mkdir -p "$dir"
  mount "$@" "$dev" "$dir"
  MOUNTS+=("$dir")
}
umnt() {
  local m keep=()
  umount "$1"
  sync
  for m in "${MOUNTS[@]}"; do [ "$m" = "$1" ] || keep+=("$m"); done
  MOUNTS=("${keep[@]}")
}

# A crashed (killed) earlier build leaves datadisks-*.tmp.<pid>: release its mounts and loops, then delete it.
clean_stale() {
  local d=$1 mp img dev
  log "removing stale build dir $d"
  findmnt -rn -o TARGET | while read -r mp; do
    mp=$(printf '%b' "$mp")
    [[ "$mp" == "$d"/* ]] && { umount "$mp" 2>/dev/null || umount -l "$mp" || true; }
  done
  for img in "$d"/*.raw; do
    [ -e "$img" ] || continue
    losetup -n -O NAME -j "$img" | while read -r dev; do losetup -d "$dev" || true; done
  done
  rm -rf --one-file-system "$d"
}
for d in "$ROOT"/datadisks-*.tmp.*; do
  [ -d "$d" ] || continue
  pid=${d##*.}
  if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && [ "$pid" != "$$" ]; then continue; fi
  clean_stale "$d"
done
if [ -e "$CACHE" ]; then
  log "removing incomplete $CACHE"
  rm -rf --one-file-system "$CACHE"
fi

TMP="$ROOT/datadisks-$HASH.tmp.$$"
W="$TMP/work" # scratch: mount points, staging, metadata; removed before the final rename
mkdir -p "$W/mnt" "$W/stage" "$W/meta"
META="$W/meta"
H="$W/fixture.py"
log "building into $TMP"

# ---------------------------------------------------------------- python helper (patterns, random data, facts, manifest)
cat >"$H" <<'PYEOF'
import sys, os, stat, json, hashlib, random, socket, subprocess, re, datetime, fcntl, struct

def rec(label, k):
    s = "%s %010x" % (label, k * 32)
    return (s[:31].ljust(31, ".") + "\n").encode()

def pattern(label, start, length):
    """Bytes [start, start+length) of an endless stream of 32-byte records 'LABEL <offset hex>....\\n'."""
    k0, k1 = start // 32, (start + length + 31) // 32
    buf = b"".join(rec(label, k) for k in range(k0, k1))
    off = start - k0 * 32
    return buf[off:off + length]

def sha_region(path, off, length):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(off)
        left = length
        while left:
            b = f.read(min(left, 4 << 20))
            if not b:
                raise SystemExit("short read in %s" % path)
            h.update(b)
            left -= len(b)
    return h.hexdigest()

def cmd_fill(img, offset, start, length, label):
    data = pattern(label, int(start), int(length))
    with open(img, "r+b") as f:
        f.seek(int(offset))
        f.write(data)
    print(hashlib.sha256(data).hexdigest())

def rbytes(seed, n):
    return random.Random(seed).randbytes(n)

def cmd_random(path, seed, size):
    with open(path, "wb") as f:
        f.write(rbytes(seed, int(size)))

def cmd_sparse(path, size, seed, ranges):
    """A file of apparent size SIZE with data only in RANGES ('off:len,off:len'); the rest are holes."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, int(size))
        for i, r in enumerate(x for x in ranges.split(",") if x):
            off, ln = (int(v) for v in r.split(":"))
            os.pwrite(fd, rbytes("%s-%d" % (seed, i), ln), off)
    finally:
        os.close(fd)

def cmd_tree(top, ndirs, nfiles, seed):
    rng = random.Random(seed)
    n = 0
    for d in range(int(ndirs)):
        dd = os.path.join(top, "dir%02d" % d)
        os.makedirs(dd, exist_ok=True)
        for i in range(int(nfiles)):
            size = rng.choice([0, 1, 17, 100, 511, 512, 4095, 4096, 4097, 10000, 65536, 70001])
            line = ("ferry tree file dir%02d/file-%03d\n" % (d, i)).encode()
            data = (line * (size // len(line) + 1))[:size]
            with open(os.path.join(dd, "file-%03d.txt" % i), "wb") as f:
                f.write(data)
            n += 1
    print(n)

def cmd_socket(path):
    d, b = os.path.split(path)
    os.chdir(d)  # sun_path is 108 bytes at most: bind a relative name
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(b)
    s.close()  # the socket inode stays in the file system

def cmd_json(out, *pairs):
    """json OUT key=string key:=<json> ..."""
    d = {}
    for p in pairs:
        k, v = p.split("=", 1)
        if k.endswith(":"):
            d[k[:-1]] = json.loads(v)
        else:
            d[k] = v
    with open(out, "w") as f:
        json.dump(d, f, indent=2, ensure_ascii=False)

def cmd_sha(path, off, length):
    print(sha_region(path, int(off), int(length)))

# ---- facts about files
def enc(p):
    return bytes.fromhex(p[4:]) if p.startswith("hex:") else p.encode()

def dec(b):
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return "hex:" + b.hex()

def iso(ns):
    s, frac = divmod(ns, 10**9)
    t = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=s)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + ".%09dZ" % frac

KINDS = [(stat.S_ISREG, "file"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "symlink"), (stat.S_ISCHR, "char"),
         (stat.S_ISBLK, "block"), (stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket")]

def kind(mode):
    for f, k in KINDS:
        if f(mode):
            return k
    return "unknown"

FLAG_BITS = [(0x1, "s"), (0x2, "u"), (0x4, "c"), (0x8, "S"), (0x10, "i"), (0x20, "a"), (0x40, "d"), (0x80, "A"),
             (0x4000, "j"), (0x8000, "t"), (0x10000, "D"), (0x20000, "T"), (0x80000, "e"), (0x800000, "C"),
             (0x10000000, "N"), (0x20000000, "P"), (0x40000000, "F")]

def inode_flags(p):
    fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    try:
        v = struct.unpack("<i", fcntl.ioctl(fd, 0x80086601, b"\0" * 8)[:4])[0]  # FS_IOC_GETFLAGS
    except OSError:
        return None
    finally:
        os.close(fd)
    return "".join(c for bit, c in FLAG_BITS if v & bit)

def data_ranges(p, size):
    out = []
    fd = os.open(p, os.O_RDONLY)
    try:
        pos = 0
        while pos < size:
            try:
                d = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            h = os.lseek(fd, d, os.SEEK_HOLE)
            out.append([d, h - d])
            pos = h
    finally:
        os.close(fd)
    return out

def facts(full, fat=False):
    st = os.lstat(full)
    k = kind(st.st_mode)
    f = {"type": k}
    if not fat:
        f.update({"mode": "%04o" % stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid,
                  "nlink": st.st_nlink, "ino": st.st_ino})
    if k == "file":
        h = hashlib.sha256()
        with open(full, "rb") as fh:
            for b in iter(lambda: fh.read(1 << 20), b""):
                h.update(b)
        f.update({"size": st.st_size, "sha256": h.hexdigest()})
        if not fat:
            f["allocated_bytes"] = st.st_blocks * 512
            f["data_ranges"] = data_ranges(full, st.st_size)
    if not (fat and k == "dir"):  # mcopy keeps file mtimes, not directory ones
        f["mtime"] = iso(st.st_mtime_ns)
    if not fat:
        f.update({"mtime_ns": st.st_mtime_ns, "atime": iso(st.st_atime_ns), "atime_ns": st.st_atime_ns})
    if fat:
        return f
    if k == "symlink":
        f["target"] = dec(os.readlink(full))
    if k in ("char", "block"):
        f["major"], f["minor"] = os.major(st.st_rdev), os.minor(st.st_rdev)
    if k in ("file", "dir"):
        fl = inode_flags(full)
        if fl is not None:
            f["flags"] = fl
    xa = {}
    for n in sorted(os.listxattr(full, follow_symlinks=False)):
        xa[n] = os.getxattr(full, n, follow_symlinks=False).hex()
    f["xattrs"] = xa
    if any(n.startswith("system.posix_acl") for n in xa):
        out = subprocess.run(["getfacl", "-cpn", "--", full], capture_output=True, check=True).stdout.decode()
        f["acl"] = [l for l in out.splitlines() if l and not l.startswith("default:")]
        f["default_acl"] = [l[len("default:"):] for l in out.splitlines() if l.startswith("default:")]
    return f

def collect(v, out):
    if isinstance(v, str):
        out.append(v)
    elif isinstance(v, list):
        for x in v:
            collect(x, out)
    elif isinstance(v, dict):
        for x in v.values():
            collect(x, out)

def cmd_describe(root, notable_file, out, mode="posix"):
    fat = mode == "fat"
    notable = json.load(open(notable_file))
    paths = []
    collect(notable, paths)
    rootb = os.fsencode(root)
    files = {p: facts(rootb + enc(p), fat) for p in paths}
    counts, nbytes, links, maxdepth = {}, 0, {}, 0
    for dp, dns, fns in os.walk(rootb):
        if dns or fns:
            maxdepth = max(maxdepth, dp[len(rootb):].count(b"/") + 1)
        for n in dns + fns:
            st = os.lstat(os.path.join(dp, n))
            k = kind(st.st_mode)
            counts[k] = counts.get(k, 0) + 1
            if k == "file":
                nbytes += st.st_size
                if st.st_nlink > 1:
                    links[(st.st_dev, st.st_ino)] = st.st_nlink
    summary = {"entries": sum(counts.values()), "by_type": dict(sorted(counts.items())),
               "file_bytes": nbytes, "hardlinked_inodes": len(links), "max_depth": maxdepth}
    with open(out, "w") as f:
        json.dump({"notable": notable, "files": files, "summary": summary}, f, indent=2, ensure_ascii=False)

# ---- manifest
TYPE_NAMES = {
    "21686148-6449-6E6F-744E-656564454649": "BIOS boot",
    "C12A7328-F81F-11D2-BA4B-00A0C93EC3B8": "EFI System",
    "0FC63DAF-8483-4772-8E79-3D69D8477DE4": "Linux filesystem",
    "933AC7E1-2EB4-4F13-B844-0E14E2AEF915": "Linux home",
    "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709": "Linux root (x86-64)",
    "83": "Linux", "82": "Linux swap / Solaris", "5": "Extended", "f": "W95 Ext'd (LBA)",
}
EXTENDED = {"5", "f", "85"}

def load(p, default=None):
    return json.load(open(p)) if os.path.exists(p) else default

def run(cmd):
    return subprocess.run(cmd, capture_output=True, check=True).stdout.decode()

def probe(img, off, size):
    r = subprocess.run(["blkid", "-p", "-o", "export", "-O", str(off), "-S", str(size), img],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return None
    d = dict(l.split("=", 1) for l in r.stdout.splitlines() if "=" in l)
    d.pop("DEVNAME", None)
    fs = {"type": d.get("TYPE"), "uuid": d.get("UUID"), "label": d.get("LABEL")}
    for k in ("VERSION", "UUID_SUB", "SEC_TYPE"):
        if k in d:
            fs[k.lower()] = d[k]
    return fs

def superblock(path, fstype):
    if not os.path.exists(path):
        return {}
    t = open(path, errors="replace").read()
    if fstype in ("ext2", "ext3", "ext4"):
        g = lambda k: (re.search(r"^%s:\s*(.*)$" % re.escape(k), t, re.M) or [None, None])[1]
        return {"features": (g("Filesystem features") or "").split(), "inode_size": int(g("Inode size") or 0),
                "block_size": int(g("Block size") or 0), "state": g("Filesystem state"),
                "default_mount_options": g("Default mount options"), "revision": g("Filesystem revision #"),
                "reserved_blocks": int(g("Reserved block count") or 0), "hash_seed": g("Directory Hash Seed")}
    if fstype == "xfs":
        v = re.search(r"versionnum \[[^]]*\] = (\S+)", t)
        kv = {}
        for k, val in re.findall(r"(\w+)=([\w.]+)", t):
            kv.setdefault(k, val)
        keep = ["isize", "crc", "finobt", "sparse", "rmapbt", "reflink", "bigtime", "inobtcount", "nrext64",
                "attr", "projid32bit", "ftype", "bsize", "agcount"]
        return {"versionnum": v.group(1).split(",") if v else [], "info": {k: kv[k] for k in keep if k in kv}}
    if fstype == "btrfs":
        out = {}
        for k in ("compat_flags", "compat_ro_flags", "incompat_flags"):
            m = re.search(r"^%s\s+(0x[0-9a-f]+)(?:\s*\(([^)]*)\))?" % k, t, re.M | re.S)
            if m:
                out[k] = [x.strip() for x in (m.group(2) or "").split("|") if x.strip()]
        for k in ("nodesize", "sectorsize", "csum_type", "num_devices"):
            m = re.search(r"^%s\s+(.*)$" % k, t, re.M)
            if m:
                out[k] = m.group(1).strip()
        return out
    return {}

def subvolumes(meta, base):
    p = os.path.join(meta, base + ".subvols.txt")
    if not os.path.exists(p):
        return None
    subs = []
    for l in open(p):
        m = re.match(r"ID (\d+) gen \d+ parent (\d+) top level (\d+) .*?path (.*)$", l.strip())
        if m:
            subs.append({"id": int(m.group(1)), "parent": int(m.group(2)), "path": m.group(4)})
    dflt = open(os.path.join(meta, base + ".default.txt")).read()
    m = re.match(r"ID (\d+) .*?(?:path|name) (.*)$", dflt.strip())
    return {"subvolumes": subs, "default": {"id": int(m.group(1)), "path": m.group(2).strip()} if m else None}

def cmd_manifest(tmp, cache, meta, out, seconds, sha):
    man = {"format": "ferry-datadisks/1", "script_sha256_12": sha, "cache_dir": cache,
           "built_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "seconds_to_build_images": float(seconds),
           "conventions": {
               "sectors": "start/size/end are in sectors of sector_size bytes; *_bytes are bytes",
               "paths": "file paths are absolute inside their file system; a name that is not UTF-8 is written "
                        "'hex:' + the hex of the whole path's bytes",
               "xattrs": "xattr values are hex of the raw bytes",
               "times": "*_ns are integer ns since the epoch (UTC); mtime/atime the same as ISO 8601 UTC",
               "regions": "byte regions of the image: offset/length in bytes from the start of the disk image, "
                          "sha256 of exactly those bytes; nonzero_ranges are relative to the region",
               "facts": "files{} are facts observed on the source after the build (ino and allocation are the "
                        "source's own; a faithful copy matches everything else)"},
           "disks": {}}
    for name in ("gpt", "mbr"):
        img = os.path.join(tmp, name + ".raw")
        pt = json.loads(run(["sfdisk", "-J", img]))["partitiontable"]
        ss = int(pt.get("sectorsize", 512))
        st = os.stat(img)
        disk = {"file": name + ".raw", "path": os.path.join(cache, name + ".raw"), "size_bytes": st.st_size,
                "allocated_bytes": st.st_blocks * 512, "sha256": sha_region(img, 0, st.st_size),
                "label": pt["label"], "disk_id": pt["id"], "sector_size": ss}
        for k in ("firstlba", "lastlba"):
            if k in pt:
                disk[k.replace("lba", "_lba")] = pt[k]
        disk["sfdisk_dump"] = run(["sfdisk", "-d", img]).replace(tmp, cache)
        extra = load(os.path.join(meta, name + ".json"), {})
        for r in extra.get("regions", []):
            got = sha_region(img, r["offset"], r["length"])
            if got != r["sha256"]:
                raise SystemExit("%s: region %s changed after it was written" % (name, r["name"]))
        disk.update(extra)
        parts = []
        for p in pt["partitions"]:
            num = int(re.search(r"(\d+)$", p["node"]).group(1))
            start, size = int(p["start"]), int(p["size"])
            e = {"number": num, "start": start, "size": size, "end": start + size - 1,
                 "start_bytes": start * ss, "size_bytes": size * ss, "type": p["type"],
                 "type_name": TYPE_NAMES.get(p["type"].upper(), TYPE_NAMES.get(p["type"], "unknown"))}
            for k in ("uuid", "name", "attrs"):
                if k in p:
                    e[k] = p[k]
            if pt["label"] == "dos":
                e["bootable"] = bool(p.get("bootable"))
                e["kind"] = "extended" if p["type"] in EXTENDED else ("logical" if num >= 5 else "primary")
            base = "%s-p%d" % (name, num)
            notes = load(os.path.join(meta, base + ".json"), {})
            expect = notes.pop("expect", None)
            fs = None if p["type"] in EXTENDED else probe(img, start * ss, size * ss)
            if expect:
                for k, v in expect.items():
                    if not fs or fs.get(k) != v:
                        raise SystemExit("%s: expected %s=%s, blkid says %s" % (base, k, v, fs))
            if fs:
                fs.update(superblock(os.path.join(meta, base + ".super.txt"), fs["type"]))
                sv = subvolumes(meta, base)
                if sv:
                    fs.update(sv)
                for k in ("check", "mount_options"):
                    if k in notes:
                        fs[k] = notes.pop(k)
            e["fs"] = fs
            e.update(notes)
            for r in e.get("regions", []):
                if sha_region(img, r["offset"], r["length"]) != r["sha256"]:
                    raise SystemExit("%s: region %s changed after it was written" % (base, r["name"]))
            c = load(os.path.join(meta, base + ".content.json"))
            if c:
                e.update(c)
            parts.append(e)
        disk["partitions"] = parts
        man["disks"][name] = disk
    with open(out, "w") as f:
        json.dump(man, f, indent=2, ensure_ascii=False)
        f.write("\n")

if __name__ == "__main__":
    globals()["cmd_" + sys.argv[1]](*sys.argv[2:])
PYEOF
py() { "$PY" "$H" "$@"; }

# ---------------------------------------------------------------- fixed identities
MiB=1048576
sect() { echo $(($1 * 2048)); } # MiB -> 512-byte sectors

GPT_DISK_GUID=46455252-5947-4450-8000-000000000000
GPT_PART_GUID_PREFIX=46455252-5947-5054-8000-00000000000 # + partition number
T_BIOS=21686148-6449-6E6F-744E-656564454649
T_ESP=C12A7328-F81F-11D2-BA4B-00A0C93EC3B8
T_LINUX=0FC63DAF-8483-4772-8E79-3D69D8477DE4
T_HOME=933AC7E1-2EB4-4F13-B844-0E14E2AEF915
T_ROOT64=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709
T_UNKNOWN=7A9F3E21-5C84-4B6D-9E02-FE44A7E5C0DE # no tool knows this one

ESP_VOLID=1234ABCD
XFS_UUID=a1b2c3d4-0003-4000-8000-00000000f003
BTRFS_UUID=a1b2c3d4-0004-4000-8000-00000000f004
EXT4_UUID=a1b2c3d4-0005-4000-8000-00000000f005
EXT4_HASH_SEED=a1b2c3d4-0005-4000-8000-0000000005ee

MBR_DISK_ID=0x46455259
MEXT2_UUID=a1b2c3d4-1001-4000-8000-00000000f101
MEXT3_UUID=a1b2c3d4-1002-4000-8000-00000000f102
MEXT4_UUID=a1b2c3d4-1005-4000-8000-00000000f105
MSWAP_UUID=a1b2c3d4-1006-4000-8000-00000000f106

# GPT layout, MiB: 1 bios | 2 esp 64 | 66 xfs 320 | 386 btrfs 256 | 642 ext4 256 | (1 MiB gap) | 899 unknown 16
GPT_SIZE_MIB=1228
G1_S=$(sect 1) G1_N=$(sect 1)
G2_S=$(sect 2) G2_N=$(sect 64)
G3_S=$(sect 66) G3_N=$(sect 320)
G4_S=$(sect 386) G4_N=$(sect 256)
G5_S=$(sect 642) G5_N=$(sect 256)
G6_S=$(sect 899) G6_N=$(sect 16)

# MBR layout, MiB: 1 ext2 64 | 65 ext3 128 | 193 extended 322 { 194 ext4 256 | 451 swap 64 } | free to 600
MBR_SIZE_MIB=600
M1_S=$(sect 1) M1_N=$(sect 64)
M2_S=$(sect 65) M2_N=$(sect 128)
M3_S=$(sect 193) M3_N=$(sect 322)
M5_S=$(sect 194) M5_N=$(sect 256)
M6_S=$(sect 451) M6_N=$(sect 64)

# region JSON for the meta files: name offset length sha [nonzero ranges json]
region() { printf '{"name":"%s","offset":%d,"length":%d,"sha256":"%s"%s}' "$1" "$2" "$3" "$4" "${5:+,\"nonzero_ranges\":$5}"; }

# ================================================================ gpt.raw
GPT="$TMP/gpt.raw"
log "gpt.raw: ${GPT_SIZE_MIB} MiB sparse, GPT"
truncate -s "${GPT_SIZE_MIB}M" "$GPT"
sfdisk -q --no-reread --no-tell-kernel --wipe always "$GPT" <<EOF
label: gpt
label-id: $GPT_DISK_GUID
unit: sectors
sector-size: 512

start=$G1_S, size=$G1_N, type=$T_BIOS, uuid=${GPT_PART_GUID_PREFIX}1, name="ferry-bios"
start=$G2_S, size=$G2_N, type=$T_ESP, uuid=${GPT_PART_GUID_PREFIX}2, name="EFI System Partition"
start=$G3_S, size=$G3_N, type=$T_LINUX, uuid=${GPT_PART_GUID_PREFIX}3, name="ferry-xfs"
start=$G4_S, size=$G4_N, type=$T_HOME, uuid=${GPT_PART_GUID_PREFIX}4, name="ferry-btrfs"
start=$G5_S, size=$G5_N, type=$T_ROOT64, uuid=${GPT_PART_GUID_PREFIX}5, name="ferry-root ext4", attrs="LegacyBIOSBootable"
start=$G6_S, size=$G6_N, type=$T_UNKNOWN, uuid=${GPT_PART_GUID_PREFIX}6, name="ferry-unknown-données", attrs="GUID:60,63"
EOF

# protective MBR boot code (as GRUB's boot.img would sit there) and the BIOS boot partition's contents
sha=$(py fill "$GPT" 0 0 440 FERRY-PMBR-BOOTCODE)
py json "$META/gpt.json" "regions:=[$(region pmbr-bootcode 0 440 "$sha")]"
sha=$(py fill "$GPT" $((G1_S * 512)) 0 $MiB FERRY-BIOSBOOT)
py json "$META/gpt-p1.json" role=bios-boot \
  "content:={\"kind\":\"pattern\",\"label\":\"FERRY-BIOSBOOT\",\"record\":\"32-byte records 'FERRY-BIOSBOOT <offset as 10 hex digits>' padded with '.' and ending in a newline\"}" \
  "regions:=[$(region bios-boot $((G1_S * 512)) $MiB "$sha" "[[0,$MiB]]")]"

# p6: unknown type, pattern in some MiB, zeros elsewhere (including an unaligned run and the very end)
P6=$((G6_S * 512))
regs=()
for r in "0 $MiB" "$((3 * MiB)) $((2 * MiB))" "$((9 * MiB + 512)) 4096" "$((16 * MiB - 4096)) 4096"; do
  set -- $r
  py fill "$GPT" $((P6 + $1)) "$1" "$2" FERRY-UNKNOWN >/dev/null
  regs+=("[$1,$2]")
done
sha=$(py sha "$GPT" "$P6" $((16 * MiB)))
py json "$META/gpt-p6.json" role=unknown-data \
  "content:={\"kind\":\"pattern\",\"label\":\"FERRY-UNKNOWN\",\"zero_elsewhere\":true}" \
  "regions:=[$(region unknown-partition "$P6" $((16 * MiB)) "$sha" "[$(IFS=,; echo "${regs[*]}")]")]"

# ---------------------------------------------------------------- p2: ESP, FAT32 written with mtools
log "gpt p2: ESP (FAT32, mtools)"
S="$W/stage/esp"
mkdir -p "$S/EFI/BOOT" "$S/EFI/debian" "$S/EFI/ferry/nested/deeper"
{ printf 'MZ'; "$PY" -c 'import random,sys; sys.stdout.buffer.write(random.Random("bootx64").randbytes(65534))'; } >"$S/EFI/BOOT/BOOTX64.EFI"
"$PY" -c 'import random,sys; sys.stdout.buffer.write(b"MZ" + random.Random("grubx64").randbytes(200000))' >"$S/EFI/debian/grubx64.efi"
cat >"$S/EFI/debian/grub.cfg" <<EOF
search.fs_uuid $EXT4_UUID root hd0,gpt5
set prefix=(\$root)'/boot/grub'
configfile \$prefix/grub.cfg
EOF
printf 'deep inside the ESP\n' >"$S/EFI/ferry/nested/deeper/note.txt"
printf 'a long file name with spaces\n' >"$S/EFI/ferry/Long File Name With Spaces.txt"
: >"$S/EFI/ferry/empty.txt"
printf 'hidden, system, read-only\n' >"$S/EFI/ferry/HIDDEN.SYS"
printf 'fs0:\\EFI\\BOOT\\BOOTX64.EFI\n' >"$S/startup.nsh"
# FAT keeps local time with 2 s resolution; TZ=UTC here, so these are stored exactly
touch -d '2022-06-15 12:34:56 UTC' "$S/EFI/BOOT/BOOTX64.EFI"
touch -d '2023-01-02 03:04:06 UTC' "$S/EFI/debian/grub.cfg"
touch -d '2021-11-30 23:58:00 UTC' "$S/EFI/debian/grubx64.efi" "$S/startup.nsh"
touch -d '2020-02-29 12:00:00 UTC' "$S/EFI/ferry/nested/deeper/note.txt" "$S/EFI/ferry/Long File Name With Spaces.txt" \
  "$S/EFI/ferry/empty.txt" "$S/EFI/ferry/HIDDEN.SYS"

attach "$GPT" $((G2_S * 512)) $((G2_N * 512))
dev=$REPLY
mkfs.vfat -F 32 -i "$ESP_VOLID" -n FERRYESP "$dev" >&2
export MTOOLS_SKIP_CHECK=1
mcopy -i "$dev" -s -m -Q "$S/EFI" "$S/startup.nsh" ::/
mattrib -i "$dev" +h +s +r ::/EFI/ferry/HIDDEN.SYS
mdir -i "$dev" -/ -a ::/ >&2
fsck.vfat -n "$dev" >&2
[ "$(mcopy -i "$dev" ::/EFI/BOOT/BOOTX64.EFI - | sha256sum)" = "$(sha256sum <"$S/EFI/BOOT/BOOTX64.EFI")" ] ||
  die "ESP read-back of BOOTX64.EFI differs"
detach "$dev"
cat >"$W/esp.notable.json" <<'EOF'
{
  "bootloader": "/EFI/BOOT/BOOTX64.EFI",
  "grub_cfg": "/EFI/debian/grub.cfg",
  "grub_efi": "/EFI/debian/grubx64.efi",
  "nested": "/EFI/ferry/nested/deeper/note.txt",
  "long_name": "/EFI/ferry/Long File Name With Spaces.txt",
  "empty": "/EFI/ferry/empty.txt",
  "hidden_system_readonly": "/EFI/ferry/HIDDEN.SYS",
  "root_file": "/startup.nsh",
  "dirs": ["/EFI", "/EFI/BOOT", "/EFI/debian", "/EFI/ferry", "/EFI/ferry/nested", "/EFI/ferry/nested/deeper"]
}
EOF
py describe "$S" "$W/esp.notable.json" "$META/gpt-p2.content.json" fat
py json "$META/gpt-p2.json" role=esp check="fsck.vfat -n: clean" \
  "expect:={\"type\":\"vfat\",\"uuid\":\"1234-ABCD\",\"label\":\"FERRYESP\",\"version\":\"FAT32\"}" \
  written_with="mkfs.vfat -F 32 -i $ESP_VOLID -n FERRYESP; mcopy -s -m (file mtimes kept, TZ=UTC); mattrib +h +s +r on HIDDEN.SYS" \
  "dos_attributes:={\"/EFI/ferry/HIDDEN.SYS\":\"ASHR\"}"

# ---------------------------------------------------------------- p3: xfs
log "gpt p3: xfs"
attach "$GPT" $((G3_S * 512)) $((G3_N * 512))
dev=$REPLY
mkfs.xfs -q -f -m uuid="$XFS_UUID" -L ferry-xfs "$dev"
m="$W/mnt/xfs"
mnt "$dev" "$m" -t xfs -o noatime,nouuid
n=$(py tree "$m/tree" 10 40 xfs)
log "xfs: $n tree files"
mkdir -p "$m/links" "$m/attrs" "$m/big" "$m/empty-dir" "$m/times"
printf 'xfs original\n' >"$m/links/original"
ln "$m/links/original" "$m/links/hardlink"
ln -s original "$m/links/symlink"
ln -s /etc/os-release "$m/links/absolute-symlink"
printf 'xattr carrier\n' >"$m/attrs/xattrs"
setfattr -n user.ferry.color -v blue "$m/attrs/xattrs"
setfattr -n user.ferry.binary -v 0x00ff10fe "$m/attrs/xattrs"
setfattr -n trusted.ferry.level -v 9 "$m/attrs/xattrs"
setfattr -n user.ferry.big -v "0x$("$PY" -c 'print("ab" * 3000)')" "$m/attrs/xattrs" # remote (out of inode) value
printf 'acl carrier\n' >"$m/attrs/acl-file"
setfacl -m u:12345:rw-,g:54321:r-- "$m/attrs/acl-file"
mkdir "$m/attrs/acl-dir"
setfacl -d -m u:12345:rwx,g:54321:r-x "$m/attrs/acl-dir"
printf 'inherits the default ACL\n' >"$m/attrs/acl-dir/inherited"
py random "$m/big/random-3MiB" xfs-random $((3 * MiB))
cp --reflink=always "$m/big/random-3MiB" "$m/big/reflink-copy"
: >"$m/empty-file"
printf 'times\n' >"$m/times/mtime-ns"
touch -m -d '2001-02-03 04:05:06.123456789 UTC' "$m/times/mtime-ns"
touch -a -d '1999-12-31 23:59:59.987654321 UTC' "$m/times/mtime-ns"
printf 'after 2038\n' >"$m/times/post-2038"
touch -d '2100-01-01 00:00:00.000000001 UTC' "$m/times/post-2038"
cat >"$W/xfs.notable.json" <<'EOF'
{
  "tree": ["/tree/dir00/file-000.txt", "/tree/dir09/file-039.txt"],
  "hardlink_group": ["/links/original", "/links/hardlink"],
  "symlink": "/links/symlink",
  "absolute_symlink": "/links/absolute-symlink",
  "xattrs": "/attrs/xattrs",
  "acl_file": "/attrs/acl-file",
  "default_acl_dir": "/attrs/acl-dir",
  "inherited_acl": "/attrs/acl-dir/inherited",
  "random": "/big/random-3MiB",
  "reflink_copy": "/big/reflink-copy",
  "empty_dir": "/empty-dir",
  "empty_file": "/empty-file",
  "mtime_ns": "/times/mtime-ns",
  "post_2038": "/times/post-2038"
}
EOF
py describe "$m" "$W/xfs.notable.json" "$META/gpt-p3.content.json"
umnt "$m"
xfs_repair -n "$dev" >&2 2>&1 || die "xfs_repair -n found problems"
xfs_db -r -c version -c info "$dev" >"$META/gpt-p3.super.txt"
detach "$dev"
py json "$META/gpt-p3.json" role=xfs-data check="xfs_repair -n: clean" mount_options="xfs refuses a same-UUID twin: use -o nouuid" \
  "expect:={\"type\":\"xfs\",\"uuid\":\"$XFS_UUID\",\"label\":\"ferry-xfs\"}"

# ---------------------------------------------------------------- p4: btrfs with subvolumes
log "gpt p4: btrfs"
attach "$GPT" $((G4_S * 512)) $((G4_N * 512))
dev=$REPLY
mkfs.btrfs -q -f -U "$BTRFS_UUID" -L ferry-btrfs "$dev" >&2
m="$W/mnt/btrfs"
mnt "$dev" "$m" -t btrfs -o noatime,subvolid=5
btrfs subvolume create "$m/@data" >&2
btrfs subvolume create "$m/@home" >&2
btrfs subvolume create "$m/@home/nested" >&2
printf 'only visible when the top level (subvolid=5) is mounted\n' >"$m/toplevel-only.txt"
printf 'default subvolume @data\n' >"$m/@data/readme.txt"
mkdir -p "$m/@data/docs" "$m/@data/empty-dir"
for i in $(seq 1 20); do printf 'doc %d\n' "$i" >"$m/@data/docs/doc-$i.txt"; done
printf 'hard linked in @data\n' >"$m/@data/docs/hl-1"
ln "$m/@data/docs/hl-1" "$m/@data/docs/hl-2"
setfattr -n user.ferry.subvol -v @data "$m/@data/readme.txt"
setfattr -n trusted.ferry.level -v 4 "$m/@data/readme.txt"
setfacl -m u:12345:r-- "$m/@data/readme.txt"
: >"$m/@data/compressed.txt"
btrfs property set "$m/@data/compressed.txt" compression zstd
"$PY" -c 'import sys; sys.stdout.buffer.write((b"ferry compresses well\n" * 50000)[:1 << 20])' >"$m/@data/compressed.txt"
: >"$m/@data/nocow.img"
chattr +C "$m/@data/nocow.img"
py random "$m/@data/nocow.img" btrfs-nocow $MiB # same inode: python opens with O_TRUNC, flag kept
py random "$m/@data/random-2MiB" btrfs-random $((2 * MiB))
cp --reflink=always "$m/@data/random-2MiB" "$m/@data/reflink-copy"
ln -s readme.txt "$m/@data/readme-link"
mkdir -p "$m/@home/alice"
printf 'alice notes\n' >"$m/@home/alice/notes.txt"
printf 'export PS1=x\n' >"$m/@home/alice/.bashrc"
chown -R 1000:1000 "$m/@home/alice"
chmod 0700 "$m/@home/alice"
chmod 0600 "$m/@home/alice/notes.txt"
printf 'inside a nested subvolume\n' >"$m/@home/nested/inner.txt"
btrfs subvolume set-default "$m/@data" >&2
cat >"$W/btrfs.notable.json" <<'EOF'
{
  "subvolume_roots": ["/@data", "/@home", "/@home/nested"],
  "toplevel_only": "/toplevel-only.txt",
  "default_subvolume_file": "/@data/readme.txt",
  "hardlink_group": ["/@data/docs/hl-1", "/@data/docs/hl-2"],
  "compressed_zstd": "/@data/compressed.txt",
  "nocow": "/@data/nocow.img",
  "random": "/@data/random-2MiB",
  "reflink_copy": "/@data/reflink-copy",
  "symlink": "/@data/readme-link",
  "empty_dir": "/@data/empty-dir",
  "home_file": "/@home/alice/notes.txt",
  "home_dir": "/@home/alice",
  "nested_subvolume_file": "/@home/nested/inner.txt"
}
EOF
py describe "$m" "$W/btrfs.notable.json" "$META/gpt-p4.content.json"
btrfs subvolume list -p "$m" >"$META/gpt-p4.subvols.txt"
btrfs subvolume get-default "$m" >"$META/gpt-p4.default.txt"
cat "$META/gpt-p4.subvols.txt" "$META/gpt-p4.default.txt" >&2
umnt "$m"
btrfs check --readonly "$dev" >&2 2>&1 || die "btrfs check found problems"
btrfs inspect-internal dump-super "$dev" >"$META/gpt-p4.super.txt"
detach "$dev"
py json "$META/gpt-p4.json" role=btrfs-subvolumes check="btrfs check --readonly: clean" \
  mount_options="plain mount shows the default subvolume @data; use -o subvolid=5 for the top level" \
  "expect:={\"type\":\"btrfs\",\"uuid\":\"$BTRFS_UUID\",\"label\":\"ferry-btrfs\"}"

# ---------------------------------------------------------------- p5: ext4 full of awkward files
log "gpt p5: ext4 (awkward files)"
attach "$GPT" $((G5_S * 512)) $((G5_N * 512))
dev=$REPLY
mkfs.ext4 -q -F -b 4096 -U "$EXT4_UUID" -L ferry-ext4 -E hash_seed="$EXT4_HASH_SEED" "$dev" # 4 KiB blocks (a 256 MiB fs would get 1 KiB)
m="$W/mnt/ext4"
mnt "$dev" "$m" -t ext4 -o noatime
mkdir -p "$m"/{hardlinks/{a,b,c},xattrs,acl,sparse,devices,unicode,long,owners,modes,attrs,empty,symlinks,times,random}

# hard-link groups: three names across three directories, and a pair
printf 'one inode, three names\n' >"$m/hardlinks/a/one"
ln "$m/hardlinks/a/one" "$m/hardlinks/b/two"
ln "$m/hardlinks/a/one" "$m/hardlinks/c/three"
printf 'second group\n' >"$m/hardlinks/pair-1"
ln "$m/hardlinks/pair-1" "$m/hardlinks/c/pair-2"
setfattr -n user.ferry.group -v pair "$m/hardlinks/pair-1" # xattrs belong to the inode: both names carry it

# xattrs
printf 'xattr carrier\n' >"$m/xattrs/user-and-trusted"
setfattr -n user.ferry.color -v blue "$m/xattrs/user-and-trusted"
setfattr -n user.ferry.binary -v 0x00ff10fe "$m/xattrs/user-and-trusted"
setfattr -n user.ferry.empty "$m/xattrs/user-and-trusted"
setfattr -n trusted.ferry.level -v 9 "$m/xattrs/user-and-trusted"
printf 'big xattr value\n' >"$m/xattrs/big-value"
setfattr -n user.ferry.big -v "0x$("$PY" -c 'print("cd" * 3000)')" "$m/xattrs/big-value"
setfattr -n user.ferry.dir -v yes "$m/xattrs"
ln -s user-and-trusted "$m/xattrs/symlink-with-trusted-xattr"
setfattr -h -n trusted.ferry.on-symlink -v yes "$m/xattrs/symlink-with-trusted-xattr" # user.* is refused on symlinks
printf '#!/bin/sh\necho capable\n' >"$m/xattrs/cap-binary"
chmod 0755 "$m/xattrs/cap-binary"
if ! setcap cap_net_raw,cap_net_bind_service+ep "$m/xattrs/cap-binary"; then
  log "setcap failed; writing security.capability (v2) by hand"
  setfattr -n security.capability -v 0x0100000200240000000000000000000000000000 "$m/xattrs/cap-binary"
fi
printf 'selinux label\n' >"$m/xattrs/selinux-labelled"
SELINUX_OK=true
setfattr -n security.selinux -v 'system_u:object_r:etc_t:s0' "$m/xattrs/selinux-labelled" ||
  { SELINUX_OK=false; log "security.selinux refused on this host (left out)"; }

# POSIX ACLs: access ACL on a file, access + default ACL on a directory, inheritance
printf 'acl file\n' >"$m/acl/file-acl"
setfacl -m u:12345:rw-,g:54321:r--,u:0:r-- "$m/acl/file-acl"
mkdir "$m/acl/dir-default"
setfacl -m u:12345:rwx "$m/acl/dir-default"
setfacl -d -m u:12345:rwx,g:54321:r-x,o::--- "$m/acl/dir-default"
printf 'inherits\n' >"$m/acl/dir-default/inherited-file"
mkdir "$m/acl/dir-default/inherited-dir"

# sparse files
py sparse "$m/sparse/big-sparse" $((100 * MiB)) s1 "0:4096,$((MiB + 123)):1000,$((50 * MiB)):65536,$((100 * MiB - 4096)):4096"
py sparse "$m/sparse/trailing-hole" $((20 * MiB)) s2 "0:$MiB"
py sparse "$m/sparse/leading-hole" $((8 * MiB + 4096)) s3 "$((8 * MiB)):4096"
py sparse "$m/sparse/all-hole" $((10 * MiB)) s4 ""

# device nodes, fifo, socket
mknod "$m/devices/char-1-3" c 1 3
mknod "$m/devices/block-7-0" b 7 0
mknod "$m/devices/char-259-300000" c 259 300000
mkfifo -m 0640 "$m/devices/fifo"
py socket "$m/devices/socket"

# awkward names
for n in "héllo wörld ✓" "日本語のファイル名.txt" "emoji-😀🚀🦀.txt" "café-nfc" $'cafe\xcc\x81-nfd' \
  $'name with\nnewline' $'tab\there' "-leading-dash" " leading space" "trailing space " 'glob*?[x]' \
  'back\slash' "quote'\"both" $'latin1-\xe9t\xe9'; do
  printf 'name: %s\n' "$n" >"$m/unicode/$n"
done
mkdir "$m/unicode/Ünïcödé-dir"
printf 'inside\n' >"$m/unicode/Ünïcödé-dir/файл.txt"
L255=$(printf 'L%.0s' $(seq 251)).txt
J255=$(printf '日%.0s' $(seq 85)) # 85 x 3 bytes = 255 bytes
D255=$(printf 'D%.0s' $(seq 255))
printf 'ascii name of 255 bytes\n' >"$m/long/$L255"
printf 'utf-8 name of 255 bytes\n' >"$m/long/$J255"
mkdir "$m/long/$D255"
printf 'in a dir with a 255-byte name\n' >"$m/long/$D255/$L255"

# deep tree: 70 levels
p="$m/deep"
for i in $(seq -w 1 70); do p="$p/level-$i-of-seventy"; done
mkdir -p "$p"
printf 'bottom of a 70-level tree\n' >"$p/bottom.txt"
DEEP_REL=${p#"$m"}

# owners with no name in /etc/passwd
printf 'unowned\n' >"$m/owners/uid-12345-gid-54321"
chown 12345:54321 "$m/owners/uid-12345-gid-54321"
mkdir "$m/owners/dir-23456-65432"
printf 'in unowned dir\n' >"$m/owners/dir-23456-65432/file"
chown -R 23456:65432 "$m/owners/dir-23456-65432"
printf 'root:54321\n' >"$m/owners/root-gid-54321"
chown 0:54321 "$m/owners/root-gid-54321"
printf 'huge ids\n' >"$m/owners/uid-4294967294"
chown 4294967294:4294967294 "$m/owners/uid-4294967294"
ln -s uid-12345-gid-54321 "$m/owners/symlink-owned-12345"
chown -h 12345:54321 "$m/owners/symlink-owned-12345"

# modes (chown first: it clears set-id bits)
for spec in setuid:4755 setgid:2755 setuid-setgid:6755 setuid-noexec:4644 sticky-file:1755 \
  mode-0000:0000 mode-0400:0400 mode-0777:0777 mode-0640:0640; do
  printf '%s\n' "${spec%%:*}" >"$m/modes/${spec%%:*}"
  chmod "${spec##*:}" "$m/modes/${spec%%:*}"
done
printf 'setgid 12345-owned\n' >"$m/modes/setgid-unowned"
chown 12345:54321 "$m/modes/setgid-unowned"
chmod 2750 "$m/modes/setgid-unowned"
mkdir "$m/modes/sticky-dir" "$m/modes/setgid-dir" "$m/modes/dir-0000"
printf 'in a 0000 dir\n' >"$m/modes/dir-0000/inside"
chmod 1777 "$m/modes/sticky-dir"
chmod 2775 "$m/modes/setgid-dir"
chmod 0000 "$m/modes/dir-0000"

# empty things
: >"$m/empty/empty-file"
mkdir -p "$m/empty/empty-dir" "$m/empty/nested/empty/dirs"

# symlinks
ln -s does/not/exist "$m/symlinks/dangling"
ln -s /etc/passwd "$m/symlinks/absolute"
ln -s ../hardlinks/a/one "$m/symlinks/relative"
ln -s ../deep "$m/symlinks/dir-link"
ln -s self-loop "$m/symlinks/self-loop"
ln -s "../unicode/héllo wörld ✓" "$m/symlinks/to-unicode"
ln -s "$(printf 't%.0s' $(seq 200))" "$m/symlinks/long-target-200"
ln -s "$(printf 'x/%.0s' $(seq 2000))" "$m/symlinks/long-target-4000"

# random data
py random "$m/random/random-3MiB" ext4-r1 $((3 * MiB))
py random "$m/random/random-5MiB-plus-123" ext4-r2 $((5 * MiB + 123))

# attribute carriers (flags are set at the very end)
printf 'immutable\n' >"$m/attrs/immutable.txt"
printf 'append-only log line 1\n' >"$m/attrs/append-only.log"
printf 'nodump\n' >"$m/attrs/nodump"
printf 'noatime flag\n' >"$m/attrs/noatime-flag"
mkdir "$m/attrs/immutable-dir"
printf 'inside an immutable dir\n' >"$m/attrs/immutable-dir/file"

# times with nanoseconds (after every child exists, before the flags)
printf 'times\n' >"$m/times/mtime-ns"
printf 'pre 1970\n' >"$m/times/pre-1970"
printf 'post 2038\n' >"$m/times/post-2038"
mkdir "$m/times/dir-with-time"
printf 'x\n' >"$m/times/dir-with-time/child"
ln -s mtime-ns "$m/times/symlink-with-time"
touch -m -d '2001-02-03 04:05:06.123456789 UTC' "$m/times/mtime-ns"
touch -a -d '1999-12-31 23:59:59.987654321 UTC' "$m/times/mtime-ns"
touch -d '1960-06-15 12:00:00.5 UTC' "$m/times/pre-1970"
touch -d '2100-01-01 00:00:00.000000001 UTC' "$m/times/post-2038"
touch -h -m -d '2005-05-05 05:05:05.050505050 UTC' "$m/times/symlink-with-time"
touch -h -a -d '2006-06-06 06:06:06.060606060 UTC' "$m/times/symlink-with-time"
touch -m -d '2010-10-10 10:10:10.101010101 UTC' "$m/times/dir-with-time"
touch -a -d '2011-11-11 11:11:11.111111111 UTC' "$m/times/dir-with-time"

chattr +i "$m/attrs/immutable.txt"
chattr +a "$m/attrs/append-only.log"
chattr +d "$m/attrs/nodump"
chattr +A "$m/attrs/noatime-flag"
chattr +i "$m/attrs/immutable-dir"

cat >"$W/ext4.notable.json" <<EOF
{
  "hardlink_group_3": ["/hardlinks/a/one", "/hardlinks/b/two", "/hardlinks/c/three"],
  "hardlink_group_2": ["/hardlinks/pair-1", "/hardlinks/c/pair-2"],
  "xattrs_user_trusted": "/xattrs/user-and-trusted",
  "xattr_big_value": "/xattrs/big-value",
  "xattr_on_dir": "/xattrs",
  "trusted_xattr_on_symlink": "/xattrs/symlink-with-trusted-xattr",
  "capability": "/xattrs/cap-binary",
  $($SELINUX_OK && echo '"selinux_label": "/xattrs/selinux-labelled",' || true)
  "acl_file": "/acl/file-acl",
  "default_acl_dir": "/acl/dir-default",
  "acl_inherited": ["/acl/dir-default/inherited-file", "/acl/dir-default/inherited-dir"],
  "sparse": ["/sparse/big-sparse", "/sparse/trailing-hole", "/sparse/leading-hole", "/sparse/all-hole"],
  "sparse_100MiB": "/sparse/big-sparse",
  "sparse_trailing_hole": "/sparse/trailing-hole",
  "char_devices": ["/devices/char-1-3", "/devices/char-259-300000"],
  "block_device": "/devices/block-7-0",
  "fifo": "/devices/fifo",
  "socket": "/devices/socket",
  "unicode_names": ["/unicode/héllo wörld ✓", "/unicode/日本語のファイル名.txt", "/unicode/emoji-😀🚀🦀.txt",
                    "/unicode/Ünïcödé-dir", "/unicode/Ünïcödé-dir/файл.txt"],
  "nfc_nfd_pair": ["/unicode/café-nfc", "/unicode/cafe\u0301-nfd"],
  "awkward_names": ["/unicode/name with\nnewline", "/unicode/tab\there", "/unicode/-leading-dash",
                    "/unicode/ leading space", "/unicode/trailing space ", "/unicode/glob*?[x]",
                    "/unicode/back\\\\slash", "/unicode/quote'\"both"],
  "non_utf8_name": "hex:$(printf '/unicode/latin1-\xe9t\xe9' | od -An -tx1 | tr -d ' \n')",
  "name_255_ascii": "/long/$L255",
  "name_255_utf8": "/long/$J255",
  "dir_255": "/long/$D255",
  "in_dir_255": "/long/$D255/$L255",
  "deep_tree_70_levels": "$DEEP_REL/bottom.txt",
  "unowned_file": "/owners/uid-12345-gid-54321",
  "unowned_dir": "/owners/dir-23456-65432",
  "unowned_in_dir": "/owners/dir-23456-65432/file",
  "root_uid_unnamed_gid": "/owners/root-gid-54321",
  "uid_4294967294": "/owners/uid-4294967294",
  "unowned_symlink": "/owners/symlink-owned-12345",
  "setuid": "/modes/setuid",
  "setgid": "/modes/setgid",
  "setuid_setgid": "/modes/setuid-setgid",
  "setuid_noexec": "/modes/setuid-noexec",
  "setgid_unowned": "/modes/setgid-unowned",
  "sticky_file": "/modes/sticky-file",
  "sticky_dir": "/modes/sticky-dir",
  "setgid_dir": "/modes/setgid-dir",
  "mode_0000": "/modes/mode-0000",
  "mode_0400": "/modes/mode-0400",
  "mode_0777": "/modes/mode-0777",
  "dir_0000": "/modes/dir-0000",
  "in_dir_0000": "/modes/dir-0000/inside",
  "immutable": "/attrs/immutable.txt",
  "append_only": "/attrs/append-only.log",
  "nodump": "/attrs/nodump",
  "noatime_flag": "/attrs/noatime-flag",
  "immutable_dir": "/attrs/immutable-dir",
  "in_immutable_dir": "/attrs/immutable-dir/file",
  "empty_file": "/empty/empty-file",
  "empty_dirs": ["/empty/empty-dir", "/empty/nested/empty/dirs"],
  "symlink_dangling": "/symlinks/dangling",
  "symlink_absolute": "/symlinks/absolute",
  "symlink_relative": "/symlinks/relative",
  "symlink_to_dir": "/symlinks/dir-link",
  "symlink_self_loop": "/symlinks/self-loop",
  "symlink_to_unicode": "/symlinks/to-unicode",
  "symlink_long_target_200": "/symlinks/long-target-200",
  "symlink_long_target_4000": "/symlinks/long-target-4000",
  "mtime_ns": "/times/mtime-ns",
  "pre_1970": "/times/pre-1970",
  "post_2038": "/times/post-2038",
  "dir_mtime_ns": "/times/dir-with-time",
  "symlink_times_ns": "/times/symlink-with-time",
  "random": ["/random/random-3MiB", "/random/random-5MiB-plus-123"]
}
EOF
py describe "$m" "$W/ext4.notable.json" "$META/gpt-p5.content.json"
umnt "$m"
e2fsck -fn "$dev" >&2 2>&1 || die "e2fsck -fn found problems in gpt p5"
dumpe2fs -h "$dev" >"$META/gpt-p5.super.txt" 2>/dev/null
detach "$dev"
py json "$META/gpt-p5.json" role=ext4-awkward check="e2fsck -fn: clean" \
  "expect:={\"type\":\"ext4\",\"uuid\":\"$EXT4_UUID\",\"label\":\"ferry-ext4\"}" \
  "expected_times:={\"/times/mtime-ns\":{\"mtime\":\"2001-02-03T04:05:06.123456789Z\",\"atime\":\"1999-12-31T23:59:59.987654321Z\"},\"/times/pre-1970\":{\"mtime\":\"1960-06-15T12:00:00.500000000Z\"},\"/times/post-2038\":{\"mtime\":\"2100-01-01T00:00:00.000000001Z\"},\"/times/dir-with-time\":{\"mtime\":\"2010-10-10T10:10:10.101010101Z\",\"atime\":\"2011-11-11T11:11:11.111111111Z\"},\"/times/symlink-with-time\":{\"mtime\":\"2005-05-05T05:05:05.050505050Z\",\"atime\":\"2006-06-06T06:06:06.060606060Z\"}}"

# ================================================================ mbr.raw
MBR="$TMP/mbr.raw"
log "mbr.raw: ${MBR_SIZE_MIB} MiB sparse, MBR with an extended partition"
truncate -s "${MBR_SIZE_MIB}M" "$MBR"
sfdisk -q --no-reread --no-tell-kernel --wipe always "$MBR" <<EOF
label: dos
label-id: $MBR_DISK_ID
unit: sectors
sector-size: 512

start=$M1_S, size=$M1_N, type=83, bootable
start=$M2_S, size=$M2_N, type=83
start=$M3_S, size=$M3_N, type=5
start=$M5_S, size=$M5_N, type=83
start=$M6_S, size=$M6_N, type=82
EOF
sha1=$(py fill "$MBR" 0 0 440 FERRY-MBR-BOOTCODE) # bytes 440.. (disk id, table, 55AA) untouched
sha2=$(py fill "$MBR" 512 0 $((M1_S * 512 - 512)) FERRY-MBR-GAP)
py json "$META/mbr.json" \
  "regions:=[$(region mbr-bootcode 0 440 "$sha1"),$(region post-mbr-gap 512 $((M1_S * 512 - 512)) "$sha2")]"

# mbr_ext NUM START SIZE MKFS UUID LABEL FSTYPE [mkfs options...] -> mounted at $m, loop in $dev
mbr_ext() {
  local num=$1 start=$2 size=$3 mk=$4 uuid=$5 label=$6 fst=$7
  shift 7
  log "mbr p$num: $fst"
  attach "$MBR" $((start * 512)) $((size * 512))
  dev=$REPLY
  "$mk" -q -F -U "$uuid" -L "$label" "$@" "$dev"
  m="$W/mnt/mbr-p$num"
  mnt "$dev" "$m" -t "$fst" -o noatime
}
mbr_ext_done() { # NUM FSTYPE UUID LABEL ROLE
  umnt "$m"
  e2fsck -fn "$dev" >&2 2>&1 || die "e2fsck -fn found problems in mbr p$1"
  dumpe2fs -h "$dev" >"$META/mbr-p$1.super.txt" 2>/dev/null
  detach "$dev"
  py json "$META/mbr-p$1.json" role="$5" check="e2fsck -fn: clean" \
    "expect:={\"type\":\"$2\",\"uuid\":\"$3\",\"label\":\"$4\"}"
}

# p1: ext2, a /boot
mbr_ext 1 "$M1_S" "$M1_N" mkfs.ext2 "$MEXT2_UUID" ferry-mext2 ext2
py random "$m/vmlinuz-ferry" mbr-kernel $MiB
ln -s vmlinuz-ferry "$m/vmlinuz"
mkdir -p "$m/grub" "$m/links"
printf 'set root=(hd0,msdos1)\nlinux /vmlinuz root=UUID=%s\n' "$MEXT3_UUID" >"$m/grub/grub.cfg"
printf 'boot notes\n' >"$m/boot-notes.txt"
setfattr -n user.ferry.fs -v ext2 "$m/boot-notes.txt"
setfattr -n trusted.ferry.fs -v ext2 "$m/boot-notes.txt"
printf 'linked\n' >"$m/links/a"
ln "$m/links/a" "$m/links/b"
touch -d '2012-12-12 12:12:12.121212121 UTC' "$m/grub/grub.cfg"
cat >"$W/mbr1.notable.json" <<'EOF'
{ "kernel": "/vmlinuz-ferry", "symlink": "/vmlinuz", "grub_cfg": "/grub/grub.cfg",
  "xattrs": "/boot-notes.txt", "hardlink_group": ["/links/a", "/links/b"] }
EOF
py describe "$m" "$W/mbr1.notable.json" "$META/mbr-p1.content.json"
mbr_ext_done 1 ext2 "$MEXT2_UUID" ferry-mext2 ext2-boot

# p2: ext3, a root
mbr_ext 2 "$M2_S" "$M2_N" mkfs.ext3 "$MEXT3_UUID" ferry-mext3 ext3
mkdir -p "$m/etc" "$m/usr/bin" "$m/var/log"
cat >"$m/etc/fstab" <<EOF
UUID=$MEXT3_UUID / ext3 defaults 0 1
UUID=$MEXT2_UUID /boot ext2 defaults 0 2
UUID=$MEXT4_UUID /home ext4 defaults 0 2
UUID=$MSWAP_UUID none swap sw 0 0
EOF
printf 'ferry-mbr\n' >"$m/etc/hostname"
printf '#!/bin/sh\necho ferry\n' >"$m/usr/bin/ferry-tool"
chmod 0755 "$m/usr/bin/ferry-tool"
ln "$m/usr/bin/ferry-tool" "$m/usr/bin/ferry-tool-alias"
cp "$m/usr/bin/ferry-tool" "$m/usr/bin/ferry-suid"
chmod 4755 "$m/usr/bin/ferry-suid"
setfattr -n user.ferry.fs -v ext3 "$m/etc/hostname"
setfattr -n trusted.ferry.fs -v ext3 "$m/etc/hostname"
printf 'acl\n' >"$m/var/log/acl.log"
setfacl -m u:12345:rw- "$m/var/log/acl.log"
cat >"$W/mbr2.notable.json" <<'EOF'
{ "fstab": "/etc/fstab", "xattrs": "/etc/hostname", "hardlink_group": ["/usr/bin/ferry-tool", "/usr/bin/ferry-tool-alias"],
  "setuid": "/usr/bin/ferry-suid", "acl_file": "/var/log/acl.log" }
EOF
py describe "$m" "$W/mbr2.notable.json" "$META/mbr-p2.content.json"
mbr_ext_done 2 ext3 "$MEXT3_UUID" ferry-mext3 ext3-root

# p5 (logical): ext4 without the newest features, like an older guest's
mbr_ext 5 "$M5_S" "$M5_N" mkfs.ext4 "$MEXT4_UUID" ferry-mext4 ext4 -I 256 -O ^metadata_csum,^metadata_csum_seed,^orphan_file,^64bit
mkdir -p "$m/alice/docs"
printf 'alice notes on the logical partition\n' >"$m/alice/notes.txt"
ln "$m/alice/notes.txt" "$m/alice/docs/notes-link"
setfattr -n user.ferry.fs -v ext4 "$m/alice/notes.txt"
setfattr -n trusted.ferry.fs -v ext4 "$m/alice/notes.txt"
py random "$m/alice/random-2MiB" mbr-random $((2 * MiB))
py sparse "$m/alice/sparse-32MiB" $((32 * MiB)) mbr-sparse "0:4096,$((16 * MiB)):8192"
ln -s docs "$m/alice/docs-link"
chown -R 1000:1000 "$m/alice"
cat >"$W/mbr5.notable.json" <<'EOF'
{ "xattrs": "/alice/notes.txt", "hardlink_group": ["/alice/notes.txt", "/alice/docs/notes-link"],
  "random": "/alice/random-2MiB", "sparse": "/alice/sparse-32MiB", "symlink": "/alice/docs-link" }
EOF
py describe "$m" "$W/mbr5.notable.json" "$META/mbr-p5.content.json"
mbr_ext_done 5 ext4 "$MEXT4_UUID" ferry-mext4 ext4-home

# p6 (logical): swap
log "mbr p6: swap"
attach "$MBR" $((M6_S * 512)) $((M6_N * 512))
dev=$REPLY
mkswap -U "$MSWAP_UUID" -L ferry-mswap "$dev" >&2
detach "$dev"
py json "$META/mbr-p6.json" role=swap "expect:={\"type\":\"swap\",\"uuid\":\"$MSWAP_UUID\",\"label\":\"ferry-mswap\"}"
py json "$META/mbr-p3.json" role=extended "content:={\"kind\":\"extended\",\"logical\":[5,6]}"

# ================================================================ finish
sync
log "punching holes where zeros were written (images stay byte-identical)"
fallocate --dig-holes "$GPT"
fallocate --dig-holes "$MBR"
[ ${#LOOPS[@]} -eq 0 ] || die "loop devices still attached: ${LOOPS[*]}"
[ ${#MOUNTS[@]} -eq 0 ] || die "mounts still present: ${MOUNTS[*]}"
secs=$(elapsed)
py manifest "$TMP" "$CACHE" "$META" "$TMP/manifest.json" "$secs" "$HASH"
rm -rf --one-file-system "$W"
chmod 0444 "$GPT" "$MBR" "$TMP/manifest.json"
date -u +%Y-%m-%dT%H:%M:%SZ >"$TMP/done"
sync
mv -T "$TMP" "$CACHE"
TMP=""
sync
log "gpt.raw: $(du -h --apparent-size "$CACHE/gpt.raw" | cut -f1) apparent, $(du -h "$CACHE/gpt.raw" | cut -f1) allocated;" \
  "mbr.raw: $(du -h --apparent-size "$CACHE/mbr.raw" | cut -f1) apparent, $(du -h "$CACHE/mbr.raw" | cut -f1) allocated"
log "built $CACHE in $(elapsed)s"
print_result
