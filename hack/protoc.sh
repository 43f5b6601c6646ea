#!/usr/bin/env bash
# hack/protoc.sh regenerates the Go code for the control-plane/proxy contract:
# mesh/api/proto/**/*.proto -> mesh/api/meshv1/*.pb.go and *_grpc.pb.go.
#
# It installs what it needs, idempotently:
#   protoc              Debian's protobuf-compiler (apt-get, root), if missing
#   protoc-gen-go       google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
#   protoc-gen-go-grpc  google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
# The two plugins are built from the Go module proxy into
# ${SLUICE_TOOLS:-$HOME/.cache/sluice/tools}/bin and used from there only, so
# whatever else is on PATH plays no part in the output.
#
# Run it from anywhere; it works on the repository it lives in. Generated files
# are checked in; CI regenerates and fails if anything changed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${SLUICE_TOOLS:-$HOME/.cache/sluice/tools}"
BIN="$TOOLS_DIR/bin"
MODULE="github.com/sluicehq/sluice"
PROTO_DIR="mesh/api/proto"
OUT_DIR="mesh/api/meshv1"

PROTOC_GEN_GO="google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12"
PROTOC_GEN_GO_GRPC="google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2"

log() { printf 'protoc: %s\n' "$*"; }
die() { printf 'protoc: ERROR: %s\n' "$*" >&2; exit 1; }

# install_protoc installs Debian's protoc (and the well-known .proto files it
# ships) unless protoc is already on PATH.
install_protoc() {
	if command -v protoc >/dev/null 2>&1; then
		return
	fi
	[[ "$(id -u)" == 0 ]] || die "protoc is missing and installing it needs root: apt-get install -y protobuf-compiler"
	command -v apt-get >/dev/null || die "protoc is missing and apt-get is not available; install protoc by hand"
	mkdir -p "$TOOLS_DIR"
	log "apt-get install protobuf-compiler ..."
	if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler; } \
		>"$TOOLS_DIR/protoc.install.log" 2>&1; then
		tail -n 20 "$TOOLS_DIR/protoc.install.log" >&2
		die "apt-get install protobuf-compiler failed; full log: $TOOLS_DIR/protoc.install.log"
	fi
	command -v protoc >/dev/null || die "protobuf-compiler installed but protoc is still not on PATH"
}

# go_plugin NAME PKG@VERSION installs a protoc plugin into $BIN unless the
# binary there was already built from that module version.
go_plugin() {
	local name="$1" spec="$2" want have=""
	want="${spec##*@}"
	if [[ -x "$BIN/$name" ]]; then
		have="$(go version -m "$BIN/$name" 2>/dev/null | awk '$1=="mod"{print $3; exit}')"
	fi
	if [[ "$have" == "$want" ]]; then
		return
	fi
	command -v go >/dev/null || die "go is not on PATH; cannot install $name"
	mkdir -p "$BIN"
	log "installing $name from $spec ..."
	# Outside any module, so the repository's go.mod plays no part.
	if ! (cd "$TOOLS_DIR" && GOBIN="$BIN" GOFLAGS= go install "$spec") >"$TOOLS_DIR/$name.install.log" 2>&1; then
		tail -n 20 "$TOOLS_DIR/$name.install.log" >&2
		die "could not install $name ($spec); full log: $TOOLS_DIR/$name.install.log"
	fi
	[[ -x "$BIN/$name" ]] || die "go install $spec succeeded but $BIN/$name is missing"
}

# include_dir prints the directory holding google/protobuf/*.proto (the
# well-known types), which Debian installs beside protoc.
include_dir() {
	local d
	for d in "$(dirname "$(command -v protoc)")/../include" /usr/include /usr/local/include; do
		if [[ -f "$d/google/protobuf/duration.proto" ]]; then
			(cd "$d" && pwd)
			return
		fi
	done
	die "google/protobuf/duration.proto not found next to protoc; reinstall protobuf-compiler"
}

main() {
	install_protoc
	go_plugin protoc-gen-go "$PROTOC_GEN_GO"
	go_plugin protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC"

	local wkt
	wkt="$(include_dir)"
	cd "$ROOT"
	mapfile -t protos < <(find "$PROTO_DIR" -name '*.proto' | LC_ALL=C sort)
	[[ ${#protos[@]} -gt 0 ]] || die "no .proto files under $PROTO_DIR"

	# Generated files only: hand-written Go in $OUT_DIR is never named *.pb.go.
	mkdir -p "$OUT_DIR"
	rm -f "$OUT_DIR"/*.pb.go

	protoc \
		--plugin=protoc-gen-go="$BIN/protoc-gen-go" \
		--plugin=protoc-gen-go-grpc="$BIN/protoc-gen-go-grpc" \
		-I "$PROTO_DIR" -I "$wkt" \
		--go_out=. --go_opt=module="$MODULE" \
		--go-grpc_out=. --go-grpc_opt=module="$MODULE" \
		"${protos[@]}"
	log "generated $(ls "$OUT_DIR"/*.pb.go | wc -l) files in $OUT_DIR with $(protoc --version)," \
		"protoc-gen-go ${PROTOC_GEN_GO##*@}, protoc-gen-go-grpc ${PROTOC_GEN_GO_GRPC##*@}"
}

main "$@"
