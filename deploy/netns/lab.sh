#!/usr/bin/env bash
# The stampede multi-host lab for people: N "hosts" as network namespaces joined by a bridge
# that lives in a hub namespace of its own (nothing is added to the machine's own network),
# host I getting 198.18.0.(I+1)/24 on eth0 (198.18.0.0/15 is the benchmarking range).
# The Rust tests build the same lab with stampede_lab::Lab.
#
#   lab.sh up N [--prefix NAME]           create hosts NAME0..NAME(N-1) and NAMEhub
#   lab.sh down [--prefix NAME]           remove them (safe to repeat)
#   lab.sh [--prefix NAME] exec I CMD...  run CMD on host I (ip netns exec NAMEI CMD...)
#   lab.sh list [--prefix NAME]           show the hosts and their addresses
#
# Each host has its own sysctls, e.g.:
#   ip netns exec stplab2 sysctl -w net.core.somaxconn=64
set -euo pipefail

prefix=stplab
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="${2:?--prefix needs a name}"; shift 2; continue ;;
    --prefix=*) prefix="${1#--prefix=}"; shift; continue ;;
  esac
  args+=("$1"); shift
  # exec I CMD...: from CMD on every word is the command's own, a --prefix among them too.
  if [ "${#args[@]}" -ge 3 ] && [ "${args[0]}" = exec ]; then
    args+=("$@")
    break
  fi
done
set -- "${args[@]+"${args[@]}"}"

die() { echo "lab.sh: $*" >&2; exit 1; }
[[ "$prefix" =~ ^[A-Za-z0-9_-]{1,40}$ ]] || die "invalid prefix \"$prefix\": letters, digits, - and _ only"
hub="${prefix}hub"

hosts() { ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${prefix}[0-9]+$" | sort -V || true; }

down() {
  local ns
  for ns in $(hosts) "$hub"; do
    if ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$ns"; then
      ip netns del "$ns"
    fi
  done
}

up() {
  local n="${1:-}"
  [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 250 ] || die "up needs a host count from 1 to 250, not \"$n\""
  [ -z "$(hosts)" ] || die "a lab with prefix $prefix already exists: run 'lab.sh down --prefix $prefix' first"
  trap 'echo "lab.sh: setup failed, removing what was made" >&2; down' ERR
  ip netns add "$hub"
  ip -n "$hub" link set lo up
  ip -n "$hub" link add br0 type bridge
  ip -n "$hub" link set br0 up
  local i ns
  for ((i = 0; i < n; i++)); do
    ns="${prefix}${i}"
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    # Both veth ends are made in the hub; the peer moves straight into the host.
    ip -n "$hub" link add "vh$i" type veth peer name eth0 netns "$ns"
    ip -n "$hub" link set "vh$i" master br0 up
    ip -n "$ns" addr add "198.18.0.$((i + 1))/24" dev eth0
    ip -n "$ns" link set eth0 up
  done
  trap - ERR
  list
  local short="lab.sh exec 0 COMMAND"
  [ "$prefix" = stplab ] || short="lab.sh --prefix $prefix exec 0 COMMAND"
  echo "run commands on a host with: ip netns exec ${prefix}0 COMMAND (or $short)"
}

list() {
  local ns
  for ns in $(hosts); do
    printf '%-16s %s\n' "$ns" "$(ip -n "$ns" -4 -o addr show dev eth0 | awk '{print $4}')"
  done
}

[ "$(id -u)" = 0 ] || die "needs root (it creates network namespaces)"
command -v ip >/dev/null || die "needs the ip command (iproute2)"

case "${1:-}" in
  up) shift; up "$@" ;;
  down) down ;;
  list) list ;;
  exec)
    shift
    i="${1:-}"
    [[ "$i" =~ ^[0-9]+$ ]] || die "exec needs a host number"
    shift
    [ $# -gt 0 ] || die "exec needs a command"
    exec ip netns exec "${prefix}${i}" "$@"
    ;;
  *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 64 ;;
esac
