#!/bin/bash
# /init of the Ferry agent (src/agent/README.md is the protocol it follows).
# It runs as PID 1 from the initrd that src/agent/build.ts makes: busybox
# applets, bash, nbdkit and the p2v agent's inventory. PID 1 must never exit
# (the kernel would panic), so every failure is reported and retried.
# Secrets (enrolment token, agent token, PSK) live in /run/ferry files and
# HTTP headers only; nothing here prints them.

export PATH=/bin:/usr/bin
export LC_ALL=C HOME=/run/ferry
set +e -u

STATE=/run/ferry
INVENTORY=/usr/lib/ferry/ferry-p2v-agent
PORT_DEFAULT=8470
CONSOLES=()
SERVER='' ENROL='' ID='' AGENT_TOKEN=''
NBD_PID='' NBD_TICKET='' NBD_DISK='' NBD_RO=0
declare -A ANNOUNCED=()

# say MARKER...: one console line on every console= of the command line
# (/dev/console is only the last of them; the tests read ttyS0).
say() {
  local c
  for c in "${CONSOLES[@]}"; do printf 'FERRY-AGENT: %s\n' "$*" >"$c" 2>/dev/null; done
}

setup_system() {
  mkdir -p /proc /sys /dev /run /tmp
  mount -t proc proc /proc
  mount -t sysfs sysfs /sys
  mount -t devtmpfs devtmpfs /dev
  mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
  # bash's process substitution (the inventory's `< <(…)`) opens /dev/fd/N
  ln -sf /proc/self/fd /dev/fd
  ln -sf /proc/self/fd/0 /dev/stdin; ln -sf /proc/self/fd/1 /dev/stdout; ln -sf /proc/self/fd/2 /dev/stderr
  mount -t tmpfs -o mode=0755 tmpfs /run
  mount -t tmpfs -o mode=1777 tmpfs /tmp
  mkdir -m 0700 -p "$STATE"
  # the kernel says only warnings on the console: the markers stay readable
  echo 4 >/proc/sys/kernel/printk
  hostname ferry-agent
  ip link set lo up
}

read_cmdline() {
  local w dev
  for w in $(cat /proc/cmdline); do
    case $w in
      ferry.server=*) SERVER=${w#*=} ;;
      ferry.enrol=*) printf '%s' "${w#*=}" >"$STATE/enrol"; ENROL=1 ;;
      console=*) dev=${w#console=}; dev=${dev%%,*}; [[ -c /dev/$dev ]] && CONSOLES+=("/dev/$dev") ;;
    esac
  done
  ((${#CONSOLES[@]})) || CONSOLES=(/dev/console)
  SERVER=${SERVER%/}
}

load_modules() {
  local m
  while read -r m; do [[ -n $m ]] && modprobe -q "$m"; done </etc/ferry-agent/modules
  # disks appear asynchronously: wait until /sys/block is still for 2 s (at most 20 s)
  local last='' now i stable=0
  for ((i = 0; i < 40 && stable < 4; i++)); do
    now=$(ls /sys/block /sys/class/net 2>/dev/null | tr '\n' ' ')
    if [[ $now == "$last" ]]; then ((stable++)); else stable=0; last=$now; fi
    sleep 0.5
  done
}

# network: every NIC up; DHCP on those with a carrier (udhcpc stays to renew)
bring_up_network() {
  local n nic i any
  for n in /sys/class/net/*; do
    nic=${n##*/}
    [[ $nic == lo ]] && continue
    ip link set "$nic" up
  done
  for ((i = 0; i < 20; i++)); do
    any=0
    for n in /sys/class/net/*; do [[ ${n##*/} != lo && $(cat "$n/carrier" 2>/dev/null) == 1 ]] && any=1; done
    ((any)) && break
    sleep 0.5
  done
  for n in /sys/class/net/*; do
    nic=${n##*/}
    [[ $nic == lo || $(cat "$n/carrier" 2>/dev/null) != 1 ]] && continue
    [[ -e /run/udhcpc.$nic.pid ]] && continue
    # returns once it has a lease, or keeps trying in the background
    udhcpc -i "$nic" -b -t 4 -T 2 -s /usr/share/udhcpc/default.script -p "/run/udhcpc.$nic.pid" >/dev/null 2>&1
  done
  local f ip siaddr serverid
  for f in "$STATE"/dhcp.*; do
    [[ -r $f && $f != *.tmp && -z ${ANNOUNCED[$f]-} ]] || continue
    ip='' siaddr='' serverid=''
    . "$f"
    say "dhcp ${f##*/dhcp.} $ip"
    ANNOUNCED[$f]=1
  done
}

