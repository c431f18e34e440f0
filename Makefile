# ztproxy: the two set-up commands are `make demo` and `make test`; both install what is missing.
BUILD       ?= build
BUILD_ASAN  ?= build-asan
BUILD_FUZZ  ?= build-fuzz
JOBS        ?= $(shell nproc)
CMAKE_FLAGS ?=
WERROR      ?= ON

.PHONY: all deps build build-asan build-fuzz test test-ktls ktls-vm-prepare demo bench fuzz clean

all: build

deps:
	@deploy/install-build-deps.sh

build: deps
	cmake -S . -B $(BUILD) -DZTP_WERROR=$(WERROR) $(CMAKE_FLAGS) >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

build-asan: deps
	cmake -S . -B $(BUILD_ASAN) -DCMAKE_BUILD_TYPE=Debug -DZTP_SANITIZE=ON -DZTP_WERROR=$(WERROR) >/dev/null
	cmake --build $(BUILD_ASAN) -j $(JOBS) --target unit_tests loopback_tests bpf_unit_tests

build-fuzz: deps
	CC=clang CXX=clang++ cmake -S . -B $(BUILD_FUZZ) -DZTP_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo -DZTP_WERROR=$(WERROR) >/dev/null
	cmake --build $(BUILD_FUZZ) -j $(JOBS)

# Everything: the host suite (unit, loopback, e2e, bpf; the ktls label runs inside the kTLS kernel
# through the ktls_vm_suite test), the sanitizer build of unit+loopback, and the fuzz smoke runs.
test: build build-asan build-fuzz ktls-vm-prepare
	ctest --test-dir $(BUILD_ASAN) -L 'unit|loopback' --output-on-failure -j $(JOBS)
	ctest --test-dir $(BUILD_FUZZ) -L fuzz --output-on-failure -j $(JOBS)
	ctest --test-dir $(BUILD) -LE '^ktls$$' --output-on-failure -j $(JOBS)

# Every fuzz target for FUZZ_SECONDS each (one core, niced), from the corpora in tests/fuzz/corpus;
# what it finds becomes a regression input that `make test` replays (tests/fuzz/run_fuzz.sh).
FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?= record redact policy admin_request
fuzz: build-fuzz
	tests/fuzz/run_fuzz.sh $(BUILD_FUZZ) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# Only the kTLS label, inside both kTLS kernels (6.1, and sid's >= 6.14 that rekeys), side by side.
test-ktls: build ktls-vm-prepare
	ctest --test-dir $(BUILD) -L '^ktls-vm$$' --output-on-failure -j 2

# Download and unpack both kTLS kernels (tests/ktls/run-in-ktls-kernel.sh) before any test runs,
# so that a mirror problem is a set-up error here and not a failed test.
ktls-vm-prepare: deps
	tests/ktls/run-in-ktls-kernel.sh --prepare
	KTLS_VM_KERNEL=rekey tests/ktls/run-in-ktls-kernel.sh --prepare

# Benchmarks: ztproxy side by side with nginx and HAProxy (installs them). BENCH_ARGS=--quick for a
# smoke run; results in tests/bench/results/latest.{md,png,json}.
BENCH_ARGS ?=
bench: deps
	cmake -S . -B $(BUILD) -DZTP_WERROR=$(WERROR) $(CMAKE_FLAGS) >/dev/null
	cmake --build $(BUILD) -j $(JOBS) --target ztproxy bench_backend bench_client
	python3 tests/bench/run_bench.py --build-dir $(BUILD) $(BENCH_ARGS)

demo: build
	@$(BUILD)/ztproxy demo --workdir .demo

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) $(BUILD_FUZZ) .demo
