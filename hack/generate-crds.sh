#!/usr/bin/env bash
# hack/generate-crds.sh regenerates the Kubernetes API code under crds/:
#   - zz_generated.deepcopy.go in every API package (controller-gen "object"),
#   - the CRD manifests, one file per kind, in crds/manifests/ (controller-gen
#     "crd"; named <group>_<plural>.yaml).
#
# Usage: hack/generate-crds.sh [package-pattern...]
#   With no argument it covers every API package (./crds/...) and the manifest
#   directory is replaced as a whole, so a removed kind loses its file. With
#   patterns (e.g. ./crds/policy/...) only those packages are regenerated and
#   their manifests written; other files in crds/manifests/ are left alone.
#
# controller-gen (sigs.k8s.io/controller-tools, pinned below) is built from the
# Go module proxy into ${SLUICE_TOOLS:-$HOME/.cache/sluice/tools}/bin unless the
# binary there is already that version, and is used from there only. Run it
# from anywhere; it works on the repository it lives in. Generated files are
# checked in; CI regenerates and fails if anything changed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${SLUICE_TOOLS:-$HOME/.cache/sluice/tools}"
BIN="$TOOLS_DIR/bin"
CONTROLLER_GEN="sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0"
MANIFESTS="crds/manifests"

log() { printf 'generate-crds: %s\n' "$*"; }
die() { printf 'generate-crds: ERROR: %s\n' "$*" >&2; exit 1; }

# install_controller_gen builds controller-gen into $BIN unless the binary
# there was already built from the pinned module version.
install_controller_gen() {
	local want="${CONTROLLER_GEN##*@}" have=""
	if [[ -x "$BIN/controller-gen" ]]; then
		# "go version -m" prints "mod <module> <version> <sum>" for the main module.
		have="$(go version -m "$BIN/controller-gen" 2>/dev/null | awk '$1=="mod"{print $3; exit}')"
	fi
	if [[ "$have" == "$want" ]]; then
		return
	fi
	command -v go >/dev/null || die "go is not on PATH; cannot install controller-gen"
	mkdir -p "$BIN"
	log "installing controller-gen from $CONTROLLER_GEN (about a minute) ..."
	# Outside any module, so the repository's go.mod plays no part.
	if ! (cd "$TOOLS_DIR" && GOBIN="$BIN" GOFLAGS= go install "$CONTROLLER_GEN") \
		>"$TOOLS_DIR/controller-gen.install.log" 2>&1; then
		tail -n 20 "$TOOLS_DIR/controller-gen.install.log" >&2
		die "could not install controller-gen ($CONTROLLER_GEN); full log: $TOOLS_DIR/controller-gen.install.log"
	fi
	[[ -x "$BIN/controller-gen" ]] || die "go install $CONTROLLER_GEN succeeded but $BIN/controller-gen is missing"
}

main() {
	install_controller_gen
	cd "$ROOT"

	local all=0
	local -a pkgs=("$@")
	if [[ ${#pkgs[@]} -eq 0 ]]; then
		all=1
		pkgs=("./crds/...")
	fi
	local -a paths=()
	local p
	for p in "${pkgs[@]}"; do
		paths+=("paths=$p")
	done

	log "deepcopy: ${pkgs[*]}"
	"$BIN/controller-gen" object "${paths[@]}" || die "controller-gen object failed for ${pkgs[*]}"

	TMP="$(mktemp -d)"
	trap 'rm -rf "$TMP"' EXIT
	local tmp="$TMP"
	log "CRDs: ${pkgs[*]}"
	"$BIN/controller-gen" crd:crdVersions=v1 "${paths[@]}" output:crd:artifacts:config="$tmp" \
		|| die "controller-gen crd failed for ${pkgs[*]}"
	compgen -G "$tmp/*.yaml" >/dev/null || die "controller-gen wrote no CRD for ${pkgs[*]}"

	mkdir -p "$MANIFESTS"
	if [[ "$all" == 1 ]]; then
		rm -f "$MANIFESTS"/*.yaml
	fi
	cp "$tmp"/*.yaml "$MANIFESTS"/
	log "wrote $(cd "$tmp" && ls *.yaml | tr '\n' ' ' | sed 's/ $//') into $MANIFESTS with controller-gen ${CONTROLLER_GEN##*@}"
}

main "$@"
