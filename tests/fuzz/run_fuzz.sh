#!/usr/bin/env bash
# `make fuzz`: runs each libFuzzer target for a real budget, one after another on one core.
#   tests/fuzz/run_fuzz.sh BUILD_DIR SECONDS TARGET...     (TARGET: record, redact, policy, admin_request)
# Per target: fuzzes from the checked-in corpus (tests/fuzz/corpus/<target>/) and the regression
# inputs (tests/fuzz/regressions/<target>/), with new inputs in a scratch directory; then merges the
# scratch into the corpus with -merge=1 (only inputs that add coverage are kept, so it stays small).
# A crash, leak, timeout or failed invariant (the targets abort) is copied into the regression
# directory, which `make test` replays (ctest -L fuzz). One input running longer than FUZZ_TIMEOUT
# seconds (default 60: the run is niced on a shared machine) counts as a finding. Prints the
# executions per target; exits 1
# if any target found something.
set -uo pipefail

build=$1
seconds=$2
shift 2
src=$(cd "$(dirname "$0")" && pwd)
found=0
summary=()
for target in "$@"; do
    bin="$build/tests/fuzz/${target}_fuzz"
    corpus="$src/corpus/$target"
    regressions="$src/regressions/$target"
    if [ ! -x "$bin" ]; then
        echo "run_fuzz: $bin is missing (make build-fuzz)" >&2
        exit 2
    fi
    mkdir -p "$corpus" "$regressions"
    work=$(mktemp -d)
    mkdir -p "$work/new" "$work/artifacts"
    echo "== $target: ${seconds}s"
    started=$SECONDS
    nice -n "${FUZZ_NICE:-10}" "$bin" -max_total_time="$seconds" -timeout="${FUZZ_TIMEOUT:-60}" -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$work/artifacts/" "$work/new" "$corpus" "$regressions" \
        >"$work/log" 2>&1
    rc=$?
    elapsed=$((SECONDS - started))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log" | tail -1)
    tail -5 "$work/log"
    for artifact in "$work"/artifacts/*; do
        [ -e "$artifact" ] || continue
        cp "$artifact" "$regressions/"
        echo "run_fuzz: $target: new regression input $regressions/$(basename "$artifact")"
        found=1
    done
    if [ $rc -ne 0 ] && [ -z "$(ls -A "$work/artifacts")" ]; then
        echo "run_fuzz: $target exited $rc without an artifact; log: $work/log" >&2
        found=1
        summary+=("$target: exit $rc, ${execs:-?} executions in ${elapsed}s")
        continue
    fi
    "$bin" -merge=1 "$corpus" "$work/new" >"$work/merge.log" 2>&1 ||
        echo "run_fuzz: $target: merge failed, see $work/merge.log" >&2
    # libFuzzer stops at its first finding: then the run was shorter than the budget.
    summary+=("$target: ${execs:-?} executions in ${elapsed}s, corpus $(ls "$corpus" | wc -l) inputs")
    rm -rf "$work"
done
echo "== executions"
printf '  %s\n' "${summary[@]}"
exit $found
