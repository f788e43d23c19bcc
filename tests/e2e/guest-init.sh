#!/bin/sh
# Runs as PID 1 of the guest's fresh namespaces (started by tests/e2e/guest.py through
# `unshare --mount --propagation private --pid --fork --uts --ipc --cgroup [--net]`).
#
# Builds the guest's root in the PRIVATE mount namespace: an overlay of the host's `/` (or of
# $GHOSTAGENT_LOWERDIR) whose upper layer is a tmpfs (nothing reaches the host disk), fresh
# proc/sys/cgroup2/dev/run/tmp, the requested host directories bound at the same paths,
# host-touching units masked; then pivot_root()s into it, drops capabilities and execs systemd.
#
# Usage: guest-init.sh MOUNTPOINT NAME NETWORK(0|1) TARGET MASKS DROP_CAPS [BIND...]
#   MASKS is a space-separated list of unit names, DROP_CAPS a comma-separated setpriv list.
# Every mount below happens in this namespace only: it vanishes when the guest's last process
# exits, whatever happens to the test process.
set -eu

base=$1 name=$2 network=$3 target=$4 masks=$5 drop_caps=$6
shift 6

# The guest's lower layer: the host's `/`, or another root file system (Guest(root=...): a
# Debian rootfs made by debootstrap) when GHOSTAGENT_LOWERDIR names one.
lower=${GHOSTAGENT_LOWERDIR:-/}
mount -t tmpfs -o mode=0755,size=50% ghostagent-layers "$base"
mkdir "$base/upper" "$base/work" "$base/root"
mount -t overlay -o "lowerdir=$lower,upperdir=$base/upper,workdir=$base/work" ghostagent-root \
    "$base/root"
R=$base/root

# /proc, with the kernel-wide knobs read-only.
mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
for p in sys sysrq-trigger; do
    [ -e "$R/proc/$p" ] || continue
    mount --bind "$R/proc/$p" "$R/proc/$p"
    mount -o remount,bind,ro,nosuid,nodev,noexec "$R/proc/$p"
done
# /sys read-only (systemd and udev see that and stay away), a cgroup2 rooted at our cgroup.
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$R/sys/fs/cgroup"

# A minimal /dev: a few harmless host nodes, a new devpts instance, a private /dev/shm.
mount -t tmpfs -o mode=0755,nosuid,size=4m ghostagent-dev "$R/dev"
for d in null zero full random urandom tty; do
    touch "$R/dev/$d"
    mount --bind "/dev/$d" "$R/dev/$d"
done
mkdir "$R/dev/pts" "$R/dev/shm" "$R/dev/mqueue"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5,nosuid,noexec devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev ghostagent-shm "$R/dev/shm"
ln -s /proc/self/fd "$R/dev/fd"
ln -s /proc/self/fd/0 "$R/dev/stdin"
ln -s /proc/self/fd/1 "$R/dev/stdout"
ln -s /proc/self/fd/2 "$R/dev/stderr"

mount -t tmpfs -o mode=0755,nosuid,nodev ghostagent-run "$R/run"
mount -t tmpfs -o mode=1777,nosuid,nodev ghostagent-tmp "$R/tmp"

# Host directories the units need, read-write, at the same path (after /tmp is mounted, so a
# bind under /tmp lands on top of the guest's tmpfs).
for b in "$@"; do
    mkdir -p "$R$b"
    mount --rbind "$b" "$R$b"
done
# A bind that contains the scratch dir also carried a copy of the layers mounts: drop it.
if mountpoint -q "$R$base"; then
    umount -R -l "$R$base"
fi

# Masks: everything that would touch the host or only slow the boot.
mkdir -p "$R/etc/systemd/system" "$R/etc/tmpfiles.d" "$R/etc/systemd/system.conf.d"
for u in $masks; do
    ln -sfn /dev/null "$R/etc/systemd/system/$u"
done
# tmp.conf would empty /tmp and /var/tmp at boot (and age-clean them later).
ln -sfn /dev/null "$R/etc/tmpfiles.d/tmp.conf"
# No core files anywhere (a dumped service in a bound host dir would leave one there); a
# service that hangs on stop must not stall the guest's poweroff for 90 s.
printf '[Manager]\nDefaultLimitCORE=0\nDefaultTimeoutStopSec=10s\nShowStatus=no\n' \
    >"$R/etc/systemd/system.conf.d/ghostagent-e2e.conf"

# The only target the guest boots: basic.target and nothing else.
cat >"$R/etc/systemd/system/$target" <<EOF
[Unit]
Description=ghost-deploy-agent end-to-end guest
Requires=basic.target
After=basic.target
AllowIsolate=yes
EOF

# A fresh identity, so the guest's journal is its own.
od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$R/etc/machine-id"
echo >>"$R/etc/machine-id"
echo "$name" >"$R/etc/hostname"
hostname "$name"

if [ "$network" = 1 ]; then
    ip link set lo up
fi

cd "$R"
mkdir -p .ghostagent-oldroot
pivot_root . .ghostagent-oldroot
cd /
umount -l /.ghostagent-oldroot
rmdir /.ghostagent-oldroot
# systemd leaves / private when it runs in a container; LoadCredential= needs it shared.
mount --make-rshared /

exec setpriv --inh-caps=-all --bounding-set="$drop_caps" -- \
    env -i container="$name" PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    /lib/systemd/systemd --system --unit="$target" --log-target=journal
