#!/usr/bin/env bash
# Make a Python 3.9 interpreter with Paddle Lite's Python package (paddlelite 2.13rc0), whose
# wheels exist only for Python 3.7-3.10: a Debian 11 root made by debootstrap, cached and reused.
#
#   bash deploy/lite/setup_env.sh          # build (or check) the root, print its directory
#   (an installed wheel carries this script as mobileseg_paddle/_data/deploy/lite/setup_env.sh)
#
# MOBILESEG_LITE_ROOT    where the root lives (default ~/.cache/mobileseg/lite-py39)
# MOBILESEG_LITE_PYTHON  use this interpreter instead (e.g. a conda python3.9 with
#                        `pip install --pre paddlelite==2.13rc0`): the script only checks it
# MOBILESEG_DEBIAN_MIRROR  Debian mirror for debootstrap (default: the first Debian URI of this
#                        host's apt sources)
# Needs root (debootstrap, chroot) and a Debian/Ubuntu host. Idempotent: a complete root carries a
# stamp naming what it holds; a different stamp or a half-made root is rebuilt. Time and size:
# deploy/lite/README.md.
set -euo pipefail

LITE_PIN="paddlelite==2.13rc0"
NUMPY_PIN="numpy==1.26.4"
SUITE="bullseye"
STAMP_TEXT="$SUITE $LITE_PIN $NUMPY_PIN"

die() { echo "setup_env.sh: $*" >&2; exit 1; }

if [[ -n "${MOBILESEG_LITE_PYTHON:-}" ]]; then
    "$MOBILESEG_LITE_PYTHON" -c "import paddlelite.lite, numpy" \
        || die "MOBILESEG_LITE_PYTHON=$MOBILESEG_LITE_PYTHON cannot import paddlelite.lite and numpy"
    echo "$MOBILESEG_LITE_PYTHON"
    exit 0
fi

ROOT="${MOBILESEG_LITE_ROOT:-$HOME/.cache/mobileseg/lite-py39}"
STAMP="$ROOT/.mobileseg-lite-stamp"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$STAMP_TEXT" ]]; then
    echo "$ROOT"
    exit 0
fi

[[ "$(id -u)" == 0 ]] || die "needs root (debootstrap and chroot); or set MOBILESEG_LITE_PYTHON"
if ! command -v debootstrap >/dev/null; then
    command -v apt-get >/dev/null || die "debootstrap is missing and there is no apt-get to install it"
    apt-get install -y -qq debootstrap >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; } \
        || die "cannot install debootstrap"
fi

# The mirror comes from the host's own apt configuration (deb822 .sources or one-line .list):
# the first URI whose path ends in /debian (not -security, not a third-party repository).
mirror="${MOBILESEG_DEBIAN_MIRROR:-}"
if [[ -z "$mirror" ]]; then
    mirror="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources \
                  /etc/apt/sources.list.d/*.list 2>/dev/null \
        | sed -n -e 's/^URIs:[[:space:]]*//p' -e 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?//p' \
        | tr ' ' '\n' | grep -E '^(https?|file)://[^ ]*/debian/?$' | head -n 1 || true)"
fi
[[ -n "$mirror" ]] || die "found no Debian mirror in /etc/apt/sources*; set MOBILESEG_DEBIAN_MIRROR"

start=$(date +%s)
work="$ROOT.partial"
rm -rf "$work" "$ROOT"
mkdir -p "$(dirname "$ROOT")"
echo "setup_env.sh: debootstrap $SUITE into $work" >&2
debootstrap --variant=minbase --include=python3,python3-pip,ca-certificates,libgomp1 \
    "$SUITE" "$work" "$mirror" >"$work.log" 2>&1 \
    || { tail -n 20 "$work.log" >&2; die "debootstrap failed (log: $work.log)"; }

# pip inside the root uses the host's CA bundle (it may hold a local proxy's CA), DNS settings and
# index settings.
cp /etc/resolv.conf "$work/etc/resolv.conf"
cp /etc/ssl/certs/ca-certificates.crt "$work/etc/ssl/certs/host-ca-bundle.crt"
pip_env=(PIP_CERT=/etc/ssl/certs/host-ca-bundle.crt PIP_DISABLE_PIP_VERSION_CHECK=1
         PIP_NO_CACHE_DIR=1 PIP_DEFAULT_TIMEOUT=180)
host_pip=(python3 -m pip)
command -v pip3 >/dev/null && host_pip=(pip3)
for key in index-url extra-index-url trusted-host; do
    var="PIP_$(tr 'a-z-' 'A-Z_' <<<"$key")"
    value="${!var:-}"
    [[ -n "$value" ]] || value="$("${host_pip[@]}" config get "global.$key" 2>/dev/null || true)"
    value="$(tr ' ' '\n' <<<"$value" | grep -v '^file:' | tr '\n' ' ' | sed 's/ *$//' || true)"
    [[ -n "$value" ]] && pip_env+=("$var=$value")
done
for var in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
    [[ -n "${!var:-}" ]] && pip_env+=("$var=${!var}")
done

in_root() {
    unshare --mount --propagation private sh -c 'mount -t proc proc "$0/proc" && exec chroot "$@"' \
        "$work" "$work" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 \
        "${pip_env[@]}" "$@"
}
in_root python3 -m pip install -q --pre "$LITE_PIN" "$NUMPY_PIN" >&2 || die "pip install in the root failed"
version="$(in_root python3 -c 'import paddlelite.lite as l; print(l.Opt().version())' 2>/dev/null | tail -n 1)"
[[ -n "$version" ]] || die "paddlelite does not import in the root"
rm -f "$work/etc/resolv.conf"
# what the tools never read: downloaded .debs, docs, translations (~100 MB)
rm -rf "$work"/var/cache/apt/archives/*.deb "$work"/usr/share/doc "$work"/usr/share/locale \
       "$work"/usr/share/man

echo "$STAMP_TEXT" >"$work/.mobileseg-lite-stamp"
mv "$work.log" "$work/.debootstrap.log"
mv "$work" "$ROOT"
echo "setup_env.sh: Paddle Lite $version ready in $ROOT ($(( $(date +%s) - start )) s)" >&2
echo "$ROOT"
