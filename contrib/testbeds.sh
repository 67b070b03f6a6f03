#!/usr/bin/env bash
# Test beds: Debian roots with newer HAProxy, PyPy 3.11 and CPython 3.13, and a bare host
# booting systemd, run on this machine (Debian 12) without touching its own packages.
# Recipes: shared docs, testbeds.md.
#
#   bash contrib/testbeds.sh build [trixie|sid|experimental|systemd|all]   # default: all
#   bash contrib/testbeds.sh run ROOT COMMAND...    # COMMAND inside ROOT, from the current dir
#   bash contrib/testbeds.sh haproxy ROOT           # path of a wrapper running ROOT's haproxy
#   bash contrib/testbeds.sh versions               # versions in the roots already built
#   bash contrib/testbeds.sh clone ROOT DIR         # a throw-away copy of ROOT at DIR
#   bash contrib/testbeds.sh boot DIR               # boot systemd in a clone; prints its PID
#   bash contrib/testbeds.sh enter DIR COMMAND...   # COMMAND inside the booted clone
#   bash contrib/testbeds.sh poweroff DIR           # systemctl poweroff, wait, clean up
#   bash contrib/testbeds.sh discard DIR            # poweroff if booted, delete the clone
#
# Roots (under $STKTAGG_TESTBEDS, default /var/cache/stktagg-testbeds):
#   trixie        HAProxy 3.0, PyPy 3.11, CPython 3.13, pytest and the test deps for both
#   sid           HAProxy 3.2
#   experimental  sid + experimental: HAProxy 3.4
#   systemd       trixie with systemd, D-Bus, socat and the package's Depends: clone it,
#                 install the package into the clone, boot it (tests/test_systemd.py)
# Everything comes from Debian's archive (debootstrap's default mirror, override with
# STKTAGG_MIRROR): no PyPI needed. Debian's pypy3 has /usr/lib/python3/dist-packages on its
# sys.path, and the pure-Python python3-* packages there (pytest, hypothesis, ...) work
# under it as they do under CPython 3.13; their C accelerators (coverage's tracer,
# ruamel.yaml's clib) are CPython-only and PyPy falls back to their Python code.
set -euo pipefail

CACHE=${STKTAGG_TESTBEDS:-/var/cache/stktagg-testbeds}
MIRROR=${STKTAGG_MIRROR:-http://deb.debian.org/debian}
ALL_ROOTS="trixie sid experimental systemd"
# What a program sees inside a root: the root's own tools, not this machine's (pyenv...).
ROOT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# Recipe of each root: "suite|packages|suite of haproxy". Changing a line here makes the
# next build rebuild that root (the line is kept in the root's stamp file).
recipe() {
    case $1 in
        trixie) echo "trixie|haproxy socat openssl faketime procps pypy3 pypy3-venv python3 python3-venv python3-pytest python3-hypothesis python3-ruamel.yaml python3-prometheus-client python3-coverage|" ;;
        sid) echo "sid|haproxy socat|" ;;
        experimental) echo "sid|socat|experimental" ;;
        # A bare host for the package's unit: systemd as PID 1 (boot), D-Bus for systemctl,
        # socat for the stats socket, and the package's Depends (python3:any, adduser), so
        # that 'dpkg -i' of the package works offline in a clone.
        systemd) echo "trixie|systemd systemd-sysv dbus socat python3 adduser|" ;;
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
        # haproxy: the experimental root gets it from $hasuite, not from its package list.
        chroot "$root" dpkg-query -W -f '${Package} ${Version}\n' ${hasuite:+haproxy} $packages | sort -u
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
        if [ -x "$root/usr/sbin/haproxy" ]; then
            printf '%-13s %s\n' "$name" "$("$(wrapper "$name")" -v | head -n1)"
        fi
        # 2>/dev/null: without /proc, PyPy warns that it cannot read the CPU's cache size.
        if [ -x "$root/usr/bin/pypy3" ]; then
            printf '%-13s %s\n' "$name" "$(chroot "$root" pypy3 --version 2>/dev/null | tr '\n' ' ')"
        fi
        if [ -x "$root/usr/bin/python3" ]; then
            printf '%-13s %s\n' "$name" "$(chroot "$root" python3 --version 2>&1)"
        fi
        if [ "$name" = systemd ]; then
            printf '%-13s %s\n' "$name" "$(chroot "$root" dpkg-query -W -f 'systemd ${Version}' systemd)"
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

