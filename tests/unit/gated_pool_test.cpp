#include "proxy/io/gated_pool.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <type_traits>
#include <vector>

namespace ztp::io {
namespace {

constexpr size_t kSlot = size_t{64} * 1024;

size_t page() { return static_cast<size_t>(::sysconf(_SC_PAGESIZE)); }

std::unique_ptr<GatedPool> make_pool(size_t slots = 2, size_t slot_size = kSlot) {
    auto p = GatedPool::create(slot_size, slots);
    EXPECT_TRUE(p) << (p ? "" : p.error().message());
    return p ? std::move(p).value() : nullptr;
}

// Reads through a volatile pointer so the compiler cannot drop or hoist the access.
int touch_read(const uint8_t* p) { return *static_cast<const volatile uint8_t*>(p); }

// The child must die from the page gate itself. Without sanitizers that is SIGSEGV; ASan installs
// its own SEGV handler, which reports and exits with status 1.
#if defined(__SANITIZE_ADDRESS__)
#define EXPECT_SEGV(stmt) EXPECT_DEATH(stmt, "SEGV")
#else
#define EXPECT_SEGV(stmt) EXPECT_EXIT(stmt, ::testing::KilledBySignal(SIGSEGV), "")
#endif

class GatedPoolDeathTest : public ::testing::Test {
protected:
    // "threadsafe": the child re-executes this binary and runs only this test up to the death
    // statement, so it builds its own pool (MADV_DONTFORK mappings are not inherited by fork), and
    // it works under ASan.
    void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

TEST(GatedPool, CreateRoundsSlotSizeToPagesAndRejectsEmpty) {
    auto pool = make_pool(3, 1000);
    ASSERT_TRUE(pool);
    EXPECT_EQ(pool->slot_size(), page());
    EXPECT_EQ(pool->slots(), 3u);
    EXPECT_EQ(pool->slots_in_use(), 0u);
    EXPECT_EQ(pool->mprotect_calls(), 0u);

    auto zero = GatedPool::create(0, 4);
    ASSERT_FALSE(zero);
    EXPECT_EQ(zero.error().code, EINVAL);
    auto none = GatedPool::create(kSlot, 0);
    ASSERT_FALSE(none);
    EXPECT_EQ(none.error().code, EINVAL);
    auto huge = GatedPool::create(SIZE_MAX / 2, 4);
    ASSERT_FALSE(huge);
    EXPECT_EQ(huge.error().code, EOVERFLOW);
}

TEST(GatedPool, ReleaseViewReadsTheIngestBytesWithoutACopy) {
    auto pool = make_pool();
    auto buf = pool->acquire();
    ASSERT_TRUE(buf);
    std::span<uint8_t> in = buf->ingest();
    ASSERT_EQ(in.size(), kSlot);
    for (size_t i = 0; i < 9000; ++i) in[i] = static_cast<uint8_t>(i * 7);

    auto vb = buf->release(100, 9000);
    ASSERT_TRUE(vb) << vb.error().message();
    ASSERT_EQ(vb->size(), 8900u);
    EXPECT_FALSE(vb->empty());
    // Different virtual addresses, same physical memory.
    EXPECT_NE(static_cast<const void*>(vb->data()), static_cast<const void*>(in.data() + 100));
    EXPECT_TRUE(pool->in_release_view(vb->data()));
    EXPECT_FALSE(pool->in_release_view(in.data()));
    EXPECT_TRUE(std::equal(vb->bytes().begin(), vb->bytes().end(), in.begin() + 100));
    // Same memory: a write through the (stale, pre-release) ingest span shows up in the release
    // view. This is exactly why the contract forbids using such spans after release().
    in[200] = 0xAB;
    EXPECT_EQ(vb->bytes()[100], 0xAB);
}

TEST_F(GatedPoolDeathTest, ReadingBeforeReleaseSegfaults) {
    auto pool = make_pool();
    auto buf = pool->acquire();
    ASSERT_TRUE(buf);
    buf->ingest()[0] = 42;  // "decrypted" but not verified: byte 0 is never released
    // The public API hands out release-view addresses only through release(), so open page 1 and
    // step back one page to reach byte 0's address in the release view.
    auto vb = buf->release(page(), page() + 1);
    ASSERT_TRUE(vb);
    const uint8_t* page0 = vb->data() - page();
    EXPECT_SEGV(touch_read(page0));
    EXPECT_EQ(touch_read(vb->data()), 0);  // page 1 is readable: the gate is per page
}

TEST_F(GatedPoolDeathTest, ReadingAfterReleaseSucceedsInTheChild) {
    // Positive control for the death tests: the same child code path exits normally when the page
    // is released, so the deaths above and below really come from the gate.
    auto pool = make_pool();
    auto buf = pool->acquire();
    ASSERT_TRUE(buf);
    buf->ingest()[0] = 42;
    auto vb = buf->release(0, 1);
    ASSERT_TRUE(vb);
    EXPECT_EXIT(::_exit(touch_read(vb->data())), ::testing::ExitedWithCode(42), "");
}

TEST_F(GatedPoolDeathTest, ReadingTheUnreleasedNextPageSegfaults) {
    auto pool = make_pool();
    auto buf = pool->acquire();
    ASSERT_TRUE(buf);
    auto vb = buf->release(0, 100);
    ASSERT_TRUE(vb);
    EXPECT_EQ(touch_read(vb->data() + page() - 1), 0);  // rest of the released page: readable
    EXPECT_SEGV(touch_read(vb->data() + page()));
}

TEST_F(GatedPoolDeathTest, WritingReleasedBytesThroughConstCastSegfaults) {
    auto pool = make_pool();
    auto buf = pool->acquire();
    ASSERT_TRUE(buf);
    auto vb = buf->release(0, 4096);
    ASSERT_TRUE(vb);
    uint8_t* evil = const_cast<uint8_t*>(vb->data());  // only here, to prove the kernel says no
    EXPECT_SEGV(*static_cast<volatile uint8_t*>(evil) = 1);
}

TEST_F(GatedPoolDeathTest, ReadingAnOldReleaseSpanAfterRecycleSegfaults) {
    auto pool = make_pool();
    const uint8_t* old = nullptr;
    {
        auto buf = pool->acquire();
        ASSERT_TRUE(buf);
        auto vb = buf->release(0, 64);
        ASSERT_TRUE(vb);
        old = vb->data();
        EXPECT_EQ(touch_read(old), 0);
    }  // buffer and handle gone: slot recycled and re-gated
    EXPECT_EQ(pool->slots_in_use(), 0u);
    EXPECT_SEGV(touch_read(old));
    // Acquiring the same slot again does not open it either.
    auto again = pool->acquire();
    ASSERT_TRUE(again);
    again->ingest()[0] = 9;
    EXPECT_SEGV(touch_read(old));
}

TEST(GatedPool, IngestFromRefusesReleasedPages) {
    auto pool = make_pool();
    auto buf = pool->acquire();
    ASSERT_TRUE(buf);
    EXPECT_EQ(buf->writable_begin(), 0u);
    auto all = buf->ingest_from(0);
    ASSERT_TRUE(all);
    EXPECT_EQ(all->size(), kSlot);

    ASSERT_TRUE(buf->release(0, 5000));  // pages 0 and 1 open
    EXPECT_EQ(buf->writable_begin(), 2 * page());
    EXPECT_TRUE(buf->ingest().empty());  // whole-slot access ends with the first release
    for (size_t off : {size_t{0}, size_t{4999}, size_t{5000}, 2 * page() - 1}) {
        auto r = buf->ingest_from(off);
        ASSERT_FALSE(r) << off;
        EXPECT_EQ(r.error().code, EPERM);
    }
    auto tail = buf->ingest_from(2 * page());
    ASSERT_TRUE(tail);
    EXPECT_EQ(tail->size(), kSlot - 2 * page());
    auto end = buf->ingest_from(kSlot);
    ASSERT_TRUE(end);
    EXPECT_TRUE(end->empty());
    auto past = buf->ingest_from(kSlot + 1);
    ASSERT_FALSE(past);
    EXPECT_EQ(past.error().code, EINVAL);
}

TEST(GatedPool, ReleaseRangesMustIncreaseAndStayInTheSlot) {
    auto pool = make_pool();
    auto buf = pool->acquire();
    ASSERT_TRUE(buf);
    auto a = buf->release(100, 200);
    ASSERT_TRUE(a);
    for (auto [b, e] : {std::pair<size_t, size_t>{150, 300}, {0, 50}, {199, 199 + 1}}) {
        auto r = buf->release(b, e);
        ASSERT_FALSE(r) << b << ".." << e;
        EXPECT_EQ(r.error().code, EINVAL);
    }
    auto backwards = buf->release(400, 300);
    ASSERT_FALSE(backwards);
    auto outside = buf->release(300, kSlot + 1);
    ASSERT_FALSE(outside);
    EXPECT_EQ(outside.error().code, EINVAL);
    // Adjacent is fine (per-record releases), and an empty range is a no-op.
    uint64_t calls = pool->mprotect_calls();
    auto b = buf->release(200, 300);
    ASSERT_TRUE(b);
    EXPECT_EQ(b->size(), 100u);
    EXPECT_EQ(pool->mprotect_calls(), calls);  // same page already open: no syscall
    auto empty = buf->release(300, 300);
    ASSERT_TRUE(empty);
    EXPECT_TRUE(empty->empty());
    EXPECT_EQ(empty->data(), nullptr);
}

TEST(GatedPool, SlotIsRecycledOnlyWhenBufferAndEveryHandleAreGone) {
    auto pool = make_pool(1);
    auto buf = pool->acquire();
    ASSERT_TRUE(buf);
    std::memcpy(buf->ingest().data(), "hello world", 11);
    VerifiedBytes vb = std::move(buf->release(0, 11)).value();
    VerifiedBytes copy = vb.share();
    static_assert(!std::is_copy_constructible_v<VerifiedBytes> && !std::is_copy_assignable_v<VerifiedBytes>,
                  "a second handle is made on purpose, with share() or slice()");
    VerifiedBytes word = vb.slice(6, 100);
    EXPECT_EQ(std::string(word.bytes().begin(), word.bytes().end()), "world");
    EXPECT_TRUE(vb.slice(11, 1).empty());

    buf->reset();
    EXPECT_FALSE(buf->valid());
    EXPECT_EQ(pool->slots_in_use(), 1u);
    EXPECT_EQ(pool->acquire().error().code, ENOBUFS);
    vb.reset();
    copy = VerifiedBytes();
    EXPECT_EQ(pool->slots_in_use(), 1u);
    EXPECT_EQ(std::string(word.bytes().begin(), word.bytes().end()), "world");
    word.reset();
    EXPECT_EQ(pool->slots_in_use(), 0u);
    EXPECT_TRUE(pool->acquire());
}

TEST(GatedPool, EnobufsWhenExhaustedAndMoveKeepsTheSlot) {
    auto pool = make_pool(2);
    auto a = pool->acquire();
    auto b = pool->acquire();
    ASSERT_TRUE(a);
    ASSERT_TRUE(b);
    auto c = pool->acquire();
    ASSERT_FALSE(c);
    EXPECT_EQ(c.error().code, ENOBUFS);

    GatedBuffer moved = std::move(a).value();
    EXPECT_EQ(pool->slots_in_use(), 2u);
    GatedBuffer target;
    target = std::move(moved);
    EXPECT_FALSE(moved.valid());  // NOLINT(bugprone-use-after-move): checking the moved-from state
    EXPECT_TRUE(target.valid());
    EXPECT_EQ(pool->slots_in_use(), 2u);
    target = std::move(b).value();  // the first slot goes back
    EXPECT_EQ(pool->slots_in_use(), 1u);
    EXPECT_TRUE(pool->acquire());
}

TEST(GatedPool, IngestBytesAreScrubbedOnRecycle) {
    auto pool = make_pool(1);
    uint8_t* first = nullptr;
    {
        auto buf = pool->acquire();
        ASSERT_TRUE(buf);
        auto in = buf->ingest();
        first = in.data();
        std::fill(in.begin(), in.end(), 0x5A);
        ASSERT_TRUE(buf->release(0, 3000));
    }
    auto again = pool->acquire();
    ASSERT_TRUE(again);
    auto in = again->ingest();
    ASSERT_EQ(in.data(), first);  // the same slot
    EXPECT_TRUE(std::all_of(in.begin(), in.end(), [](uint8_t b) { return b == 0; }));
}

TEST(GatedPool, ScrubWipesAFailedRecordButNeverReleasedPages) {
    auto pool = make_pool();
    auto buf = pool->acquire();
    ASSERT_TRUE(buf);
    auto in = buf->ingest();
    std::fill(in.begin(), in.end(), 0x77);
    uint64_t calls = pool->mprotect_calls();
    ASSERT_TRUE(buf->scrub(5000, 6000));
    EXPECT_EQ(pool->mprotect_calls(), calls);  // nothing released
    EXPECT_EQ(in[4999], 0x77);
    EXPECT_TRUE(std::all_of(in.begin() + 5000, in.begin() + 6000, [](uint8_t b) { return b == 0; }));
    EXPECT_EQ(in[6000], 0x77);

    ASSERT_TRUE(buf->release(0, 100));
    auto r = buf->scrub(50, 200);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, EPERM);
    EXPECT_FALSE(buf->scrub(page() - 1, page()));
    EXPECT_TRUE(buf->scrub(page(), page() + 1));
    EXPECT_EQ(buf->scrub(0, kSlot + 1).error().code, EINVAL);
}

TEST(GatedPool, OneMprotectPerReleaseAndPerRecycle) {
    auto pool = make_pool(2);
    {
        auto buf = pool->acquire();
        ASSERT_TRUE(buf);
        auto a = buf->release(0, 10000);  // a batch of records: one call, three pages
        ASSERT_TRUE(a);
        EXPECT_EQ(pool->mprotect_calls(), 1u);
        auto b = buf->release(3 * page(), kSlot);
        ASSERT_TRUE(b);
        EXPECT_EQ(pool->mprotect_calls(), 2u);
        buf->reset();
        EXPECT_EQ(pool->mprotect_calls(), 2u);  // handles keep the slot open
    }
    EXPECT_EQ(pool->mprotect_calls(), 3u);  // one re-gate for the whole slot
    {
        auto untouched = pool->acquire();
        ASSERT_TRUE(untouched);
    }
    EXPECT_EQ(pool->mprotect_calls(), 3u);  // never released: already PROT_NONE, no call
    EXPECT_EQ(pool->quarantined(), 0u);
}

TEST(GatedPool, RecycledSlotIsAllZeroAfterPartialWrites) {
    auto pool = make_pool(1);  // one slot: every acquire hands out the same one
    auto all_zero = [&] {
        auto buf = pool->acquire();
        EXPECT_TRUE(buf);
        auto in = buf->ingest();
        return std::all_of(in.begin(), in.end(), [](uint8_t b) { return b == 0; });
    };
    {
        auto buf = pool->acquire();
        ASSERT_TRUE(buf);
        auto rx = buf->receive_into(0);
        ASSERT_TRUE(rx);
        EXPECT_EQ(rx->size(), kSlot);
        std::memset(rx->data(), 0xab, 300);  // what a recv of 300 bytes writes
        buf->received(0, 300);
        auto moved = buf->ingest_range(2 * page(), 100);  // a tail moved past the next page
        ASSERT_TRUE(moved);
        EXPECT_EQ(moved->size(), 100u);
        std::memset(moved->data(), 0xcd, moved->size());
        auto vb = buf->release(0, 300);
        ASSERT_TRUE(vb);
        EXPECT_EQ(vb->bytes()[299], 0xab);
        EXPECT_EQ(buf->ingest_range(page() - 1, 1).error().code, EPERM);  // released page
        EXPECT_EQ(buf->ingest_range(kSlot - 10, 11).error().code, EINVAL);
    }
    EXPECT_TRUE(all_zero());
    {
        // Without received(), the whole receive span counts as dirty.
        auto buf = pool->acquire();
        ASSERT_TRUE(buf);
        auto rx = buf->receive_into(page());
        ASSERT_TRUE(rx);
        std::memset(rx->data(), 0xee, rx->size());
    }
    EXPECT_TRUE(all_zero());
    EXPECT_EQ(pool->quarantined(), 0u);
}

// ---- isolated layout ----------------------------------------------------------------------------

std::unique_ptr<GatedPool> make_isolated(size_t slots = 3, size_t slot_size = 5 * 4096) {
    auto p = GatedPool::create(slot_size, slots, GatedPool::Layout::isolated);
    EXPECT_TRUE(p) << (p ? "" : p.error().message());
    return p ? std::move(p).value() : nullptr;
}

// How many VMAs of this process start inside the pool's release view (/proc/self/maps).
size_t release_view_vmas(const GatedPool& pool) {
    std::ifstream maps("/proc/self/maps");
    size_t n = 0;
    for (std::string line; std::getline(maps, line);) {
        uintptr_t start = std::stoull(line.substr(0, line.find('-')), nullptr, 16);
        if (pool.in_release_view(reinterpret_cast<const void*>(start))) ++n;
    }
    return n;
}

TEST(GatedPool, PackedPartialReleaseSplitsTheViewAndRecycleMergesIt) {
    // The control for the isolated test below: the VMA count does see splits.
    auto pool = make_pool(2);
    const size_t before = release_view_vmas(*pool);
    EXPECT_EQ(before, 1u);
    {
        auto buf = pool->acquire();
        ASSERT_TRUE(buf);
        auto vb = buf->release(0, 100);
        ASSERT_TRUE(vb);
        EXPECT_EQ(release_view_vmas(*pool), 2u);  // [page 0 readable][rest PROT_NONE]
    }
    EXPECT_EQ(release_view_vmas(*pool), before);
}

TEST(GatedPool, IsolatedSlotOpensWholeInOneCallAndNeverSplitsAVma) {
    auto pool = make_isolated(3);
    ASSERT_TRUE(pool);
    EXPECT_EQ(pool->layout(), GatedPool::Layout::isolated);
    // One VMA per slot plus the guard page after each: 6 VMAs start in the view.
    const size_t vmas = release_view_vmas(*pool);
    EXPECT_EQ(vmas, 6u);
    {
        auto buf = pool->acquire();
        ASSERT_TRUE(buf);
        EXPECT_EQ(buf->writable_after_release(100), buf->size());
        auto rx = buf->receive_into(0);
        ASSERT_TRUE(rx);
        std::memset(rx->data(), 0x5a, 300);
        buf->received(0, 300);
        auto vb = buf->release(10, 100);
        ASSERT_TRUE(vb);
        EXPECT_EQ(pool->mprotect_calls(), 1u);
        EXPECT_EQ(release_view_vmas(*pool), vmas);  // flags changed in place: no split
        EXPECT_EQ(vb->bytes()[0], 0x5a);
        // The whole slot is open, so nothing of it is writable any more.
        EXPECT_EQ(buf->writable_begin(), buf->size());
        EXPECT_EQ(buf->ingest_from(200).error().code, EPERM);
        EXPECT_EQ(buf->scrub(200, 300).error().code, EPERM);
        // A later range of the same slot needs no second call.
        auto more = buf->release(100, 300);
        ASSERT_TRUE(more);
        EXPECT_EQ(pool->mprotect_calls(), 1u);
        EXPECT_EQ(more->bytes()[199], 0x5a);
    }
    EXPECT_EQ(pool->mprotect_calls(), 2u);  // the re-gate: one call over the one VMA
    EXPECT_EQ(release_view_vmas(*pool), vmas);
    EXPECT_EQ(pool->slots_in_use(), 0u);
    // Recycled and scrubbed: the next owner of the slot sees zeros.
    auto again = pool->acquire();
    ASSERT_TRUE(again);
    auto in = again->ingest();
    EXPECT_TRUE(std::all_of(in.begin(), in.end(), [](uint8_t b) { return b == 0; }));
}

TEST_F(GatedPoolDeathTest, IsolatedNeighbourAndGuardPageStayGated) {
    auto pool = make_isolated(2, page());
    auto first = pool->acquire();
    auto second = pool->acquire();
    ASSERT_TRUE(first && second);
    second->ingest()[0] = 7;  // received, never verified
    auto vb = first->release(0, 1);
    ASSERT_TRUE(vb);
    EXPECT_EQ(touch_read(vb->data() + page() - 1), 0);  // the whole (one-page) slot is open
    EXPECT_SEGV(touch_read(vb->data() + page()));        // the guard page
    EXPECT_SEGV(touch_read(vb->data() + 2 * page()));    // the other slot, unverified
}

TEST_F(GatedPoolDeathTest, IsolatedSlotIsGatedAgainAfterRecycle) {
    auto pool = make_isolated(1, page());
    const uint8_t* old = nullptr;
    {
        auto buf = pool->acquire();
        ASSERT_TRUE(buf);
        auto vb = buf->release(0, 64);
        ASSERT_TRUE(vb);
        old = vb->data();
        EXPECT_EQ(touch_read(old), 0);
    }
    auto again = pool->acquire();
    ASSERT_TRUE(again);
    again->ingest()[0] = 9;
    EXPECT_SEGV(touch_read(old));
}

#if !defined(__SANITIZE_ADDRESS__)  // exhausting vm.max_map_count leaves ASan no room for its own maps
// Fills the process's memory-map budget (vm.max_map_count) with one-page mappings of alternating
// protection, so neighbours never merge: from then on, an mprotect that splits a VMA fails with
// ENOMEM, as it does on a host whose gated pools outgrew the limit.
std::vector<void*> exhaust_map_count() {
    std::vector<void*> maps;
    maps.reserve(1 << 17);
    for (int prot = PROT_READ;; prot = prot == PROT_READ ? PROT_NONE : PROT_READ) {
        void* p = ::mmap(nullptr, page(), prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return maps;
        maps.push_back(p);
    }
}

// Runs in a child (it exhausts the map count): the step that failed as exit code, 0 when all held.
int quarantine_then_retry() {
    auto pool = GatedPool::create(kSlot, 2);
    if (!pool) return 1;
    auto a = (*pool)->acquire();
    auto b = (*pool)->acquire();
    if (!a || !b) return 2;
    // Both slots released whole: one readable VMA over the pool's release view.
    auto va = a->release(0, kSlot);
    auto vb = b->release(0, kSlot);
    if (!va || !vb) return 3;
    const uint8_t* first_slot = va->bytes().data();
    std::vector<void*> filler = exhaust_map_count();
    if (filler.size() < 2) return 4;
    // Re-gating slot 0 splits that VMA: ENOMEM, so the slot must not go back to the free list.
    a->reset();
    va->reset();
    if ((*pool)->quarantined() != 1 || (*pool)->slots_in_use() != 1) return 5;
    // No free slot: acquire() retries the re-gate, which still fails: ENOBUFS, still quarantined.
    auto none = (*pool)->acquire();
    if (none || none.error().code != ENOBUFS || (*pool)->quarantined() != 1) return 6;
    // Room again: the retry gates the whole slot and hands it out.
    for (int i = 0; i < 4; ++i) ::munmap(filler[filler.size() - 1 - static_cast<size_t>(i)], page());
    auto again = (*pool)->acquire();
    if (!again || (*pool)->quarantined() != 0 || (*pool)->slots_in_use() != 2) return 7;
    // It is slot 0, gated again: its release view is readable only after a new release.
    auto reopened = again->release(0, 1);
    if (!reopened || reopened->bytes().data() != first_slot) return 8;
    return 0;
}

TEST_F(GatedPoolDeathTest, QuarantinedSlotIsRetriedOnceTheReGateSucceeds) {
    EXPECT_EXIT(std::exit(quarantine_then_retry()), ::testing::ExitedWithCode(0), "");
}
#endif

}  // namespace
}  // namespace ztp::io
