#include "proxy/io/gated_pool.hpp"

#include <fcntl.h>
#include <string.h>  // explicit_bzero
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cstdint>
#include <limits>
#include <utility>

namespace ztp::io {

// ---- Mapping ----------------------------------------------------------------------------------

Mapping::Mapping(Mapping&& o) noexcept
    : addr_(std::exchange(o.addr_, nullptr)), len_(std::exchange(o.len_, 0)) {}

Mapping& Mapping::operator=(Mapping&& o) noexcept {
    if (this != &o) {
        reset();
        addr_ = std::exchange(o.addr_, nullptr);
        len_ = std::exchange(o.len_, 0);
    }
    return *this;
}

void Mapping::reset() {
    if (addr_ != nullptr) ::munmap(addr_, len_);
    addr_ = nullptr;
    len_ = 0;
}

// ---- GatedPool --------------------------------------------------------------------------------

namespace {

// Both views get the same advice. MADV_DONTDUMP: plaintext (and whatever key-adjacent bytes a
// record layer leaves in flight) never lands in a core dump. MADV_DONTFORK: a forked child does not
// inherit the mappings; because they are MAP_SHARED it would otherwise keep reading every later
// connection's plaintext. (exec drops them anyway; this covers fork without exec.)
Result<void> advise(const Mapping& m) {
    if (::madvise(m.data(), m.size(), MADV_DONTDUMP) != 0) return errno_error("madvise(MADV_DONTDUMP)");
    if (::madvise(m.data(), m.size(), MADV_DONTFORK) != 0) return errno_error("madvise(MADV_DONTFORK)");
    return ok_result();
}

}  // namespace

Result<std::unique_ptr<GatedPool>> GatedPool::create(size_t slot_size, size_t slots, Layout layout) {
    long page_l = ::sysconf(_SC_PAGESIZE);
    if (page_l <= 0) return errno_error("sysconf(_SC_PAGESIZE)");
    const size_t page = static_cast<size_t>(page_l);
    if (slot_size == 0 || slots == 0) return make_error(EINVAL, "GatedPool: empty pool");
    if (slots > std::numeric_limits<uint32_t>::max()) return make_error(EINVAL, "GatedPool: too many slots");
    if (slot_size > std::numeric_limits<size_t>::max() - page) return make_error(EOVERFLOW, "GatedPool");
    slot_size = (slot_size + page - 1) & ~(page - 1);
    // Isolated slots sit one guard page apart in the release view (see Layout).
    const size_t stride = layout == Layout::isolated ? slot_size + page : slot_size;
    if (stride > std::numeric_limits<size_t>::max() / slots) return make_error(EOVERFLOW, "GatedPool");
    const size_t total = slot_size * slots;
    if (total > static_cast<size_t>(std::numeric_limits<off_t>::max())) {
        return make_error(EOVERFLOW, "GatedPool");
    }

    // memfd: an anonymous shmem file, the only way to give two virtual mappings of the same pages
    // different permissions (no path in any filesystem, nothing to unlink). CLOEXEC: an exec'd
    // helper never inherits it. ALLOW_SEALING so the size can be sealed below.
    UniqueFd fd(::memfd_create("ztproxy-gated", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (!fd) return errno_error("memfd_create");
    if (::ftruncate(fd.get(), static_cast<off_t>(total)) != 0) return errno_error("ftruncate(memfd)");
    // Pages are NOT committed up front (no fallocate, no MAP_POPULATE): a worker may size its pool
    // for thousands of slots and touch only the few that are busy. memfd lives on the internal shm
    // mount, which has no size limit, so a first touch faults in a page (or meets the OOM killer like
    // any anonymous memory) rather than SIGBUS. LIFO reuse keeps the touched set small and warm.
    // Seal the size: a shrinking ftruncate would turn every access past the new end into SIGBUS.
    if (::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
        return errno_error("F_ADD_SEALS(memfd)");
    }

    // Ingest view: MAP_SHARED so it is the same pages as the release view (no copy ever happens).
    void* in = ::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    if (in == MAP_FAILED) return errno_error("mmap(ingest view)");
    Mapping ingest(in, total);

    // Release view: starts PROT_NONE everywhere. This is the gate: the rest of the proxy holds only
    // pointers into this view, and the kernel faults any read of a page release() did not open.
    Mapping release;
    if (layout == Layout::packed) {
        void* rel = ::mmap(nullptr, total, PROT_NONE, MAP_SHARED, fd.get(), 0);
        if (rel == MAP_FAILED) return errno_error("mmap(release view)");
        release = Mapping(rel, total);
    } else {
        // Reserve the whole span as anonymous PROT_NONE memory, then map each slot's part of the
        // memfd over it. The anonymous page left between two slots is a different kind of VMA
        // (no file), so the kernel can never merge neighbouring slots: each slot stays exactly one
        // VMA, and mprotect over a whole slot changes its flags without a split or a merge.
        // MAP_NORESERVE: the guard pages are never touched and must not count as commit.
        void* rel = ::mmap(nullptr, stride * slots, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (rel == MAP_FAILED) return errno_error("mmap(release view reservation)");
        release = Mapping(rel, stride * slots);
        for (size_t i = 0; i < slots; ++i) {
            uint8_t* at = release.data() + i * stride;
            void* got = ::mmap(at, slot_size, PROT_NONE, MAP_SHARED | MAP_FIXED, fd.get(),
                               static_cast<off_t>(i * slot_size));
            if (got == MAP_FAILED) return errno_error("mmap(release view slot)");
        }
    }

    if (auto r = advise(ingest); !r) return r.error();
    if (auto r = advise(release); !r) return r.error();

    return std::unique_ptr<GatedPool>(new GatedPool(std::move(fd), std::move(ingest), std::move(release), layout,
                                                    slot_size, stride, slots, page));
}

GatedPool::GatedPool(UniqueFd fd, Mapping ingest, Mapping release, Layout layout, size_t slot_size, size_t stride,
                     size_t slots, size_t page)
    : fd_(std::move(fd)),
      ingest_(std::move(ingest)),
      release_(std::move(release)),
      layout_(layout),
      slot_size_(slot_size),
      release_stride_(stride),
      page_(page),
      slots_(slots) {
    free_.reserve(slots);
    // Reverse order so that acquire() (LIFO) hands out slot 0 first: easier to read in a debugger.
    for (size_t i = slots; i-- > 0;) free_.push_back(static_cast<uint32_t>(i));
}

GatedPool::~GatedPool() {
    // A GatedBuffer or VerifiedBytes outliving its pool would point into unmapped memory and call
    // back into a dead object. The owner (a worker) destroys connections before its pool.
    assert(in_use_ == 0 && "GatedBuffer/VerifiedBytes outlived their GatedPool");
}

bool GatedPool::regate_one() {
    // Retry the re-gate of a quarantined slot over its whole extent (a superset of whatever was
    // released): only a slot that is PROT_NONE again goes back to the free list.
    const uint32_t q = quarantined_.back();
    if (protect(q, 0, slot_size_, PROT_NONE) != 0) return false;
    quarantined_.pop_back();
    free_.push_back(q);
    return true;
}

GatedBuffer GatedPool::take() {
    uint32_t slot = free_.back();
    free_.pop_back();
    slots_[slot] = Slot{1, 0};
    ++in_use_;
    return GatedBuffer(this, slot);
}

Result<GatedBuffer> GatedPool::acquire() {
    // A slot back from quarantine goes to the oldest waiter, if any, like any slot coming back.
    if (!has_unpromised() && !quarantined_.empty() && regate_one()) waiters_.grant_one();
    if (!has_unpromised()) return make_error(ENOBUFS, "GatedPool: no free slot");
    return take();
}

Result<GatedBuffer> GatedPool::acquire(SlotWait& w) {
    // Its promised slot is in the free list: promises are only made for free slots, and nobody
    // else may take one (has_unpromised).
    if (waiters_.claim(w)) return take();
    if (w.waiting()) return make_error(ENOBUFS, "GatedPool: waiting for a slot");  // its turn comes
    if (auto b = acquire()) return b;
    waiters_.enqueue(w);
    return make_error(ENOBUFS, "GatedPool: no free slot");
}

void GatedPool::retry_quarantined() {
    while (waiters_.queued() > 0 && !quarantined_.empty() && regate_one()) waiters_.grant_one();
}

bool GatedPool::in_release_view(const void* p) const {
    auto a = reinterpret_cast<uintptr_t>(p);
    auto b = reinterpret_cast<uintptr_t>(release_.data());
    return a >= b && a - b < release_.size();
}

int GatedPool::protect(uint32_t slot, size_t begin, size_t end, int prot) {
    ++mprotect_calls_;
    // mprotect on the release view only: the ingest view keeps PROT_READ|PROT_WRITE. Changing a
    // range to PROT_NONE flushes the TLB on every CPU where this process runs (IPIs); changing it
    // to PROT_READ only upgrades, no flush. Page tables built by earlier reads survive a PROT_NONE
    // round (they become PROT_NONE entries), so a recycled slot's next reads do not fault again.
    uint8_t* at = release_.data() + static_cast<size_t>(slot) * release_stride_ + begin;
    if (::mprotect(at, end - begin, prot) != 0) return errno;
    return 0;
}

void GatedPool::unref(uint32_t slot) {
    assert(slots_[slot].refs > 0);
    if (--slots_[slot].refs == 0) recycle(slot);
}

void GatedPool::recycle(uint32_t slot) {
    Slot& s = slots_[slot];
    bool gated = true;
    // One mprotect over the pages ever released (ranges only increase: none lies past the last
    // one's page; an isolated slot was opened whole), and none when nothing was released.
    if (s.released_end != 0) gated = protect(slot, 0, writable_begin(slot), PROT_NONE) == 0;
    // explicit_bzero: a plain memset before reuse could be elided; the next connection must never
    // see this one's plaintext (or the tail of a record that failed its tag). Everything past
    // dirty_end is still zero from the last recycle (or the fresh memfd).
    ::explicit_bzero(ingest_at(slot, 0), std::max(s.dirty_end, s.receiving_end));
    s.released_end = 0;
    s.dirty_end = 0;
    s.receiving_end = 0;
    --in_use_;
    if (!gated) {
        // The release view of this slot may still be readable: handing it out again would make the
        // next connection's unverified plaintext readable. Fail closed: quarantined (scrubbed
        // already) until a re-gate of the whole slot succeeds (acquire() retries it).
        quarantined_.push_back(slot);
        return;
    }
    free_.push_back(slot);
    // The oldest waiter is promised it; it is woken later, at the owner's safe point (we may be
    // inside another connection's code here: the destructor of its last lease on the slot).
    waiters_.grant_one();
}

// ---- GatedBuffer ------------------------------------------------------------------------------

GatedBuffer::GatedBuffer(GatedBuffer&& o) noexcept
    : pool_(std::exchange(o.pool_, nullptr)), slot_(std::exchange(o.slot_, 0)) {}

GatedBuffer& GatedBuffer::operator=(GatedBuffer&& o) noexcept {
    if (this != &o) {
        reset();
        pool_ = std::exchange(o.pool_, nullptr);
        slot_ = std::exchange(o.slot_, 0);
    }
    return *this;
}

void GatedBuffer::reset() {
    if (pool_ != nullptr) std::exchange(pool_, nullptr)->unref(slot_);
}

size_t GatedBuffer::size() const { return pool_ != nullptr ? pool_->slot_size_ : 0; }

size_t GatedBuffer::writable_begin() const { return pool_ != nullptr ? pool_->writable_begin(slot_) : 0; }

size_t GatedBuffer::writable_after_release(size_t end) const {
    if (pool_ == nullptr) return 0;
    if (pool_->layout_ == GatedPool::Layout::isolated) return end == 0 ? writable_begin() : pool_->slot_size_;
    return std::max(pool_->page_ceil(end), writable_begin());
}

std::span<uint8_t> GatedBuffer::ingest() {
    if (pool_ == nullptr || pool_->slots_[slot_].released_end != 0) return {};
    pool_->slots_[slot_].dirty_end = pool_->slot_size_;
    return {pool_->ingest_at(slot_, 0), pool_->slot_size_};
}

Result<std::span<uint8_t>> GatedPool::writable(uint32_t slot, size_t offset, size_t len) {
    if (offset > slot_size_ || len > slot_size_ - offset) return make_error(EINVAL, "GatedBuffer::ingest_range");
    // The security rule: no writable span on a page the release view can already read.
    if (offset < writable_begin(slot)) return make_error(EPERM, "GatedBuffer: page already released");
    return std::span<uint8_t>(ingest_at(slot, offset), len);
}

Result<std::span<uint8_t>> GatedBuffer::ingest_from(size_t offset) {
    if (pool_ == nullptr || offset > pool_->slot_size_) return make_error(EINVAL, "GatedBuffer::ingest_from");
    return ingest_range(offset, pool_->slot_size_ - offset);
}

Result<std::span<uint8_t>> GatedBuffer::ingest_range(size_t offset, size_t len) {
    if (pool_ == nullptr) return make_error(EINVAL, "GatedBuffer::ingest_range");
    auto span = pool_->writable(slot_, offset, len);
    if (span) {
        size_t& dirty = pool_->slots_[slot_].dirty_end;
        dirty = std::max(dirty, offset + len);
    }
    return span;
}

Result<std::span<uint8_t>> GatedBuffer::receive_into(size_t offset) {
    if (pool_ == nullptr || offset > pool_->slot_size_) return make_error(EINVAL, "GatedBuffer::receive_into");
    auto span = pool_->writable(slot_, offset, pool_->slot_size_ - offset);
    // Dirty as a whole until received() says how much the kernel wrote.
    if (span) pool_->slots_[slot_].receiving_end = pool_->slot_size_;
    return span;
}

void GatedBuffer::received(size_t offset, size_t n) {
    if (pool_ == nullptr) return;
    GatedPool::Slot& s = pool_->slots_[slot_];
    s.dirty_end = std::max(s.dirty_end, std::min(offset + n, pool_->slot_size_));
    s.receiving_end = 0;
}

Result<VerifiedBytes> GatedBuffer::release(size_t begin, size_t end) {
    if (pool_ == nullptr) return make_error(EINVAL, "GatedBuffer::release: empty buffer");
    GatedPool::Slot& s = pool_->slots_[slot_];
    if (begin > end || end > pool_->slot_size_) {
        return make_error(EINVAL, "GatedBuffer::release: out of slot");
    }
    if (begin < s.released_end) return make_error(EINVAL, "GatedBuffer::release: ranges must increase");
    if (begin == end) return VerifiedBytes();

    // Pages already opened by an earlier release need no second call. An isolated slot opens
    // whole, once: its one VMA changes flags without being split.
    const bool isolated = pool_->layout_ == GatedPool::Layout::isolated;
    const size_t from = isolated ? 0 : std::max(pool_->page_floor(begin), pool_->page_ceil(s.released_end));
    const size_t to = isolated ? (s.released_end == 0 ? pool_->slot_size_ : 0) : pool_->page_ceil(end);
    int err = from < to ? pool_->protect(slot_, from, to, PROT_READ) : 0;
    // Advance the mark even on failure: mprotect may have opened part of the range, so those pages
    // must count as released (no more writable spans on them). Fail closed.
    s.released_end = end;
    if (err != 0) return make_error(err, "mprotect(release view, PROT_READ)");
    pool_->ref(slot_);
    return VerifiedBytes(pool_, slot_, pool_->release_at(slot_, begin), end - begin);
}

Result<void> GatedBuffer::scrub(size_t begin, size_t end) {
    if (pool_ == nullptr || begin > end || end > pool_->slot_size_) {
        return make_error(EINVAL, "GatedBuffer::scrub");
    }
    if (begin == end) return ok_result();
    if (begin < pool_->writable_begin(slot_)) return make_error(EPERM, "GatedBuffer::scrub: page released");
    ::explicit_bzero(pool_->ingest_at(slot_, begin), end - begin);
    return ok_result();
}

// ---- VerifiedBytes ----------------------------------------------------------------------------

VerifiedBytes::VerifiedBytes(GatedPool* pool, uint32_t slot, const uint8_t* data, size_t size)
    : pool_(pool), slot_(slot), data_(data), size_(size) {}

VerifiedBytes::VerifiedBytes(VerifiedBytes&& o) noexcept
    : pool_(std::exchange(o.pool_, nullptr)),
      slot_(std::exchange(o.slot_, 0)),
      data_(std::exchange(o.data_, nullptr)),
      size_(std::exchange(o.size_, 0)) {}

VerifiedBytes& VerifiedBytes::operator=(VerifiedBytes&& o) noexcept {
    if (this != &o) {
        reset();
        pool_ = std::exchange(o.pool_, nullptr);
        slot_ = std::exchange(o.slot_, 0);
        data_ = std::exchange(o.data_, nullptr);
        size_ = std::exchange(o.size_, 0);
    }
    return *this;
}

void VerifiedBytes::reset() {
    if (pool_ != nullptr) std::exchange(pool_, nullptr)->unref(slot_);
    data_ = nullptr;
    size_ = 0;
}

VerifiedBytes VerifiedBytes::slice(size_t offset, size_t len) const {
    if (pool_ == nullptr || offset >= size_) return VerifiedBytes();
    len = std::min(len, size_ - offset);
    if (len == 0) return VerifiedBytes();
    pool_->ref(slot_);
    return VerifiedBytes(pool_, slot_, data_ + offset, len);
}

}  // namespace ztp::io
