#!/usr/bin/env bash
# Install the system tools lamina's tests need (dockerd, skopeo, umoci, a
# static busybox, go, musl-gcc, openssl, podman, gnupg, the OCI image-spec JSON schemas) when
# any is missing.
# Idempotent: a machine that already has them is left alone, so CI can call
# it on every run. Without root it only warns: tests then skip locally and
# fail under CI=true, which is where a missing tool must be noticed.
set -euo pipefail

# gcc, libc6-dev and make build testdata/ (musl-gcc wraps gcc; --no-install-recommends
# would otherwise leave them out).
PACKAGES=(docker.io skopeo umoci busybox-static golang-go musl-tools openssl ca-certificates podman qemu-user-static
          docker-registry apache2-utils gcc libc6-dev make golang-github-opencontainers-image-spec-dev gnupg
          dpkg-dev apt-utils debootstrap)
COMMANDS=(dockerd skopeo umoci go musl-gcc openssl podman gcc make qemu-aarch64-static docker-registry htpasswd gpg gpgconf
          dpkg-scanpackages apt-ftparchive gpgv debootstrap)

missing=()
for cmd in "${COMMANDS[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
done
# Debian's "busybox" package is dynamic; the rootfs fixture needs busybox-static.
static_busybox() {
    [ -x /bin/busybox ] || return 1
    if command -v file >/dev/null 2>&1; then
        file -L /bin/busybox | grep -q 'statically linked'
    else
        dpkg -s busybox-static >/dev/null 2>&1
    fi
}
static_busybox || missing+=("busybox-static")
[ -f /etc/ssl/certs/ca-certificates.crt ] || missing+=("ca-certificates")
# tests/support/oci.py validates every image against these schemas (no PyPI package ships them).
[ "$(dpkg-query -W -f='${Status}' golang-github-opencontainers-image-spec-dev 2>/dev/null)" = "install ok installed" ] \
    || missing+=("image-spec schemas")

if [ ${#missing[@]} -eq 0 ]; then
    echo "ensure-deps: all present"
    exit 0
fi

if [ "$EUID" -ne 0 ]; then
    echo "ensure-deps: WARNING: missing ${missing[*]} and not root; not installing" >&2
    exit 0
fi

apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
echo "ensure-deps: installed ${PACKAGES[*]} (was missing: ${missing[*]})"
