#!/usr/bin/env bash
# hack/kube-node.sh prepares everything the end-to-end cluster harness
# (test/e2e/cluster) needs on top of hack/envtest.sh's kube-apiserver, etcd
# and kubectl:
#
#   - kubelet, kube-controller-manager, kube-scheduler and kube-proxy built
#     from k8s.io/kubernetes the way hack/envtest.sh builds kube-apiserver (a
#     scratch module whose ./staging replace lines point at the published
#     k8s.io/* modules of the same minor, version stamped with -ldflags -X);
#   - CoreDNS built with `go install github.com/coredns/coredns@VERSION`;
#   - the Debian packages the node runs: containerd, runc,
#     containernetworking-plugins, conntrack, socat, ethtool, iptables
#     (installed with apt-get only when missing, which needs root).
#
# The binaries are cached outside the repository under
#
#   ${SLUICE_CACHE:-$HOME/.cache/sluice}/cluster/<kubernetes version>/bin
#
# and skipped when present and built from the pinned versions (checked with
# `go version -m`). The first build takes 5 to 25 minutes on 2 cores; later
# runs return at once.
#
# Usage:
#   hack/kube-node.sh               build or install what is missing; the last
#                                   line of stdout is the bin directory
#   hack/kube-node.sh --print-dir   print that directory only, build nothing
#   hack/kube-node.sh --no-apt      do not install Debian packages (fail if missing)
#
# Environment:
#   SLUICE_CACHE            cache root (default $HOME/.cache/sluice)
#   SLUICE_KUBE_VERSION     k8s.io/kubernetes version (default v1.37.2)
#   SLUICE_COREDNS_VERSION  github.com/coredns/coredns version (default v1.12.4)
#
# Progress and timings go to stderr; only the directory goes to stdout.
set -euo pipefail

KUBE_VERSION="${SLUICE_KUBE_VERSION:-v1.37.2}"
COREDNS_VERSION="${SLUICE_COREDNS_VERSION:-v1.12.4}"
CACHE="${SLUICE_CACHE:-$HOME/.cache/sluice}"
DIR="$CACHE/cluster/$KUBE_VERSION"
BIN="$DIR/bin"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

KUBE_CMDS=(kubelet kube-controller-manager kube-scheduler kube-proxy)
DEB_PACKAGES=(containerd runc containernetworking-plugins conntrack socat ethtool iptables)

log() { printf 'kube-node: %s\n' "$*" >&2; }
die() { printf 'kube-node: ERROR: %s\n' "$*" >&2; exit 1; }
# shellcheck source=lib/kube-build.sh
source "$HERE/lib/kube-build.sh"

# ensure_packages installs the Debian packages that are not installed yet.
ensure_packages() {
	local missing=() p
	for p in "${DEB_PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	[[ ${#missing[@]} -eq 0 ]] && { log "Debian packages: present"; return; }
	[[ "${NO_APT:-}" == 1 ]] && die "missing Debian packages: ${missing[*]} (run without --no-apt, as root)"
	[[ "$(id -u)" == 0 ]] || die "missing Debian packages: ${missing[*]}; install them as root: apt-get install ${missing[*]}"
	local t; t="$(now)"
	log "installing Debian packages: ${missing[*]} ..."
	mkdir -p "$DIR/logs"
	{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; } \
		>"$DIR/logs/apt.log" 2>&1 || {
		tail -n 20 "$DIR/logs/apt.log" >&2
		die "apt-get install ${missing[*]} failed; full log: $DIR/logs/apt.log"
	}
	log "  installed in $(since "$t")"
}

build_coredns() {
	local t; t="$(now)"
	log "coredns $COREDNS_VERSION: go install (about 2 minutes the first time) ..."
	local gobin="$DIR/src/coredns-bin"
	mkdir -p "$gobin"
	(CGO_ENABLED=0 GOBIN="$gobin" go install -trimpath -ldflags "-s -w" \
		"github.com/coredns/coredns@$COREDNS_VERSION") >"$DIR/logs/coredns.log" 2>&1 || {
		tail -n 20 "$DIR/logs/coredns.log" >&2
		die "go install github.com/coredns/coredns@$COREDNS_VERSION failed; full log: $DIR/logs/coredns.log"
	}
	mv -f "$gobin/coredns" "$BIN/coredns"
	log "  coredns built in $(since "$t")"
}

main() {
	local arg
	for arg in "$@"; do
		case "$arg" in
		--print-dir) printf '%s\n' "$BIN"; return ;;
		--no-apt) NO_APT=1 ;;
		-h | --help)
			sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
			return
			;;
		*) die "unknown argument $arg (want --print-dir, --no-apt or --help)" ;;
		esac
	done
	command -v go >/dev/null || die "go is not on PATH"
	local start; start="$(now)"
	mkdir -p "$BIN" "$DIR/logs"
	if command -v flock >/dev/null; then
		exec 9>"$DIR/.lock"
		flock 9
	fi
	export GOWORK=off

	ensure_packages
	# kube-apiserver, etcd and kubectl come from hack/envtest.sh.
	bash "$HERE/envtest.sh" >/dev/null

	local cmd need=0
	for cmd in "${KUBE_CMDS[@]}"; do
		built_from "$BIN/$cmd" k8s.io/kubernetes "$KUBE_VERSION" || need=1
	done
	if [[ $need == 1 ]]; then build_kube_cmds "$DIR" "$BIN" sluice.local/cluster/kube "${KUBE_CMDS[@]}"; else log "${KUBE_CMDS[*]} $KUBE_VERSION: cached"; fi
	if built_from "$BIN/coredns" github.com/coredns/coredns "$COREDNS_VERSION"; then
		log "coredns $COREDNS_VERSION: cached"
	else
		build_coredns
	fi
	for cmd in "${KUBE_CMDS[@]}"; do
		"$BIN/$cmd" --version >/dev/null 2>&1 || die "$BIN/$cmd does not run"
	done
	"$BIN/coredns" -version >/dev/null 2>&1 || die "$BIN/coredns does not run"
	log "ready in $(since "$start"); the bin directory is the line below"
	printf '%s\n' "$BIN"
}

main "$@"
