// gated_pool_bench: what the page gate costs per 64 KiB slot (numbers go into gated_pool.hpp).
//
//   gated_pool_bench [iterations]
//
// Three process states, because a PROT_NONE mprotect must flush the TLB of every CPU that may
// cache this mm's translations:
//   single   the only thread of the process;
//   blocked  a second thread exists but sleeps in a futex (its CPU is not running our mm);
//   spinning a second thread runs on another CPU (pinned): every downgrade sends it an IPI.
// Measured per mode (median of 5 runs):
//   mprotect READ   opening one populated 64 KiB range of the release view (what release() does);
//   mprotect NONE   closing it again after every page was read (what recycling does);
//   bzero 64 KiB    explicit_bzero of one slot (the scrub on recycle);
//   pool cycle      GatedPool end to end: acquire + fill 64 KiB + release(0, 64 KiB) + read one byte
//                   per page through the VerifiedBytes + drop (re-gate + scrub). 4-slot pool: each
//                   release splits the release view's VMA and each re-gate merges it back.
//   1-slot pool     the same with a 1-slot pool: the slot is the whole VMA, no split/merge.
// Not a test and not timed against anything: it prints numbers.
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#include "proxy/io/gated_pool.hpp"

namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kSlot = size_t{64} * 1024;

double ns_since(Clock::time_point t0) {
    return std::chrono::duration<double, std::nano>(Clock::now() - t0).count();
}

void pin_to(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

volatile uint8_t g_sink;

struct Mprotect {
    double read_ns;
    double none_ns;
};

// The raw kernel primitive on the same kind of mapping the pool uses: a MAP_SHARED memfd view.
Mprotect bench_mprotect(int iterations) {
    auto pool = std::move(ztp::io::GatedPool::create(kSlot, 1)).value();
    // Build the page tables once (release + read + recycle), as in steady state.
    {
        auto buf = std::move(pool->acquire()).value();
        auto vb = std::move(buf.release(0, kSlot)).value();
        for (size_t i = 0; i < kSlot; i += 4096) g_sink = vb.data()[i];
    }
    // The pool exposes no raw mprotect, so time the same two calls it makes, on our own view.
    int fd = memfd_create("bench", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, kSlot) != 0) std::abort();
    auto* view = static_cast<uint8_t*>(mmap(nullptr, kSlot, PROT_NONE, MAP_SHARED, fd, 0));
    auto* ingest = static_cast<uint8_t*>(mmap(nullptr, kSlot, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
    if (view == MAP_FAILED || ingest == MAP_FAILED) std::abort();
    memset(ingest, 1, kSlot);
    double read_total = 0, none_total = 0;
    for (int i = 0; i < iterations; ++i) {
        auto t0 = Clock::now();
        if (mprotect(view, kSlot, PROT_READ) != 0) std::abort();
        read_total += ns_since(t0);
        for (size_t off = 0; off < kSlot; off += 4096) g_sink = view[off];
        auto t1 = Clock::now();
        if (mprotect(view, kSlot, PROT_NONE) != 0) std::abort();
        none_total += ns_since(t1);
    }
    munmap(view, kSlot);
    munmap(ingest, kSlot);
    close(fd);
    return {read_total / iterations, none_total / iterations};
}

double bench_bzero(int iterations) {
    std::vector<uint8_t> buf(kSlot, 1);
    auto t0 = Clock::now();
    for (int i = 0; i < iterations; ++i) {
        explicit_bzero(buf.data(), buf.size());
        buf[static_cast<size_t>(i) % kSlot] = 1;
    }
    return ns_since(t0) / iterations;
}

long minor_faults() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return u.ru_minflt;
}

double g_faults_per_cycle = 0;

double bench_pool_cycle(int iterations, size_t slots) {
    auto pool = std::move(ztp::io::GatedPool::create(kSlot, slots)).value();
    long f0 = minor_faults();
    auto t0 = Clock::now();
    for (int i = 0; i < iterations; ++i) {
        auto buf = std::move(pool->acquire()).value();
        auto in = buf.ingest();
        memset(in.data(), i & 0xff, in.size());  // stands in for recv + in-place decrypt
        auto vb = std::move(buf.release(0, kSlot)).value();
        for (size_t off = 0; off < kSlot; off += 4096) g_sink = vb.data()[off];
    }  // drop: re-gate + scrub
    double ns = ns_since(t0) / iterations;
    g_faults_per_cycle = static_cast<double>(minor_faults() - f0) / iterations;
    if (pool->mprotect_calls() != 2ull * static_cast<unsigned>(iterations)) std::abort();
    return ns;
}

double cycle_fill_only(int iterations) {
    // The memset in bench_pool_cycle is the caller's work, not the gate's: measured to subtract.
    std::vector<uint8_t> buf(kSlot);
    auto t0 = Clock::now();
    for (int i = 0; i < iterations; ++i) {
        memset(buf.data(), i & 0xff, buf.size());
        g_sink = buf[static_cast<size_t>(i) % kSlot];
    }
    return ns_since(t0) / iterations;
}

struct Row {
    double mp_read, mp_none, bzero, cycle, cycle1, fill;
};

Row run(int iterations) {
    std::vector<Row> rows;
    for (int r = 0; r < 5; ++r) {
        Mprotect m = bench_mprotect(iterations);
        rows.push_back({m.read_ns, m.none_ns, bench_bzero(iterations), bench_pool_cycle(iterations, 4),
                        bench_pool_cycle(iterations, 1), cycle_fill_only(iterations)});
    }
    auto median = [&](double Row::*f) {
        std::vector<double> v;
        for (auto& row : rows) v.push_back(row.*f);
        std::sort(v.begin(), v.end());
        return v[v.size() / 2];
    };
    return {median(&Row::mp_read), median(&Row::mp_none), median(&Row::bzero), median(&Row::cycle),
            median(&Row::cycle1), median(&Row::fill)};
}

void print(const char* mode, const Row& r) {
    std::printf("%-9s  mprotect READ %6.0f ns  NONE %6.0f ns  bzero 64KiB %5.0f ns  pool cycle %6.0f ns  "
                "1-slot pool %6.0f ns  (caller memset %4.0f ns; %.1f minor faults)\n",
                mode, r.mp_read, r.mp_none, r.bzero, r.cycle, r.cycle1, r.fill, g_faults_per_cycle);
}

}  // namespace

int main(int argc, char** argv) {
    int iterations = argc > 1 ? std::atoi(argv[1]) : 20000;
    if (iterations <= 0) iterations = 20000;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    std::printf("gated_pool_bench: %d iterations x 5 runs, %zu KiB slot, %ld CPUs online\n", iterations,
                kSlot / 1024, cpus);
    pin_to(0);

    print("single", run(iterations));

    {
        std::mutex mu;
        std::condition_variable cv;
        bool stop = false;
        std::thread sleeper([&] {
            std::unique_lock lock(mu);
            cv.wait(lock, [&] { return stop; });
        });
        print("blocked", run(iterations));
        {
            std::lock_guard lock(mu);
            stop = true;
        }
        cv.notify_one();
        sleeper.join();
    }

    if (cpus < 2) {
        std::printf("spinning   skipped: needs 2 CPUs\n");
        return 0;
    }
    std::atomic<bool> stop{false};
    std::thread spinner([&] {
        pin_to(1);
        // Touch memory of this mm so the CPU really runs with our page tables loaded.
        uint64_t x = 0;
        while (!stop.load(std::memory_order_relaxed)) x += g_sink;
        g_sink = static_cast<uint8_t>(x);
    });
    print("spinning", run(iterations));
    stop = true;
    spinner.join();
    return 0;
}
