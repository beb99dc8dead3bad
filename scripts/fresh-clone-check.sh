#!/usr/bin/env bash
# Does a fresh clone pass from its own files alone? Builds a bare Debian bookworm (minbase)
# in a directory, clones this repository's committed HEAD into /root/lamina there (a 0700
# home, as on CI), and runs `make demo` and `CI=true make test` inside it.
#
# Not part of `make test`: it downloads a Debian system and every package the tests need,
# and takes tens of minutes. Run it as root:   bash scripts/fresh-clone-check.sh [WORKDIR]
# WORKDIR (default: a new dir under /var/tmp) keeps the chroot and log.txt afterwards;
# delete it when done. Exit status: that of the commands run inside.
#
# What the chroot gets from this machine, and why:
#   - the Debian mirror apt uses here, read from /etc/apt/sources.list* (no host written down);
#   - /etc/resolv.conf, and the extra CA certificates this machine trusts
#     (/usr/local/share/ca-certificates: an egress proxy's CA, where there is one), so that
#     apt and pip reach their registries as they do here;
#   - its proxy and CA-bundle environment variables (PIP_CERT, SSL_CERT_FILE, ...), as CI
#     gets this machine's environment;
#   - /proc, /sys and /dev, which dockerd needs. The chroot is bind-mounted onto itself so
#     that its / is a mount point dockerd can remount.
# Nothing else: no pip configuration, no installed packages, nothing from beside the checkout.
set -euo pipefail

if [ "$EUID" -ne 0 ]; then
    echo "fresh-clone-check: must run as root (debootstrap, chroot, mounts)" >&2
    exit 2
fi

repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
commit=$(git -C "$repo" rev-parse HEAD)
work=${1:-$(mktemp -d /var/tmp/lamina-fresh.XXXXXX)}
mkdir -p "$work"
work=$(cd "$work" && pwd)
root=$work/chroot
log=$work/log.txt
exec > >(tee -a "$log") 2>&1
echo "fresh-clone-check: $(date -u +%FT%TZ) commit $commit into $root"

# The first Debian archive URI apt is configured with for bookworm itself (not -security
# or -updates), from one-line .list files or deb822 .sources files.
mirror_from_apt() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk '$1 == "deb" {
                i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                if ($(i + 1) == "bookworm") { print $i; exit }
             }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk 'BEGIN { RS = ""; FS = "\n" }
             {
                uri = ""; suites = ""; deb = 0
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^URIs:/) { uri = $i; sub(/^URIs:[ \t]*/, "", uri); sub(/[ \t].*/, "", uri) }
                    if ($i ~ /^Suites:/) { suites = " " $i " " }
                    if ($i ~ /^Types:.*(^|[ \t])deb([ \t]|$)/) deb = 1
                }
                if (deb && uri != "" && suites ~ /[ \t]bookworm[ \t]/) { print uri; exit }
             }' "$f"
    done
}
mirror=$(mirror_from_apt | head -n 1 || true)
if [ -z "$mirror" ]; then
    echo "fresh-clone-check: no bookworm mirror found in /etc/apt/sources.list*" >&2
    exit 2
fi
echo "fresh-clone-check: mirror $mirror"

if ! command -v debootstrap >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

mounted=()
cleanup() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount -l "${mounted[$i]}" 2>/dev/null || true
    done
}
trap cleanup EXIT
mount_into() {  # mount_into TARGET MOUNT-ARGS...
    local target=$1
    shift
    mkdir -p "$target"
    mount "$@" "$target"
    mounted+=("$target")
}

if [ ! -x "$root/usr/bin/apt-get" ]; then
    debootstrap --variant=minbase bookworm "$root" "$mirror"
fi
mount_into "$root" --bind "$root"
mount --make-private "$root"
mount_into "$root/proc" -t proc proc
mount_into "$root/sys" --rbind /sys
mount --make-rslave "$root/sys"  # unmounting ours must never unmount the host's
mount_into "$root/dev" --rbind /dev
mount --make-rslave "$root/dev"
mount_into "$root/tmp" -t tmpfs -o mode=1777 tmpfs
# A bare copy of the committed history (a worktree's .git file points outside the chroot).
rm -rf "$work/source.git"
git clone -q --bare --no-local "$repo" "$work/source.git"
mount_into "$root/mnt/source.git" --bind -o ro "$work/source.git"
cp /etc/resolv.conf "$root/etc/resolv.conf"
mkdir -p "$root/usr/local/share/ca-certificates"
cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/" 2>/dev/null || true
# Packages install, but their services do not start (there is no init in a chroot).
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"

# The environment a CI run gets: a bare one, plus the host's proxy and CA-bundle variables.
passed=()
for var in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY PIP_CERT SSL_CERT_FILE SSL_CERT_DIR \
           REQUESTS_CA_BUNDLE; do
    [ -n "${!var:-}" ] && passed+=("$var=${!var}")
done
inside() {
    chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "${passed[@]}" "$@"
}

inside bash -euo pipefail -c "
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        python3-venv make git ca-certificates >/dev/null
    update-ca-certificates >/dev/null
    rm -rf /root/lamina
    git clone -q /mnt/source.git /root/lamina
    git -C /root/lamina checkout -q $commit
    chmod 0700 /root
    ls -ld /root
"

status=0
echo "fresh-clone-check: make demo"
inside bash -c "cd /root/lamina && make demo" || status=$?
if [ "$status" -eq 0 ]; then
    echo "fresh-clone-check: CI=true make test"
    inside bash -c "cd /root/lamina && CI=true make test" || status=$?
fi
echo "fresh-clone-check: $(date -u +%FT%TZ) exit $status (log: $log)"
exit "$status"