# -- A booted systemd (the 'systemd' root) ----------------------------------------------------
#
# testbeds.md's recipe boots systemd as PID 1 of a new pid + mount namespace, but with this
# machine's /dev and /sys (cgroup tmpfs included) bound in, and that systemd changes them
# for the whole machine: it remounts the cgroup tmpfs read-only, leaves init.scope,
# system.slice... in the machine's cgroup hierarchies (moving itself out of the cgroups it
# was started in) and creates /dev/log, /dev/initctl, /dev/mqueue, /dev/hugepages. Here it
# gets its own: a cgroup namespace rooted in a cgroup made for this boot (under the caller's
# own, in every hierarchy), fresh cgroup mounts, a private /dev with the usual nodes, a
# read-only sysfs, its own UTS and IPC namespaces (it sets the host name). The network
# namespace is this machine's, so HAProxy on the host reaches a daemon inside on loopback.
# Boot only a clone: the cached root stays what its stamp says.
BOOT_TIMEOUT=${STKTAGG_BOOT_TIMEOUT:-60}
# Units masked in a booted clone: they fail in a namespace (no kernel modules), would act
# on this machine (sysctls of the shared network namespace; gettys on its consoles), or only
# make noise (timers of a system that lives a minute).
BOOT_MASKED="systemd-modules-load.service systemd-sysctl.service console-getty.service getty@.service
    getty.target apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer
    fstrim.timer systemd-tmpfiles-clean.timer"

