#!/usr/bin/env bash
# hack/tools.sh installs the external tools that Sluice's tests and benchmarks
# need, idempotently, into a cache outside the repository.
#
#   hack/tools.sh test    h2spec (Go), iptables + iproute2 (apt)
#   hack/tools.sh images  iptables (apt) only: what the proxy image copies
#   hack/tools.sh bench   everything for "test", plus wrk, haproxy, nginx,
#                         h2load (apt) and fortio, ghz (Go)
#   hack/tools.sh bindir  print the directory Go tools are installed into
#
# Go tools go to ${SLUICE_TOOLS:-$HOME/.cache/sluice/tools}/bin; put it on PATH
# (e.g. PATH="$(hack/tools.sh bindir):$PATH"). Debian packages are installed
# system-wide with apt-get (root required) and their services are never
# started: the benchmarks run nginx and haproxy as child processes only.
#
# A tool already present at the pinned version is not reinstalled. The script
# prints each tool's version and how long it took, and exits non-zero with a
# message naming the tool that could not be installed.
set -euo pipefail

TOOLS_DIR="${SLUICE_TOOLS:-$HOME/.cache/sluice/tools}"
BIN="$TOOLS_DIR/bin"

# Pinned Go tools: name, package@version. fortio >= v1.69 depends on grol.io,
# which the module proxy here does not serve; ghz lists only v0.93.0.
H2SPEC_PKG="github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible"
FORTIO_PKG="fortio.org/fortio@v1.68.2"
GHZ_PKG="github.com/bojand/ghz/cmd/ghz@v0.93.0"

log() { printf 'tools: %s\n' "$*"; }
die() { printf 'tools: ERROR: %s\n' "$*" >&2; exit 1; }

