#!/usr/bin/env bash
# Build the hapee-extras-stktagg Debian package with Debian's own tools.
#   bash contrib/build-deb.sh [OUTDIR]      (default: dist/)
# The packaging lives in contrib/debian (the project's top level is fixed by its
# design card); it is copied as debian/ into a clean build tree, as
# dpkg-buildpackage expects. Installs the build tools when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-dist}")
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
if ! command -v dpkg-buildpackage >/dev/null || ! dpkg -s debhelper dh-python python3-all >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq debhelper dh-python python3-all \
        python3-setuptools dpkg-dev fakeroot >/dev/null
fi
version=$(python3 -c 'import stktagg; print(stktagg.__version__)')
work=$(mktemp -d)
tree="$work/hapee-extras-stktagg-$version"
mkdir -p "$tree"
# The work tree's files as git sees them (tracked, or new and not ignored), minus those
# deleted or moved away but not yet committed; without git, the directories themselves.
git ls-files -z --cached --others --exclude-standard 2>/dev/null \
    | while IFS= read -r -d '' f; do if [ -e "$f" ]; then printf '%s\0' "$f"; fi; done \
    | xargs -0 -I{} cp --parents {} "$tree" 2>/dev/null || cp -r setup.py setup.cfg README.md hapee_stktagg.py stktagg man contrib "$tree"
cp -r contrib/debian "$tree/debian"
(cd "$tree" && dpkg-buildpackage -us -uc -b >"$work/build.log" 2>&1) || { tail -40 "$work/build.log"; exit 1; }
mkdir -p "$out"
cp "$work"/hapee-extras-stktagg_"$version"_all.deb "$out/"
echo "$out/hapee-extras-stktagg_${version}_all.deb"
rm -rf "$work"
