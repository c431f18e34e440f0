#!/bin/bash
# run-in-ktls-kernel.sh -- run one command inside a Linux kernel that has kTLS.
#
# Why: ztproxy's claims about kernel TLS (TLS_TX/TLS_RX, splice out of a kTLS socket, io_uring on
# kTLS sockets) must be proven by tests, but many dev/CI kernels are built without CONFIG_TLS
# (setsockopt(TCP_ULP, "tls") fails with ENOENT) and without module support, and kTLS is
# kernel-wide: no namespace or container trick can add it.  So this script boots a Debian kernel
# that has CONFIG_TLS=m as an ordinary process (no root, no KVM), with the host's whole filesystem
# visible read-write inside at the same paths, loopback up and tls.ko loaded, runs COMMAND there
# (same cwd, same exported environment), streams its output and exits with COMMAND's status.
# Adapted from the company's shared ktls-vm runner so that ztproxy needs nothing outside the repo.
#
# usage:
#   tests/ktls/run-in-ktls-kernel.sh [--] COMMAND [ARG...]
#   tests/ktls/run-in-ktls-kernel.sh --prepare     # download/extract only (CI cache warm-up)
#
# Backends (KTLS_VM_BACKEND):
#   uml  (default) Debian's user-mode-linux package (Linux 6.1 ARCH=um, CONFIG_TLS=m).  Boots in
#        ~2 s and user code runs at native speed, but every syscall costs ~20-60 us (ptrace),
#        1 CPU, no BPF JIT, no BTF, no BPF_SK_SKB_STREAM_PARSER.
#   qemu qemu-system-x86_64 with TCG (software CPU) booting Debian's current linux-image-amd64,
#        host / shared over virtio-9p.  Boot ~5-10 s, CPU ~2.5x slower, AES ~100x slower, but it
#        is the real distro kernel: SMP, BPF JIT + BTF + stream parser, current stable fixes.
#
# Kernels (KTLS_VM_KERNEL, uml backend):
#   6.1    (default) bookworm's user-mode-linux, the kernel of the supported distribution.  It
#          cannot install a second TLS_RX/TLS_TX key: a TLS 1.3 KeyUpdate ends the connection.
#   rekey  (alias sid) Debian sid's user-mode-linux, whatever it is today (7.2 in 2026-12), which
#          must be Linux >= 6.14: kTLS takes the next key after a KeyUpdate.  It needs glibc >=
#          2.38, so trixie's libc6 comes along and linux.uml's ELF interpreter is pointed at it with
#          patchelf.  Fetched with a private apt configuration (sources, lists and archives in the
#          cache; the system's apt sources are never touched) from the mirror the system uses.
#
# Environment:
#   KTLS_VM_BACKEND     uml | qemu                                   (default uml)
#   KTLS_VM_KERNEL      6.1 | rekey (= sid), uml only                (default 6.1)
#   KTLS_VM_SID_MIRROR  Debian mirror for sid/trixie (default: the system's own Debian mirror)
#   KTLS_VM_CACHE       download/extract cache (default ${XDG_CACHE_HOME:-$HOME/.cache}/ztproxy-ktls-vm)
#   KTLS_VM_MEM         guest RAM                                    (default 1G)
#   KTLS_VM_CPUS        qemu only: vCPUs                             (default host nproc, max 4)
#   KTLS_VM_TIMEOUT     seconds before the guest is killed, 0 = never (default 900)
#   KTLS_VM_MODULES     modules loaded before COMMAND                (default "tls ipv6")
#   KTLS_VM_VERBOSE     1 = also show the guest boot console
#   KTLS_VM_KERNEL_PKG  qemu only: kernel package, e.g. linux-image-6.1.0-56-amd64
#                       (default: whatever linux-image-amd64 depends on at prepare time)
#   KTLS_VM_QEMU_ACCEL  qemu only: -accel value (default tcg; "kvm" only where stock KVM works)
#
# Contract:
#   * Exit status = COMMAND's.  125 = the VM itself failed (could not prepare, boot, load the
#     modules, or was killed by KTLS_VM_TIMEOUT); the console log tail is printed to stderr.
#   * COMMAND's stdout and stderr both arrive on our stdout through the guest console (a tty):
#     text only.  stdin is /dev/null.  Write binary artefacts to files (the filesystem is shared).
#   * Inside, KTLS_VM_GUEST=uml|qemu is exported (tests use it to turn "skip" into "fail"), so is
#     KTLS_VM_KERNEL=6.1|rekey, and modprobe/lsmod/insmod/rmmod for the guest kernel come first in
#     PATH.
#   * /run, /dev/shm, /sys/fs/bpf and cgroup2 are guest-private; files written elsewhere land on
#     the host, owned by the user who ran this script.
# SC2317: the prep_* functions run indirectly through prepare(); SC2012: module dirs are plain names;
# SC2016: the single-quoted $PATH is meant for the guest.
# shellcheck disable=SC2317,SC2012,SC2016
set -euo pipefail