now() { printf '%s' "${EPOCHREALTIME:-$(date +%s.%N)}"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1fs", b-a}'; }

# first_line runs a version command and prints its first non-empty line;
# some tools (wrk) print their version and exit non-zero.
first_line() { { "$@" 2>&1 || true; } | awk 'NF{print; exit}'; }

# go_tool NAME PKG@VERSION VERSIONCMD... installs a Go binary into $BIN unless
# the binary there was already built from that module version.
go_tool() {
	local name="$1" spec="$2"; shift 2
	local pkg="${spec%@*}" want="${spec##*@}" have="" t0
	command -v go >/dev/null || die "go is not on PATH; cannot install $name"
	if [[ -x "$BIN/$name" ]]; then
		# "go version -m" prints "mod <module> <version> <sum>" for the main module.
		have="$(go version -m "$BIN/$name" 2>/dev/null | awk '$1=="mod"{print $3; exit}')"
	fi
	if [[ "$have" == "$want" ]]; then
		log "$name $want already installed ($(first_line "$BIN/$name" "$@"))"
		return
	fi
	t0="$(now)"
	log "installing $name from $spec ..."
	mkdir -p "$BIN"
	# Run outside any module so the repository's go.mod plays no part.
	if ! (cd "$TOOLS_DIR" && GOBIN="$BIN" GOFLAGS= go install "$spec") >"$TOOLS_DIR/$name.install.log" 2>&1; then
		tail -n 20 "$TOOLS_DIR/$name.install.log" >&2
		die "could not install $name ($pkg@$want); full log: $TOOLS_DIR/$name.install.log"
	fi
	[[ -x "$BIN/$name" ]] || die "go install $spec succeeded but $BIN/$name is missing"
	log "installed $name $want in $(since "$t0") ($(first_line "$BIN/$name" "$@"))"
}

APT_UPDATED=0
POLICY_RC_CREATED=0

cleanup() {
	if [[ "$POLICY_RC_CREATED" == 1 ]]; then
		rm -f /usr/sbin/policy-rc.d
	fi
}
trap cleanup EXIT

# apt_tools installs the Debian packages in "$@" (pairs of command:package)
# whose command is missing. It runs apt-get update only when something must be
# installed, and forbids package scripts from starting services.
apt_tools() {
	local missing=() pair cmd pkg t0
	for pair in "$@"; do
		cmd="${pair%%:*}" pkg="${pair#*:}"
		if ! command -v "$cmd" >/dev/null 2>&1; then
			missing+=("$pkg")
		fi
	done
	if [[ ${#missing[@]} -eq 0 ]]; then
		return
	fi
	[[ "$(id -u)" == 0 ]] || die "need root to apt-get install ${missing[*]} (or install them yourself)"
	command -v apt-get >/dev/null || die "apt-get not found; install ${missing[*]} by hand"
	# policy-rc.d exiting 101 tells invoke-rc.d not to start any service, so
	# nginx and haproxy are installed without their system daemons running.
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		POLICY_RC_CREATED=1
	fi
	t0="$(now)"
	if [[ "$APT_UPDATED" == 0 ]]; then
		log "apt-get update ..."
		apt-get update -qq >/dev/null 2>&1 || die "apt-get update failed"
		APT_UPDATED=1
	fi
	log "apt-get install ${missing[*]} ..."
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		-o Dpkg::Options::=--force-confold "${missing[@]}" >"$TOOLS_DIR/apt.install.log" 2>&1; then
		tail -n 20 "$TOOLS_DIR/apt.install.log" >&2
		die "apt-get install ${missing[*]} failed; full log: $TOOLS_DIR/apt.install.log"
	fi
	log "installed ${missing[*]} in $(since "$t0")"
	for pair in "$@"; do
		cmd="${pair%%:*}" pkg="${pair#*:}"
		command -v "$cmd" >/dev/null 2>&1 || die "package $pkg installed but command $cmd is still missing"
	done
}

# stop_system_service stops a Debian service that a package script may have
# started despite policy-rc.d (identified by its own pid file, never by name).
stop_system_service() {
	local name="$1" pidfile="$2" pid
	[[ -f "$pidfile" ]] || return 0
	pid="$(cat "$pidfile" 2>/dev/null || true)"
	if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
		log "stopping the system $name service (pid $pid) started by its package"
		kill "$pid" 2>/dev/null || true
	fi
}

show() { log "$(printf '%-9s %s' "$1:" "$(first_line "${@:2}")")"; }

install_test() {
	apt_tools iptables:iptables iptables-legacy:iptables ip6tables:iptables ip:iproute2 setpriv:util-linux prometheus:prometheus
	go_tool h2spec "$H2SPEC_PKG" --version
}

install_images() {
	apt_tools iptables:iptables iptables-legacy:iptables ip6tables:iptables ldd:libc-bin
}

install_bench() {
	install_test
	apt_tools wrk:wrk haproxy:haproxy nginx:nginx h2load:nghttp2-client
	stop_system_service nginx /run/nginx.pid
	stop_system_service haproxy /run/haproxy.pid
	go_tool fortio "$FORTIO_PKG" version
	go_tool ghz "$GHZ_PKG" --version
}

usage() {
	sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

main() {
	local mode="${1:-}" t0
	case "$mode" in
	bindir) printf '%s\n' "$BIN"; return ;;
	test | bench | images) ;;
	*) usage ;;
	esac
	mkdir -p "$BIN"
	t0="$(now)"
	"install_$mode"
	if [[ "$mode" == images ]]; then
		show iptables iptables --version
		log "$mode tools ready in $(since "$t0")"
		return
	fi
	log "versions:"
	show iptables iptables --version
	show ip ip -V
	show h2spec "$BIN/h2spec" --version
	show prometheus prometheus --version
	if [[ "$mode" == bench ]]; then
		show wrk wrk -v
		show haproxy haproxy -v
		show nginx nginx -v
		show h2load h2load --version
		show fortio "$BIN/fortio" version
		show ghz "$BIN/ghz" --version
	fi
	log "$mode tools ready in $(since "$t0"); Go tools in $BIN"
}

main "$@"
