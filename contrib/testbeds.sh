#!/usr/bin/env bash
# Test beds: Debian roots with newer HAProxy, PyPy 3.11 and CPython 3.13, run on this machine
# (Debian 12) without touching its own packages. Recipes: shared docs, testbeds.md.
#
#   bash contrib/testbeds.sh build [trixie|sid|experimental|all]   # default: all
#   bash contrib/testbeds.sh run ROOT COMMAND...    # COMMAND inside ROOT, from the current dir
#   bash contrib/testbeds.sh haproxy ROOT           # path of a wrapper running ROOT's haproxy
#   bash contrib/testbeds.sh versions               # versions in the roots already built
#
# Roots (under $STKTAGG_TESTBEDS, default /var/cache/stktagg-testbeds):
#   trixie        HAProxy 3.0, PyPy 3.11, CPython 3.13, pytest and the test deps for both
#   sid           HAProxy 3.2
#   experimental  sid + experimental: HAProxy 3.4
# Everything comes from Debian's archive (debootstrap's default mirror, override with
# STKTAGG_MIRROR): no PyPI needed. Debian's pypy3 has /usr/lib/python3/dist-packages on its
# sys.path, and the pure-Python python3-* packages there (pytest, hypothesis, ...) work
# under it as they do under CPython 3.13; their C accelerators (coverage's tracer,
# ruamel.yaml's clib) are CPython-only and PyPy falls back to their Python code.
set -euo pipefail

CACHE=${STKTAGG_TESTBEDS:-/var/cache/stktagg-testbeds}
MIRROR=${STKTAGG_MIRROR:-http://deb.debian.org/debian}
ALL_ROOTS="trixie sid experimental"
# What a program sees inside a root: the root's own tools, not this machine's (pyenv...).
ROOT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# Recipe of each root: "suite|packages|suite of haproxy". Changing a line here makes the
# next build rebuild that root (the line is kept in the root's stamp file).
recipe() {
    case $1 in
        trixie) echo "trixie|haproxy socat openssl faketime procps pypy3 pypy3-venv python3 python3-venv python3-pytest python3-hypothesis python3-ruamel.yaml python3-prometheus-client python3-coverage|" ;;
        sid) echo "sid|haproxy socat|" ;;
        experimental) echo "sid|socat|experimental" ;;
        *) die "unknown root '$1' (one of: $ALL_ROOTS)" ;;
    esac
}

die() { echo "testbeds.sh: $*" >&2; exit 1; }
say() { echo "testbeds.sh: $*" >&2; }
stamp_of() { echo "$CACHE/$1.stamp"; }

# A root is usable when its stamp's first line is its current recipe.
is_built() {
    local stamp; stamp=$(stamp_of "$1")
    [ -d "$CACHE/$1" ] && [ -f "$stamp" ] && [ "$(head -n1 "$stamp")" = "recipe: $(recipe "$1")" ]
}

need_built() {
    recipe "$1" >/dev/null
    is_built "$1" || die "root '$1' is not built (or its recipe changed): run 'bash $0 build $1'"
}

# Refuse to delete a directory something is mounted under (a bind of the checkout, say):
# rm -rf would go through the mount. Mounts made by 'run' live in private namespaces and
# are not seen here; this catches leftovers made by hand.
safe_remove() {
    [ -e "$1" ] || return 0
    if awk -v d="$1" '$2 == d || index($2, d "/") == 1 {found = 1} END {exit !found}' /proc/mounts; then
        die "something is mounted under $1; unmount it first"
    fi
    rm -rf --one-file-system "$1"
}

build_one() {
    local name=$1 suite packages hasuite root new
    IFS='|' read -r suite packages hasuite <<<"$(recipe "$name")"
    root=$CACHE/$name
    if is_built "$name"; then
        say "$name: up to date ($root)"
        return 0
    fi
    new=$root.new
    say "$name: building $suite root in $root (a minute or two)"
    safe_remove "$new"
    # --cache-dir keeps the base .debs, so sid and experimental download them once.
    mkdir -p "$CACHE/debs"
    debootstrap --variant=minbase --cache-dir="$CACHE/debs" "$suite" "$new" "$MIRROR" \
        >"$CACHE/$name.log" 2>&1 || die "$name: debootstrap failed, see $CACHE/$name.log"
    cp /etc/resolv.conf "$new/etc/resolv.conf"   # apt inside the chroot resolves names
    # The archive served here has sid/experimental Release files past their Valid-Until.
    echo 'Acquire::Check-Valid-Until "false";' >"$new/etc/apt/apt.conf.d/99stktagg-testbeds"
    # No service may start inside the chroot (haproxy's postinst would try).
    printf '#!/bin/sh\nexit 101\n' >"$new/usr/sbin/policy-rc.d"; chmod 755 "$new/usr/sbin/policy-rc.d"
    if [ -n "$hasuite" ]; then
        echo "deb $MIRROR $hasuite main" >"$new/etc/apt/sources.list.d/$hasuite.list"
    fi
    {
        chroot "$new" apt-get update -q &&
        chroot "$new" apt-get install -y -q --no-install-recommends $packages &&
        if [ -n "$hasuite" ]; then
            chroot "$new" apt-get install -y -q --no-install-recommends -t "$hasuite" haproxy
        fi &&
        chroot "$new" apt-get clean
    } >>"$CACHE/$name.log" 2>&1 || die "$name: apt-get failed, see $CACHE/$name.log"
    # Replace the old root only once the new one is complete: an interrupted build leaves
    # the previous root (and its stamp) as they were.
    safe_remove "$root"
    mv "$new" "$root"
    {
        echo "recipe: $(recipe "$name")"
        echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) from $MIRROR"
        chroot "$root" dpkg-query -W -f '${Package} ${Version}\n' haproxy $packages | sort -u
    } >"$(stamp_of "$name").tmp"
    mv "$(stamp_of "$name").tmp" "$(stamp_of "$name")"
    say "$name: built"
}

