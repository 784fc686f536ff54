#!/usr/bin/env bash
# Prepares the Raspberry Pi firmware the image tests use, independently of
# labimg's own fetch code: downloads the Debian packages firmware/manifest.toml
# pins (with apt, from Debian trixie, through a private apt configuration that
# leaves the machine's sources alone), checks their sha256 against the
# manifest, and unpacks the pinned files flat into OUT_DIR.
#
# usage: tests/firmware/prepare.sh CACHE_DIR OUT_DIR
#   CACHE_DIR  keeps the .deb files (re-runs download nothing)
#   OUT_DIR    receives the firmware files, named as on the partition
set -euo pipefail

cache=${1:?usage: prepare.sh CACHE_DIR OUT_DIR}
out=${2:?usage: prepare.sh CACHE_DIR OUT_DIR}
repo=$(cd "$(dirname "$0")/../.." && pwd)
manifest=$repo/firmware/manifest.toml
mkdir -p "$cache" "$out"
cache=$(cd "$cache" && pwd)

# One line per archive: url sha256; one per file: name archive path sha256.
archives=$(python3 - "$manifest" <<'PY'
import sys, tomllib
m = tomllib.load(open(sys.argv[1], "rb"))
for a in m["archive"]:
    print("A", a["id"], a["url"], a["sha256"])
for f in m["file"]:
    print("F", f["name"], f["archive"], f["path"], f["sha256"])
PY
)

apt_dir=$cache/apt
apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=-"
  -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -o "APT::Architectures::=arm64"
  -o "APT::Architectures::=amd64" -o "Debug::NoLocking=1")

while read -r kind id url sha; do
  [ "$kind" = A ] || continue
  deb=$cache/$(basename "$url")
  if [ -f "$deb" ] && echo "$sha  $deb" | sha256sum -c --status; then
    continue
  fi
  if [ ! -d "$apt_dir/lists" ]; then
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main non-free-firmware" \
      > "$apt_dir/sources.list"
    apt-get "${apt_opts[@]}" update -qq
  fi
  file=$(basename "$url")
  pkg=${file%%_*}
  ver=${file#*_}
  ver=${ver%_*}
  ver=${ver//%2b/+}
  arch=${file##*_}
  arch=${arch%.deb}
  tmp=$(mktemp -d)
  chown _apt "$tmp" 2>/dev/null || true
  (cd "$tmp" && apt-get "${apt_opts[@]}" download -qq "$pkg:$arch=$ver")
  mv "$tmp"/*.deb "$deb"
  rmdir "$tmp"
  echo "$sha  $deb" | sha256sum -c --quiet || { echo "prepare.sh: $deb does not match the manifest's pin for $id" >&2; exit 1; }
done <<< "$archives"

declare -A unpacked
while read -r kind name archive path sha; do
  [ "$kind" = F ] || continue
  if [ -f "$out/$name" ] && echo "$sha  $out/$name" | sha256sum -c --status; then
    continue
  fi
  url=$(awk -v id="$archive" '$1 == "A" && $2 == id { print $3 }' <<< "$archives")
  deb=$cache/$(basename "$url")
  x=$cache/x-$archive
  if [ -z "${unpacked[$archive]:-}" ]; then
    rm -rf "$x"
    dpkg-deb -x "$deb" "$x"
    unpacked[$archive]=1
  fi
  cp "$x/$path" "$out/$name"
  echo "$sha  $out/$name" | sha256sum -c --quiet
done <<< "$archives"
rm -rf "$cache"/x-*