# the server: ferry.server=, else the DHCP next-server (siaddr), else the DHCP server itself
find_server() {
  [[ -n $SERVER ]] && return 0
  local f ip siaddr serverid
  for f in "$STATE"/dhcp.*; do
    [[ -r $f ]] || continue
    ip='' siaddr='' serverid=''
    . "$f"
    if [[ -n $siaddr && $siaddr != 0.0.0.0 ]]; then SERVER=http://$siaddr:$PORT_DEFAULT; return 0; fi
    if [[ -n $serverid ]]; then SERVER=http://$serverid:$PORT_DEFAULT; return 0; fi
  done
  return 1
}

# http METHOD PATH TOKENFILE [BODYFILE|-d DATA]: the answer's body in $STATE/body,
# its status in HTTP_STATUS (000 when the server did not answer)
HTTP_STATUS=000
http() {
  local method=$1 path=$2 tokenfile=$3; shift 3
  local -a args=(-q -S -O "$STATE/body" --header 'Content-Type: application/json')
  [[ -s $tokenfile ]] && args+=(--header "Authorization: Bearer $(cat "$tokenfile")")
  if [[ $method == POST ]]; then
    if [[ ${1-} == -d ]]; then args+=(--post-data "$2"); else args+=(--post-file "$1"); fi
  fi
  rm -f "$STATE/body"
  timeout 75 wget "${args[@]}" "$SERVER$path" 2>"$STATE/http.log"
  HTTP_STATUS=$(grep -o 'HTTP/1\.[01] [0-9][0-9][0-9]' "$STATE/http.log" | tail -n 1)
  HTTP_STATUS=${HTTP_STATUS##* }
  [[ -n $HTTP_STATUS ]] || HTTP_STATUS=000
  [[ $HTTP_STATUS == 2?? ]]
}

# jget KEY: a string, number or boolean member of the flat JSON object in $STATE/body
jget() {
  local body re
  body=$(cat "$STATE/body" 2>/dev/null)
  re="\"$1\"[[:space:]]*:[[:space:]]*(\"([^\"]*)\"|([-0-9A-Za-z.]+))"
  REPLY=''
  [[ $body =~ $re ]] || return 1
  REPLY=${BASH_REMATCH[2]}${BASH_REMATCH[3]}
}

register() {
  while :; do
    bring_up_network
    if ! find_server; then
      say "error no ferry.server= and no DHCP server address; retrying"
      sleep 5; continue
    fi
    if ! bash "$INVENTORY" inventory --out "$STATE/inventory.json" 2>"$STATE/inventory.log"; then
      say "error inventory failed: $(tail -n 1 "$STATE/inventory.log")"
      sleep 5; continue
    fi
    if http POST /machines/register "$STATE/enrol" "$STATE/inventory.json"; then
      jget id && ID=$REPLY
      jget agentToken && (umask 077; printf '%s' "$REPLY" >"$STATE/agent-token")
      if [[ -n $ID && -s $STATE/agent-token ]]; then say "registered $ID"; return 0; fi
      say "error register: the answer has no id or agentToken"
    elif [[ $HTTP_STATUS == 401 ]]; then
      say "error register: the enrolment token was refused (401); boot with ferry.enrol=TOKEN"
    elif [[ $HTTP_STATUS == 000 ]]; then
      say "error register: $SERVER does not answer; retrying"
    else
      say "error register: HTTP $HTTP_STATUS; retrying"
    fi
    sleep 5
  done
}

status() { # JSON
  http POST "/machines/$ID/status" "$STATE/agent-token" -d "$1" ||
    say "error status: HTTP $HTTP_STATUS"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

stop_export() {
  if [[ -n $NBD_PID ]]; then
    kill -TERM "$NBD_PID" 2>/dev/null
    local i
    for ((i = 0; i < 50; i++)); do kill -0 "$NBD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$NBD_PID" 2>/dev/null
    wait "$NBD_PID" 2>/dev/null
  fi
  if [[ -n $NBD_DISK ]]; then
    sync
    blockdev --flushbufs "$NBD_DISK" 2>/dev/null
    ((NBD_RO)) && blockdev --setrw "$NBD_DISK" 2>/dev/null
    say "unexported $NBD_DISK"
  fi
  rm -f "$STATE/psk" "$STATE/nbdkit.pid"
  NBD_PID='' NBD_TICKET='' NBD_DISK='' NBD_RO=0
}

do_export() {
  local ticket disk writable port name ident key
  jget ticket; ticket=$REPLY; jget disk; disk=$REPLY; jget writable; writable=$REPLY
  jget port; port=$REPLY; jget exportName; name=$REPLY; jget pskIdentity; ident=${REPLY:-ferry}
  if [[ $ticket == "$NBD_TICKET" && -n $NBD_PID ]] && kill -0 "$NBD_PID" 2>/dev/null; then
    status "{\"ticket\":\"$ticket\",\"state\":\"exporting\"}"; return
  fi
  stop_export
  if [[ ! -b $disk || ! $port =~ ^[0-9]+$ ]]; then
    say "error export $disk: not a block device or no port"
    status "{\"ticket\":\"$ticket\",\"state\":\"failed\",\"message\":\"$disk is not a block device on this machine\"}"
    return
  fi
  jget pskKey; key=$REPLY
  (umask 077; printf '%s:%s\n' "$ident" "$key" >"$STATE/psk")
  key=''
  local -a ro=()
  if [[ $writable != true ]]; then ro=(--readonly); blockdev --setro "$disk"; NBD_RO=1; fi
  nbdkit --foreground --tls=require "--tls-psk=$STATE/psk" --port "$port" --exportname "$name" \
    --pidfile "$STATE/nbdkit.pid" "${ro[@]}" file "file=$disk" </dev/null >"$STATE/nbdkit.log" 2>&1 &
  NBD_PID=$! NBD_TICKET=$ticket NBD_DISK=$disk
  local i
  for ((i = 0; i < 100; i++)); do
    [[ -s $STATE/nbdkit.pid ]] && port_open "$port" && break
    kill -0 "$NBD_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [[ -s $STATE/nbdkit.pid ]] && port_open "$port"; then
    local mode=ro; [[ $writable == true ]] && mode=rw
    say "exporting $disk $mode"
    status "{\"ticket\":\"$ticket\",\"state\":\"exporting\"}"
  else
    local why; why=$(tail -n 1 "$STATE/nbdkit.log" | tr -d '"\\')
    say "error export $disk: nbdkit did not start: $why"
    stop_export
    status "{\"ticket\":\"$ticket\",\"state\":\"failed\",\"message\":\"nbdkit did not start: $why\"}"
  fi
}

do_unexport() {
  jget ticket
  local ticket=$REPLY
  stop_export
  status "{\"ticket\":\"$ticket\",\"state\":\"unexported\"}"
}

do_boot_disk() {
  stop_export
  status '{"state":"booting-disk"}'
  say "booting from disk"
  sync
  reboot -f
  sleep 30
}

work_loop() {
  while :; do
    if http GET "/machines/$ID/work?wait=20" "$STATE/agent-token"; then
      jget action
      case $REPLY in
        wait) ;;
        export) do_export ;;
        unexport) do_unexport ;;
        boot-disk) do_boot_disk ;;
        *) say "error unknown work '$REPLY'"; sleep 5 ;;
      esac
    elif [[ $HTTP_STATUS == 401 ]]; then
      register
    else
      sleep 5
    fi
  done
}

setup_system
read_cmdline
load_modules
say up
register
while :; do work_loop; sleep 5; done