# A wrapper that runs ROOT's haproxy on this machine's files, with the root's own loader
# and libraries (they are newer than this machine's). exec keeps the PID, so a test can
# signal it like any haproxy binary.
wrapper() {
    local name=$1 root=$CACHE/$1 path=$CACHE/bin/haproxy-$1
    mkdir -p "$CACHE/bin"
    cat >"$path.tmp" <<EOF
#!/bin/sh
# HAProxy from the test bed root $root (made by contrib/testbeds.sh).
exec "$root/lib64/ld-linux-x86-64.so.2" \\
    --library-path "$root/lib/x86_64-linux-gnu:$root/usr/lib/x86_64-linux-gnu" \\
    "$root/usr/sbin/haproxy" "\$@"
EOF
    chmod 755 "$path.tmp"
    mv "$path.tmp" "$path"
    echo "$path"
}

versions() {
    local name root any=""
    for name in $ALL_ROOTS; do
        is_built "$name" || continue
        any=1; root=$CACHE/$name
        printf '%-13s %s\n' "$name" "$("$(wrapper "$name")" -v | head -n1)"
        # 2>/dev/null: without /proc, PyPy warns that it cannot read the CPU's cache size.
        if [ -x "$root/usr/bin/pypy3" ]; then
            printf '%-13s %s\n' "$name" "$(chroot "$root" pypy3 --version 2>/dev/null | tr '\n' ' ')"
        fi
        if [ -x "$root/usr/bin/python3" ]; then
            printf '%-13s %s\n' "$name" "$(chroot "$root" python3 --version 2>&1)"
        fi
    done
    [ -n "$any" ] || say "no root built yet in $CACHE"
}

# Run a command inside ROOT from the current directory (testbeds.md): a private mount
# namespace; the folder above the current one (the checkout and ../shared) and /tmp bound
# at the same paths; chroot; cd back. Every step execs, so the command keeps this PID.
# Beyond testbeds.md: /proc (the tests count /proc/self/fd, PyPy reads /proc/cpuinfo) and
# /dev (for /dev/shm, /dev/pts) are mounted too, and PATH is the root's. The root itself
# is read-only in there: a cached bed must stay what its stamp says (the package test's
# build-deb.sh, say, would apt-get install Debian's build tools into it).
run_in() {
    local name=$1 top; shift
    [ "$#" -gt 0 ] || die "usage: $0 run ROOT COMMAND..."
    need_built "$name"
    top=$(dirname "$PWD")
    [ "$top" != / ] || die "run from a folder at least two levels deep (its parent is bound into the root)"
    mkdir -p "$CACHE/$name$top"
    exec unshare --mount --propagation private -- /bin/bash -c '
        set -e; r=$1 top=$2 cwd=$3; shift 3
        mount --bind "$r" "$r" && mount -o remount,bind,ro "$r"
        mount -t proc proc "$r/proc"
        mount --rbind /dev "$r/dev"
        mount --rbind /tmp "$r/tmp"
        mount --rbind "$top" "$r$top"
        exec chroot "$r" /usr/bin/env PATH="'"$ROOT_PATH"'" /bin/sh -c "cd \"\$0\" && exec \"\$@\"" "$cwd" "$@"
    ' testbeds "$CACHE/$name" "$top" "$PWD" "$@"
}

main() {
    local cmd=${1:-} target name start
    [ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, mount namespaces)"
    case $cmd in
        build)
            export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8  # (the roots have no other locale)
            target=${2:-all}
            [ "$target" = all ] && target=$ALL_ROOTS || recipe "$target" >/dev/null
            command -v debootstrap >/dev/null || {
                say "installing debootstrap"
                apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null
            }
            mkdir -p "$CACHE"
            # One build at a time (two would share the .new directories and the deb cache).
            exec 9>"$CACHE/.lock"
            flock -w 1800 9 || die "another build holds $CACHE/.lock"
            start=$SECONDS
            for name in $target; do build_one "$name"; done
            say "done in $((SECONDS - start)) s"
            versions ;;
        run) [ "$#" -ge 2 ] || die "usage: $0 run ROOT COMMAND..."; shift; run_in "$@" ;;
        haproxy)
            [ "$#" -eq 2 ] || die "usage: $0 haproxy ROOT"
            need_built "$2"; wrapper "$2" ;;
        versions) versions ;;
        *) sed -n '2,8s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
    esac
}

main "$@"