die() { echo "run-in-ktls-kernel: $*" >&2; exit 125; }
log() { echo "run-in-ktls-kernel: $*" >&2; }

BACKEND=${KTLS_VM_BACKEND:-uml}
KERNEL=${KTLS_VM_KERNEL:-6.1}
case "$KERNEL" in
    6.1) ;;
    rekey|sid) KERNEL=rekey
        [ "$BACKEND" = uml ] || die "KTLS_VM_KERNEL=rekey is a user-mode-linux kernel (KTLS_VM_BACKEND=uml)" ;;
    *) die "unknown KTLS_VM_KERNEL=$KERNEL (6.1|rekey)" ;;
esac
CACHE=${KTLS_VM_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/ztproxy-ktls-vm}
MEM=${KTLS_VM_MEM:-1G}
TIMEOUT=${KTLS_VM_TIMEOUT:-900}
MODULES=${KTLS_VM_MODULES:-tls ipv6}
VERBOSE=${KTLS_VM_VERBOSE:-0}
ARCH_TRIPLET=x86_64-linux-gnu
# Both kernels are Debian amd64 builds (UML runs x86_64 host code natively).
[ "$(uname -m)" = x86_64 ] || die "only x86_64 hosts are supported"

# ------------------------------------------------------------------ cache ---
# apt_fetch DIR PKG...  -- "apt-get download" into DIR/debs, extract into DIR/root.
# Nothing is installed, so no root is needed as long as the apt lists exist; as root we run
# "apt-get update" once if the download fails (fresh container without lists).
apt_fetch() {
    local dir=$1; shift
    rm -rf "$dir/debs" "$dir/root"
    mkdir -p "$dir/debs" "$dir/root"
    if ! (cd "$dir/debs" && apt-get download "$@" >"$dir/download.log" 2>&1); then
        if [ "$(id -u)" = 0 ]; then
            apt-get update >>"$dir/download.log" 2>&1 || true
            (cd "$dir/debs" && apt-get download "$@" >>"$dir/download.log" 2>&1) ||
                { cat "$dir/download.log" >&2; die "apt-get download $* failed"; }
        else
            cat "$dir/download.log" >&2
            die "apt-get download $* failed (no apt lists? run 'sudo apt-get update')"
        fi
    fi
    local d
    for d in "$dir"/debs/*.deb; do dpkg-deb -x "$d" "$dir/root"; done
    rm -rf "$dir/debs"                       # keep only the extracted tree
}

# prepare NAME FUNCTION: run FUNCTION once, under a lock, then mark $CACHE/NAME complete.
# Why the lock: ctest -j and parallel CI jobs start several runners against one empty cache.
prepare() {
    local name=$1 fn=$2
    [ -f "$CACHE/$name/.complete" ] && return 0
    mkdir -p "$CACHE"
    (
        flock 9
        [ -f "$CACHE/$name/.complete" ] && exit 0
        log "preparing $CACHE/$name (one-time)"
        rm -rf "${CACHE:?}/${name:?}"; mkdir -p "$CACHE/$name"
        "$fn" "$CACHE/$name"
        touch "$CACHE/$name/.complete"
    ) 9>"$CACHE/.lock-$name" || die "preparing $CACHE/$name failed"
}

# busybox (static) + kmod: the guest's shell/mount/ip/insmod/modprobe before the host's own
# userland is usable, and module tools that work even when the host has no kmod installed.
prep_tools() { apt_fetch "$1" busybox-static kmod; }

prep_uml() { apt_fetch "$1" user-mode-linux; }

# The first Linux with kTLS rekeying (TLS_RX/TLS_TX set again after a KeyUpdate): 6.14.
REKEY_MIN=6.14

# The Debian archive the system's apt already uses (sid and trixie are served from the same one),
# so a machine that can only reach its configured mirror works too.
sid_mirror() {
    if [ -n "${KTLS_VM_SID_MIRROR:-}" ]; then echo "$KTLS_VM_SID_MIRROR"; return; fi
    local m
    m=$(apt-get indextargets --format '$(REPO_URI)' 'Created-By: Packages' 2>/dev/null |
        grep -m1 -E '/debian/?$' || true)
    echo "${m:-http://deb.debian.org/debian/}"
}

# sid's user-mode-linux + trixie's libc6, through a private apt configuration in DIR/apt: its own
# sources.list, lists and archive cache, so the system's sources and lists stay as they are and
# no root is needed.  The lists are dropped afterwards (~100 MB); only the extracted trees stay.
prep_uml_rekey() {
    local dir=$1 a=$1/apt mirror keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    command -v patchelf >/dev/null || die "patchelf is needed for KTLS_VM_KERNEL=rekey (deploy/install-build-deps.sh)"
    mirror=$(sid_mirror)
    mkdir -p "$a/lists/partial" "$a/cache/archives/partial" "$dir/debs"
    printf 'deb [signed-by=%s] %s sid main\ndeb [signed-by=%s] %s trixie main\n' \
        "$keyring" "$mirror" "$keyring" "$mirror" >"$a/sources.list"
    local o=(-o "Dir::Etc::sourcelist=$a/sources.list" -o Dir::Etc::sourceparts=/dev/null
             -o "Dir::State::Lists=$a/lists" -o "Dir::Cache=$a/cache"
             -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=)
    # As root, apt downloads as the _apt user, which cannot write into a private cache under
    # /root; the files here are ours anyway.
    [ "$(id -u)" = 0 ] && o+=(-o APT::Sandbox::User=root)
    { apt-get "${o[@]}" update &&
      (cd "$dir/debs" && apt-get "${o[@]}" download user-mode-linux/sid libc6/trixie)
    } >"$dir/download.log" 2>&1 ||
        { cat "$dir/download.log" >&2; die "fetching sid's user-mode-linux and trixie's libc6 from $mirror failed"; }
    dpkg-deb -x "$dir"/debs/user-mode-linux_*.deb "$dir/root"
    dpkg-deb -x "$dir"/debs/libc6_*.deb "$dir/glibc"
    rm -rf "$dir/debs" "$a"
    # Why patchelf and not a wrapper or "ld.so --library-path": linux.uml re-executes
    # /proc/self/exe at start, which would lose a wrapper's loader and arguments.
    local ld=$dir/glibc/usr/lib64/ld-linux-x86-64.so.2
    [ -f "$ld" ] || ld=$dir/glibc/lib64/ld-linux-x86-64.so.2         # before the /usr merge
    patchelf --set-interpreter "$ld" \
             --set-rpath "$dir/glibc/usr/lib/$ARCH_TRIPLET" "$dir/root/usr/bin/linux.uml" ||
        die "patchelf on $dir/root/usr/bin/linux.uml failed"
}

# version_ge A B: whether kernel release A (e.g. 7.2.7) is at least B (e.g. 6.14).
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }

kernel_pkg() {
    if [ -n "${KTLS_VM_KERNEL_PKG:-}" ]; then echo "$KTLS_VM_KERNEL_PKG"; return; fi
    apt-cache depends linux-image-amd64 2>/dev/null |
        awk '/Depends: linux-image-[0-9]/ {print $2; exit}'
}

prep_qemu_kernel() {
    local dir=$1 pkg krel d
    pkg=$(kernel_pkg)
    [ -n "$pkg" ] || die "cannot resolve linux-image-amd64 (apt lists missing? set KTLS_VM_KERNEL_PKG)"
    apt_fetch "$dir" "$pkg"
    krel=$(ls "$dir/root/lib/modules" | head -n1)
    # Drop hardware drivers a headless VM never loads (~250 of 400 MB of cache).
    local k=$dir/root/lib/modules/$krel/kernel
    for d in sound drivers/gpu drivers/media drivers/infiniband drivers/iio drivers/comedi \
             drivers/staging drivers/usb drivers/hid drivers/input drivers/hwmon drivers/scsi \
             drivers/ata drivers/bluetooth drivers/mmc drivers/isdn drivers/mtd drivers/video \
             drivers/net/wireless drivers/net/ethernet drivers/net/can drivers/net/usb \
             drivers/net/wwan drivers/net/ieee802154 net/wireless net/mac80211 net/bluetooth; do
        rm -rf "${k:?}/$d"
    done
    # The package ships no modules.dep (its postinst runs depmod); build one in the cache, never
    # against the host's /lib/modules.
    ln -sfn "$CACHE/tools/root/bin/kmod" "$dir/depmod"
    "$dir/depmod" -b "$dir/root" "$krel"
    extract_vmlinux "$dir/root/boot/vmlinuz-$krel" "$dir/vmlinux"
    build_initramfs "$dir" "$krel"
}

# Under TCG, decompressing the bzImage costs ~3 s of every boot.  Booting the uncompressed ELF
# vmlinux through its PVH entry point (CONFIG_PVH=y) skips that.  Debian compresses with xz; the
# same idea as the kernel's scripts/extract-vmlinux.  On failure we boot the bzImage (slower).
extract_vmlinux() {
    local img=$1 out=$2 off
    off=$(LC_ALL=C grep -obUaP '\xFD7zXZ\x00' "$img" 2>/dev/null | head -n1 | cut -d: -f1) || true
    if [ -n "$off" ]; then
        tail -c +$((off + 1)) "$img" | xz -dc --single-stream >"$out" 2>/dev/null || true
        if [ "$(head -c 4 "$out" 2>/dev/null | od -An -c | tr -d ' ')" = '177ELF' ]; then return 0; fi
    fi
    rm -f "$out"
}

# initramfs = static busybox + the virtio-pci/9p modules (dependencies first) + an /init that
# mounts the host's / over 9p and switch_root's into it.  Why: Debian builds 9p and virtio as
# modules, so the kernel cannot mount the host filesystem by itself.
build_initramfs() {
    local dir=$1 krel=$2 m dep
    local mdir="$dir/root/lib/modules/$krel"
    local ird="$dir/initramfs"
    rm -rf "$ird"; mkdir -p "$ird"/{bin,dev,proc,sys,newroot,mod}
    cp "$CACHE/tools/root/bin/busybox" "$ird/bin/busybox"
    local order=() seen=" "
    add_mod() {   # $1 = path relative to $mdir; its dependencies go first
        case "$seen" in *" $1 "*) return;; esac
        local deps dep
        deps=$(awk -v m="$1:" '$1 == m { for (i = NF; i > 1; i--) print $i }' "$mdir/modules.dep")
        for dep in $deps; do add_mod "$dep"; done
        seen="$seen$1 "; order+=("$1")
    }
    for m in virtio_pci 9pnet_virtio 9p; do
        if grep -q "/$m.ko$" "$mdir/modules.builtin" 2>/dev/null; then continue; fi
        dep=$(grep -E "(^|/)$m\.ko(\.xz|\.zst)?:" "$mdir/modules.dep" | cut -d: -f1)
        [ -n "$dep" ] || die "module $m not found in $krel"
        add_mod "$dep"
    done
    local i=10
    for m in "${order[@]}"; do cp "$mdir/$m" "$ird/mod/$i-$(basename "$m")"; i=$((i + 1)); done
    # cache=loose: the guest may cache host files; nothing on the host changes the tree while a
    # test runs, and strict coherence (cache=mmap/none) makes every stat a round trip.
    cat >"$ird/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs devtmpfs /dev
for m in /mod/*.ko; do /bin/busybox insmod "$m" || echo "initramfs: insmod $m failed"; done
/bin/busybox mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose \
    hostroot /newroot || { echo "initramfs: 9p mount failed"; /bin/busybox poweroff -f; }
/bin/busybox mount --move /dev /newroot/dev
/bin/busybox umount /proc
exec /bin/busybox switch_root /newroot "$ktlsvm_init"
EOF
    chmod +x "$ird/init"
    (cd "$ird" && find . | "$CACHE/tools/root/bin/busybox" cpio -o -H newc 2>/dev/null | gzip -1) \
        >"$dir/initrd.img"
    rm -rf "$ird"
}

# qemu-system-x86: the installed one, or the package plus its missing dependencies extracted into
# the cache (run with LD_LIBRARY_PATH), so that no root is needed.
prep_qemu_bin() {
    local dir=$1 pkgs
    pkgs=$(apt-get install -s --no-install-recommends qemu-system-x86 2>/dev/null |
        awk '/^Inst / {print $2}')
    [ -n "$pkgs" ] || die "cannot resolve qemu-system-x86 dependencies"
    # shellcheck disable=SC2086
    apt_fetch "$dir" $pkgs
}

setup_backend() {
    prepare tools prep_tools
    KBOOT=
    BUSYBOX=$CACHE/tools/root/bin/busybox
    KMOD=$CACHE/tools/root/bin/kmod
    case "$BACKEND" in
    uml)
        local udir=uml
        if [ "$KERNEL" = rekey ]; then udir=uml-rekey; prepare uml-rekey prep_uml_rekey
        else prepare uml prep_uml; fi
        UML=$CACHE/$udir/root/usr/bin/linux.uml
        MODROOT_BASE=$CACHE/$udir/root/usr/lib/uml/modules
        [ -x "$UML" ] || die "no $UML"
        ;;
    qemu)
        prepare qemu-kernel prep_qemu_kernel
        local kdir=$CACHE/qemu-kernel/root krel
        krel=$(ls "$kdir/lib/modules" | head -n1)
        VMLINUZ=$kdir/boot/vmlinuz-$krel
        [ -f "$CACHE/qemu-kernel/vmlinux" ] && VMLINUZ=$CACHE/qemu-kernel/vmlinux
        KBOOT=$kdir/boot
        INITRD=$CACHE/qemu-kernel/initrd.img
        MODROOT_BASE=$kdir/lib/modules
        if command -v qemu-system-x86_64 >/dev/null; then
            QEMU=(qemu-system-x86_64)
        else
            prepare qemu-bin prep_qemu_bin
            local q=$CACHE/qemu-bin/root
            LD_LIBRARY_PATH="$q/usr/lib/$ARCH_TRIPLET:$q/lib/$ARCH_TRIPLET${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
            export LD_LIBRARY_PATH
            QEMU=("$q/usr/bin/qemu-system-x86_64" -L "$q/usr/share/qemu" -L "$q/usr/share/seabios"
                  -L "$q/usr/lib/ipxe/qemu")
        fi
        ;;
    *) die "unknown KTLS_VM_BACKEND=$BACKEND (uml|qemu)" ;;
    esac
    KREL=$(ls "$MODROOT_BASE" | head -n1)
    [ -f "$MODROOT_BASE/$KREL/modules.dep" ] || die "no modules.dep under $MODROOT_BASE/$KREL"
    # sid moves on, which is the point; but a kernel that cannot rekey would turn every rekey
    # assertion into a "cannot rekey" one and prove nothing.
    if [ "$KERNEL" = rekey ] && ! version_ge "${KREL%%[!0-9.]*}" "$REKEY_MIN"; then
        die "KTLS_VM_KERNEL=rekey: sid's user-mode-linux is $KREL, below $REKEY_MIN"
    fi
}

# -------------------------------------------------------------- arguments ---
case "${1:-}" in
    --prepare) setup_backend; log "ready: $BACKEND kernel $KREL ($KERNEL) in $CACHE"; exit 0 ;;
    --) shift ;;
esac
[ $# -gt 0 ] || die "usage: $0 [--] COMMAND [ARG...]   (or --prepare)"

# Snapshot the caller's environment *before* setup_backend touches LD_LIBRARY_PATH.
ENV_SNAPSHOT=$(export -p | grep -Ev '^declare -x (OLDPWD|SHLVL|_)=' || true)
setup_backend

# ---------------------------------------------------------------- run dir ---
# It must be somewhere the guest sees as the same path: not under /dev, /run, /proc, /sys, which
# the guest mounts afresh.
RUNBASE=${TMPDIR:-/tmp}
case "$RUNBASE" in /dev/*|/run/*|/proc/*|/sys/*) RUNBASE=/tmp ;; esac
RUN=$(mktemp -d "$RUNBASE/ktls-vm.XXXXXX")
VMPID=
cleanup() {
    # timeout(1) forwards TERM to the VM; KILL after a grace second so no guest outlives us.
    if [ -n "$VMPID" ]; then kill -TERM "$VMPID" 2>/dev/null && sleep 1; kill -KILL "$VMPID" 2>/dev/null; fi
    rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# kmod's "modprobe -d DIR" wants DIR/lib/modules/<release>.
mkdir -p "$RUN/modroot/lib/modules" "$RUN/bin" "$RUN/sbin"
ln -s "$MODROOT_BASE/$KREL" "$RUN/modroot/lib/modules/$KREL"
ln -s "$KMOD" "$RUN/bin/modprobe"                 # kmod dispatches on argv[0]
cat >"$RUN/modprobe" <<EOF
#!/bin/sh
# the guest kernel's request_module() helper (kernel.modprobe) and COMMAND's modprobe
exec "$RUN/bin/modprobe" -d "$RUN/modroot" "\$@"
EOF
chmod +x "$RUN/modprobe"
# Module tools for COMMAND, first in its PATH: the host may have no kmod, and a host
# /sbin/modprobe would look in the host's /lib/modules, which belong to another kernel.
ln -s "$RUN/modprobe" "$RUN/sbin/modprobe"
for t in lsmod insmod rmmod; do ln -s "$KMOD" "$RUN/sbin/$t"; done

{
    echo '# generated by run-in-ktls-kernel.sh: environment, cwd, command'
    printf '%s\n' "$ENV_SNAPSHOT"
    printf 'export PATH=%q${PATH:+:$PATH}\n' "$RUN/sbin"
    printf 'export KTLS_VM_GUEST=%q\n' "$BACKEND"     # tests: "no kTLS here" is a failure
    printf 'export KTLS_VM_KERNEL=%q\n' "$KERNEL"
    printf 'cd %q || exit 126\n' "$PWD"
    printf 'exec'
    printf ' %q' "$@"
    printf '\n'
} >"$RUN/cmd.sh"

# PID 1 of the guest (the host's / is its root filesystem).  The exit status travels back in a
# file ($RUN/rc) rather than through the console, which is only for humans; the BEGIN/EXIT
# markers let the filter below print only COMMAND's output.
cat >"$RUN/init" <<EOF
#!$BUSYBOX sh
B=$BUSYBOX
R=$RUN
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
\$B mount -t proc proc /proc
\$B mount -t sysfs sysfs /sys
\$B mount -t tmpfs tmpfs /run               2>/dev/null  # guest-private
\$B mkdir -p /dev/pts /dev/shm                # /dev is the guest's devtmpfs
\$B mount -t devpts devpts /dev/pts          2>/dev/null
\$B ln -sf /proc/self/fd /dev/fd              # bash process substitution needs /dev/fd
\$B mount -t tmpfs tmpfs /dev/shm            2>/dev/null
\$B mount -t bpf bpf /sys/fs/bpf             2>/dev/null
\$B mount -t cgroup2 cgroup2 /sys/fs/cgroup  2>/dev/null
# qemu: make the guest kernel's config visible where tools look (bpftool feature probe)
[ -n "$KBOOT" ] && [ -d /boot ] && \$B mount --bind "$KBOOT" /boot 2>/dev/null
\$B stty -F /dev/console -onlcr             2>/dev/null  # no \\n -> \\r\\n
echo 1 >/proc/sys/kernel/printk                            # keep the kernel quiet
echo \$R/modprobe >/proc/sys/kernel/modprobe               # request_module() helper
\$B ip link set lo up
echo "@@KTLS-VM-BEGIN@@"
rc=0
# /sys/module/NAME: built in (sid's kernel has IPV6=y, a bool that modules.builtin does not list)
for m in $MODULES; do
    [ -d /sys/module/\$m ] || \$R/modprobe \$m || { echo "ktls-vm: modprobe \$m failed"; rc=125; }
done
[ "$VERBOSE" = 1 ] && echo "ktls-vm: ready, uptime \$(\$B cut -d' ' -f1 /proc/uptime) s"
if [ \$rc = 0 ]; then
    /bin/bash \$R/cmd.sh </dev/null
    rc=\$?
fi
\$B sync
echo \$rc >\$R/rc
\$B sync
echo "@@KTLS-VM-EXIT=\$rc@@"
\$B poweroff -f
EOF
chmod +x "$RUN/init"

# ------------------------------------------------------------------- boot ---
case "$BACKEND" in
uml)
    # UML keeps guest RAM in a file under $TMPDIR (default /dev/shm); make sure that filesystem
    # can hold it (Docker's default /dev/shm is only 64 MB).
    memkb=$(numfmt --from=iec "${MEM}" 2>/dev/null || echo $((1 << 30)))
    memkb=$((memkb / 1024))
    umltmp=/dev/shm
    if [ -n "${TMPDIR:-}" ]; then umltmp=$TMPDIR
    elif [ "$(df -Pk /dev/shm 2>/dev/null | awk 'NR==2 {print $4}')" -lt "$memkb" ] 2>/dev/null \
         || [ ! -w /dev/shm ]; then umltmp=/tmp
    fi
    # con0 = guest console -> our stdout; other consoles and serial lines off;
    # uml_dir keeps the mconsole socket out of $HOME.
    # shellcheck disable=SC2054  # the commas belong to UML options
    VMCMD=(env TMPDIR="$umltmp" "$UML" mem="$MEM" root=/dev/root rootfstype=hostfs rootflags=/ rw
           init="$RUN/init" con0=null,fd:1 con=null ssl=null uml_dir="$RUN" umid=vm quiet)
    ;;
qemu)
    cpus=${KTLS_VM_CPUS:-$(nproc)}; [ "$cpus" -gt 4 ] && cpus=4
    # passthrough needs root (it chowns); "none" works for any user.
    secmodel=none; [ "$(id -u)" = 0 ] && secmodel=passthrough
    # shellcheck disable=SC2054  # the commas belong to qemu options
    VMCMD=("${QEMU[@]}" -accel "${KTLS_VM_QEMU_ACCEL:-tcg}" -cpu max -smp "$cpus" -m "$MEM"
           -nodefaults -no-reboot -display none -monitor none -serial stdio
           -kernel "$VMLINUZ" -initrd "$INITRD"
           -fsdev "local,id=hostroot,path=/,security_model=$secmodel,multidevs=remap"
           -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot
           -append "console=ttyS0 quiet loglevel=1 panic=-1 cryptomgr.notests=1 ktlsvm_init=$RUN/init")
    ;;
esac

# The VM runs in the background (so that we can kill it if we are killed); its console goes
# through a FIFO into a filter that prints only COMMAND's part.
mkfifo "$RUN/console"
(
    cd "$RUN"
    if [ "$TIMEOUT" != 0 ]; then exec timeout -k 10 "$TIMEOUT" "${VMCMD[@]}"
    else exec "${VMCMD[@]}"; fi
) </dev/null >"$RUN/console" 2>&1 &
VMPID=$!
set +e
tee "$RUN/console.log" <"$RUN/console" | awk -v verbose="$VERBOSE" '
    { sub(/\r$/, "") }
    /@@KTLS-VM-EXIT=[0-9]+@@$/ {          # may follow output that had no final newline
        if (inside && verbose != 1) { sub(/@@KTLS-VM-EXIT=[0-9]+@@$/, ""); printf "%s", $0; fflush() }
        inside = 0; if (verbose != 1) next
    }
    inside || verbose == 1 { print; fflush() }
    /@@KTLS-VM-BEGIN@@$/  { inside = 1 }
'
wait "$VMPID"
vmrc=$?
VMPID=
set -e

if [ -s "$RUN/rc" ]; then exit "$(cat "$RUN/rc")"; fi
[ "$vmrc" = 124 ] && log "guest killed after KTLS_VM_TIMEOUT=${TIMEOUT}s"
log "guest did not report an exit status (vm exit $vmrc); console tail:"
sed 's/\r$//' "$RUN/console.log" | tail -n 40 >&2
exit 125
