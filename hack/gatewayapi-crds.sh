#!/usr/bin/env bash
# hack/gatewayapi-crds.sh copies the Gateway API experimental-channel CRDs of
# the sigs.k8s.io/gateway-api version in go.mod into crds/gatewayapi/, one
# file per CRD, so that `sluice install --crds` can ship them in the binary
# (package crds/gatewayapi embeds them).
#
# Only CustomResourceDefinitions are copied: kustomization.yaml and the
# safe-upgrades ValidatingAdmissionPolicy in the same directory are not CRDs.
# The files are copied unchanged; crds/gatewayapi's tests fail when they
# differ from the module's, so run this after changing the module's version.
#
# Usage: hack/gatewayapi-crds.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/crds/gatewayapi"
MODULE="sigs.k8s.io/gateway-api"

log() { printf 'gatewayapi-crds: %s\n' "$*"; }
die() { printf 'gatewayapi-crds: ERROR: %s\n' "$*" >&2; exit 1; }

main() {
	cd "$ROOT"
	local dir version
	dir="$(go list -m -f '{{.Dir}}' "$MODULE")" || die "cannot find $MODULE in go.mod"
	version="$(go list -m -f '{{.Version}}' "$MODULE")"
	[[ -n "$dir" ]] || die "$MODULE@$version is not in the module cache; run: go mod download $MODULE"
	local src="$dir/config/crd/experimental"
	[[ -d "$src" ]] || die "$MODULE@$version has no $src"

	mkdir -p "$DEST"
	rm -f "$DEST"/*.yaml
	local f n=0
	for f in "$src"/*.yaml; do
		grep -q '^kind: CustomResourceDefinition$' "$f" || continue
		install -m 0644 "$f" "$DEST/$(basename "$f")"
		n=$((n + 1))
	done
	[[ "$n" -gt 0 ]] || die "no CRD in $src"
	log "copied $n experimental-channel CRDs of $MODULE $version into crds/gatewayapi"
}

main "$@"