# 'clone ROOT DIR': a throw-away copy of a built root (cp -a: about 1 s for the systemd
# root, a reflink where the file system has them).
clone_root() {
    local name=$1 dir
    need_built "$name"
    dir=$(realpath -m "$2")
    [ ! -e "$dir" ] || die "$dir exists"
    case "$dir/" in "$CACHE"/*) die "clone outside $CACHE (the cache holds built roots only)" ;; esac
    mkdir -p "$(dirname "$dir")"
    cp -a --reflink=auto "$CACHE/$name" "$dir.tmp"
    mv "$dir.tmp" "$dir"
    echo "$dir"
}

# The state of a boot, next to DIR: DIR.pid (systemd's PID on this machine), DIR.console
# (systemd's console), DIR.cgroups (the cgroups made for it: "controllers:path" lines).
booted_pid() {   # systemd's PID if DIR is booted now, else fails
    local dir=$1 pid
    [ -f "$dir.pid" ] || return 1
    pid=$(cat "$dir.pid")
    [ -n "$pid" ] && [ "$(readlink "/proc/$pid/root" 2>/dev/null)" = "$dir" ] || return 1
    echo "$pid"
}

# Mount the cgroup hierarchy of one /proc/self/cgroup line's controllers at $2.
mount_hierarchy() {
    case $1 in
        "") mount -t cgroup2 cgroup2 "$2" ;;
        name=*) mount -t cgroup -o "none,$1" cgroup "$2" ;;
        *) mount -t cgroup -o "$1" cgroup "$2" ;;
    esac
}

# Runs in a private mount namespace: make this boot's cgroup under the current one in
# every hierarchy and move this process into it, then start systemd in new namespaces.
# Every step execs: the process that unshare forks is PID 1 of the new pid namespace.
boot_launcher() {
    local dir=$1 tag=$2 mnt id ctl path cg lines
    set -e
    mnt=$(mktemp -d)
    : >"$dir.cgroups"
    lines=$(cat /proc/self/cgroup)   # read it whole: it changes as this process moves
    while IFS=: read -r id ctl path; do
        mount_hierarchy "$ctl" "$mnt" || { say "cannot mount cgroup hierarchy '$ctl'"; exit 1; }
        cg=${path%/}/$tag
        mkdir "$mnt$cg"
        if [ -f "$mnt$cg/cpuset.cpus" ]; then  # a new cpuset has no CPUs and takes no process
            cat "$mnt${path%/}/cpuset.cpus" >"$mnt$cg/cpuset.cpus"
            cat "$mnt${path%/}/cpuset.mems" >"$mnt$cg/cpuset.mems"
        fi
        printf '%s:%s\n' "$ctl" "$cg" >>"$dir.cgroups"
        echo $$ >"$mnt$cg/cgroup.procs"
        umount "$mnt"
    done <<<"$lines"
    rmdir "$mnt"
    exec unshare --cgroup --pid --fork --mount --uts --ipc --propagation private -- /bin/bash -c '
        set -e; r=$1 console=$2
        mount --bind "$r" "$r"
        mount -t proc proc "$r/proc"
        mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$r/sys"
        mount -t tmpfs -o nosuid,nodev,noexec,mode=755 tmpfs "$r/sys/fs/cgroup"
        while IFS=: read -r id ctl path; do   # now relative to this namespace: all "/"
            case $ctl in
                "") name=unified ;;
                name=systemd) name=systemd ;;
                name=*) continue ;;
                *) name=$ctl ;;
            esac
            mkdir "$r/sys/fs/cgroup/$name"
            case $ctl in
                "") mount -t cgroup2 cgroup2 "$r/sys/fs/cgroup/$name" ;;
                name=*) mount -t cgroup -o "none,$ctl" cgroup "$r/sys/fs/cgroup/$name" ;;
                *) mount -t cgroup -o "$ctl" cgroup "$r/sys/fs/cgroup/$name"
                   for c in ${ctl//,/ }; do [ "$c" = "$ctl" ] || ln -s "$ctl" "$r/sys/fs/cgroup/$c"; done ;;
            esac
        done <"$r/proc/self/cgroup"
        mount -t tmpfs -o nosuid,noexec,mode=755 tmpfs "$r/dev"
        for node in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
            IFS=: read -r n major minor <<<"$node"
            mknod -m 666 "$r/dev/$n" c "$major" "$minor"
        done
        mkdir -m 755 "$r/dev/pts"
        mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5 devpts "$r/dev/pts"
        ln -s pts/ptmx "$r/dev/ptmx"
        mkdir -m 1777 "$r/dev/shm"
        mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs "$r/dev/shm"
        ln -s /proc/self/fd "$r/dev/fd"
        ln -s /proc/self/fd/0 "$r/dev/stdin"
        ln -s /proc/self/fd/1 "$r/dev/stdout"
        ln -s /proc/self/fd/2 "$r/dev/stderr"
        touch "$r/dev/console"
        mount --bind "$console" "$r/dev/console"   # systemd writes its console to DIR.console
        mount -t tmpfs -o nosuid,nodev,mode=755 tmpfs "$r/run"
        mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs "$r/tmp"
        export container=unshare
        exec chroot "$r" /lib/systemd/systemd --system
    ' boot "$dir" "$dir.console"
}

# Remove the cgroups made for a boot (once its processes are gone).
remove_cgroups() {
    local dir=$1
    [ -f "$dir.cgroups" ] || return 0
    unshare --mount --propagation private -- /bin/bash -c '
        mnt=$(mktemp -d); deadline=$((SECONDS + 10)); left=0
        while IFS=: read -r ctl cg; do
            case $ctl in
                "") mount -t cgroup2 cgroup2 "$mnt" ;;
                name=*) mount -t cgroup -o "none,$ctl" cgroup "$mnt" ;;
                *) mount -t cgroup -o "$ctl" cgroup "$mnt" ;;
            esac || continue
            # A process killed a moment ago may still hold its cgroup: retry until the deadline.
            while [ -d "$mnt$cg" ] && ! find "$mnt$cg" -depth -type d -exec rmdir {} + 2>/dev/null \
                    && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
            [ -d "$mnt$cg" ] && { echo "testbeds.sh: cgroup $ctl:$cg is still busy" >&2; left=1; }
            umount "$mnt"
        done <"$1"
        rmdir "$mnt"; exit $left
    ' cleanup "$dir.cgroups" && rm -f "$dir.cgroups"
}

# 'boot DIR': boot systemd in DIR (a clone of the systemd root); print its PID on this
# machine once 'systemctl is-system-running' says running or degraded.
boot_root() {
    local dir launcher pid state deadline u
    dir=$(realpath -e "$1") || die "no directory $1"
    case "$dir/" in "$CACHE"/*) die "boot a clone ('$0 clone systemd DIR'), not the cached root $dir" ;; esac
    [ -x "$dir/lib/systemd/systemd" ] || die "$dir has no systemd (a clone of the 'systemd' root boots)"
    ! booted_pid "$dir" >/dev/null || die "$dir is already booted (PID $(cat "$dir.pid"))"
    # A host has no policy-rc.d: maintainer scripts start and stop services as on a real one.
    rm -f "$dir/usr/sbin/policy-rc.d"
    for u in $BOOT_MASKED; do ln -sfn /dev/null "$dir/etc/systemd/system/$u"; done
    rm -f "$dir.pid"
    : >"$dir.console"
    export -f boot_launcher mount_hierarchy say
    # setsid: no signal of the caller's terminal reaches it (SIGINT is ctrl-alt-del to systemd).
    # It does not fork here (a background job leads no process group), nor does unshare
    # without --fork: the launcher keeps this PID, and its child becomes systemd.
    setsid unshare --mount --propagation private -- /bin/bash -c 'boot_launcher "$@"' boot "$dir" \
        "stktagg-testbed-$$" </dev/null >>"$dir.console" 2>&1 &
    launcher=$!
    deadline=$((SECONDS + BOOT_TIMEOUT))
    # The launcher's child is PID 1 of the new namespace; it is systemd once it has its root.
    while :; do
        pid=$(awk '{print $1}' "/proc/$launcher/task/$launcher/children" 2>/dev/null) || pid=""
        if [ -n "$pid" ] && [ "$(readlink "/proc/$pid/root" 2>/dev/null)" = "$dir" ]; then break; fi
        alive "$launcher" || boot_failed "$dir" "the launcher exited"
        [ $SECONDS -lt $deadline ] || boot_failed "$dir" "no systemd after $BOOT_TIMEOUT s"
        sleep 0.05
    done
    echo "$pid" >"$dir.pid"
    while :; do
        state=$(enter "$dir" systemctl is-system-running 2>/dev/null) || true
        case $state in
            running) break ;;
            degraded)
                say "booted degraded; failed units:" \
                    "$(enter "$dir" systemctl --failed --no-legend --plain | awk '{print $1}' | tr '\n' ' ')"
                break ;;
            # (offline, or nothing: no answer yet from the manager; starting: still booting)
            maintenance|stopping) boot_failed "$dir" "is-system-running says $state" ;;
        esac
        alive "$pid" || boot_failed "$dir" "systemd exited"
        [ $SECONDS -lt $deadline ] || boot_failed "$dir" "still '$state' after $BOOT_TIMEOUT s"
        sleep 0.1
    done
    echo "$pid"
}

# A process that runs (kill -0 also succeeds on a zombie that nobody reaped yet).
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}

# Called from boot_root (bash's locals are dynamic: $launcher is boot_root's).
boot_failed() {
    local child
    say "boot of $1 failed: $2; its console (${1}.console):"
    tail -n 30 "$1.console" >&2 || true
    poweroff_root "$1" || true
    # Still setting up, or hung before systemd: end the launcher's child (PID 1 of the new
    # namespace: its end ends every process in there), then the launcher.
    if alive "$launcher"; then
        for child in $(cat "/proc/$launcher/task/$launcher/children" 2>/dev/null); do
            kill -KILL "$child" 2>/dev/null || true
        done
        kill -KILL "$launcher" 2>/dev/null || true
        wait "$launcher" 2>/dev/null || true
        remove_cgroups "$1" || true
    fi
    exit 1
}

# 'enter DIR COMMAND...': COMMAND in the booted DIR (its namespaces and root, PATH of the root).
enter() {
    local dir=$1 pid; shift
    pid=$(booted_pid "$dir") || die "$dir is not booted"
    [ "$#" -gt 0 ] || die "usage: $0 enter DIR COMMAND..."
    nsenter -t "$pid" -m -p -u -i -C -r -w -- /usr/bin/env PATH="$ROOT_PATH" "$@"
}

# 'poweroff DIR': systemctl poweroff (PID 1 ignores SIGTERM), wait for the end (SIGKILL
# after a deadline), remove the boot's cgroups. Nothing to stop when DIR is not booted.
poweroff_root() {
    local dir pid deadline wait_s
    dir=$(realpath -m "$1")
    if pid=$(booted_pid "$dir"); then
        # A manager that does not take the order (still booting, hung) gets 5 s, not 30.
        wait_s=30
        enter "$dir" systemctl poweroff >/dev/null 2>&1 || wait_s=5
        deadline=$((SECONDS + wait_s))
        while alive "$pid" && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
        if alive "$pid"; then
            say "systemd (PID $pid) did not power off within $wait_s s: killing it"
            kill -KILL "$pid" 2>/dev/null || true
            deadline=$((SECONDS + 10))
            while alive "$pid" && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
        fi
    fi
    rm -f "$dir.pid"
    remove_cgroups "$dir"
}

# 'discard DIR': power off if booted, then delete the clone and its state files.
discard_root() {
    local dir
    dir=$(realpath -m "$1")
    case "$dir/" in "$CACHE"/*) die "refusing to discard $dir (in the cache)" ;; esac
    poweroff_root "$dir"
    safe_remove "$dir"
    rm -f "$dir.console" "$dir.cgroups"
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
            need_built "$2"
            [ -x "$CACHE/$2/usr/sbin/haproxy" ] || die "root '$2' has no haproxy"
            wrapper "$2" ;;
        versions) versions ;;
        clone) [ "$#" -eq 3 ] || die "usage: $0 clone ROOT DIR"; clone_root "$2" "$3" ;;
        boot) [ "$#" -eq 2 ] || die "usage: $0 boot DIR"; boot_root "$2" ;;
        enter) [ "$#" -ge 3 ] || die "usage: $0 enter DIR COMMAND..."; shift; enter "$(realpath -m "$1")" "${@:2}" ;;
        poweroff) [ "$#" -eq 2 ] || die "usage: $0 poweroff DIR"; poweroff_root "$2" ;;
        discard) [ "$#" -eq 2 ] || die "usage: $0 discard DIR"; discard_root "$2" ;;
        *) sed -n '2,14s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
    esac
}

main "$@"
