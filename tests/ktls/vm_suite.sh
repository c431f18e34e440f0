#!/bin/bash
# vm_suite.sh -- the ktls_vm_suite and ktls_vm_suite_rekey CTest tests: boot a kTLS kernel once
# and run every test labelled exactly "ktls" in it, then show what the kernel's TLS counters saw.
#
# usage: [KTLS_VM_KERNEL=6.1|rekey] vm_suite.sh BUILD_DIR [CTEST]
#
# KTLS_VM_KERNEL picks the kernel (run-in-ktls-kernel.sh): 6.1 (default), where a TLS 1.3
# KeyUpdate on kTLS ends the connection, or rekey, Debian sid's kernel (>= 6.14), where it is
# followed. The tests tell which by probing the kernel, not by this variable.
#
# Fails (never skips) when the VM cannot start: kTLS claims must be proven in CI, and a green run
# that proved nothing is worse than a red one. Why a separate ctest directory: the inner ctest
# runs while the outer one (the one running this test) is still writing BUILD_DIR/Testing; a
# CTestTestfile that only points at BUILD_DIR (subdirs) gives the inner run the same tests with
# its own Testing/ logs.
set -u

if [ "${1:-}" = --guest ]; then
    # Inside the VM: run the suite, then print the counters and their change (the tests assert on
    # them; this is for humans reading the CI log).
    ctest=$2 dir=$3
    krel=$(uname -r)
    echo "== ktls_vm_suite: kernel $krel (KTLS_VM_KERNEL=$KTLS_VM_KERNEL) =="
    # The rekey suite exists to prove KeyUpdate on kTLS; on a kernel below 6.14 every test would
    # take its "cannot rekey" branch and pass while proving nothing. sid moves on, so no pin.
    if [ "$KTLS_VM_KERNEL" = rekey ] &&
       [ "$(printf '6.14\n%s\n' "${krel%%[!0-9.]*}" | sort -V | head -n1)" != 6.14 ]; then
        echo "ktls_vm_suite: FAIL: KTLS_VM_KERNEL=rekey booted Linux $krel, below 6.14" >&2
        exit 1
    fi
    before=$(cat /proc/net/tls_stat 2>/dev/null)
    "$ctest" --test-dir "$dir" -L '^ktls$' --output-on-failure --no-tests=error
    rc=$?
    echo "== /proc/net/tls_stat in the kTLS VM: value (change during the suite) =="
    if [ -r /proc/net/tls_stat ]; then
        printf '%s\n' "$before" |
            awk 'NR == FNR { b[$1] = $2; next } { printf "  %-22s %6d  (%+d)\n", $1, $2, $2 - b[$1] }' \
                - /proc/net/tls_stat
    else
        echo "  (no /proc/net/tls_stat: the tls module is not loaded)"
    fi
    exit $rc
fi

[ $# -ge 1 ] || { echo "usage: $0 BUILD_DIR [CTEST]" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "$1" && pwd)
ctest=${2:-ctest}
kernel=${KTLS_VM_KERNEL:-6.1}
case $kernel in sid) kernel=rekey ;; esac
export KTLS_VM_KERNEL=$kernel

if [ -n "${KTLS_VM_GUEST:-}" ]; then
    echo "ktls_vm_suite: FAIL: already inside the kTLS VM; run 'ctest -L ^ktls\$' instead" >&2
    exit 1
fi

# One directory per kernel: the two suites may run at the same time (ctest -j).
dir=$build/tests/ktls/vm-ctest-$kernel
rm -rf "$dir"
mkdir -p "$dir"
printf 'subdirs("%s")\n' "$build" >"$dir/CTestTestfile.cmake"
# Same default per-test timeout as the build tree's own ctest runs, but Testing/ logs here.
[ -f "$build/DartConfiguration.tcl" ] &&
    sed "s|^BuildDirectory: .*|BuildDirectory: $dir|" "$build/DartConfiguration.tcl" >"$dir/DartConfiguration.tcl"

# The label includes the hostile peer's kernel-path tests (tests/hostile), several minutes inside
# UML on top of the rest: the guest gets 30 minutes unless the caller says otherwise.
export KTLS_VM_TIMEOUT=${KTLS_VM_TIMEOUT:-1800}
"$here/run-in-ktls-kernel.sh" /bin/bash "$here/vm_suite.sh" --guest "$ctest" "$dir"
rc=$?
case $rc in
    0) echo "ktls_vm_suite: all 'ktls' tests passed inside the kTLS kernel ($kernel)" ;;
    125) echo "ktls_vm_suite: FAIL: the kTLS VM ($kernel) could not be prepared or booted, or timed out" \
              "(exit 125; console tail above). Nothing about kTLS was proven. Warm the cache with" \
              "'KTLS_VM_KERNEL=$kernel tests/ktls/run-in-ktls-kernel.sh --prepare' (make ktls-vm-prepare)" \
              "to see download problems." >&2
         rc=1 ;;
    *) echo "ktls_vm_suite: FAIL: the 'ktls' tests failed inside the kTLS kernel ($kernel; ctest exit $rc)" >&2 ;;
esac
exit $rc
