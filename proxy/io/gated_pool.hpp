// GatedPool: page-gated memory for TLS records decrypted in user space.
//
// THE PROPERTY: no byte of a record is readable by any other part of the proxy before that
// record's AEAD tag has verified; verified bytes are read-only afterwards. The types make it hard
// to reach unverified bytes (only the GatedBuffer owner, i.e. the record layer, ever sees them);
// the page permissions make it impossible at run time.
//
// HOW: one memfd, mapped twice with MAP_SHARED, so both views are the same physical pages.
//   ingest view   PROT_READ|PROT_WRITE, always. Ciphertext is received here and decrypted in place.
//                 Only GatedBuffer hands out (writable) spans of it.
//   release view  PROT_NONE until release(): then the pages covering the verified range become
//                 PROT_READ (never writable). Everything downstream of the record layer (relays,
//                 the redaction matcher, rewrite plans) reads plaintext only through VerifiedBytes,
//                 which point into this view. Reading a not-yet-released byte there is SIGSEGV.
// (These CPUs have no pku, so protection keys are not an option: the gate is mprotect on the
// second mapping. Zero copies: the release view reads the very bytes the ingest view decrypted.)
//
// ===================================== THE CALLER'S CONTRACT =====================================
// Permissions are per PAGE, records are per BYTE. release(begin, end) makes every page that
// [begin, end) touches readable, including the bytes of those pages outside [begin, end). So:
//
//   1. Call release(begin, end) only after the AEAD tag of EVERY record whose plaintext lies in
//      [begin, end) has verified.
//   2. Every byte on the pages covering [begin, end) that is outside [begin, end) must be either
//      verified plaintext or not secret: record headers, tags, or ciphertext that has NOT been
//      decrypted in place. In particular: never decrypt a record in place and then release a
//      neighbouring range on the same page before that record's tag verified. On a tag failure,
//      scrub() the failed record FIRST, then release the verified records before it.
//      An ISOLATED slot (Layout below) opens whole: there, "the pages covering [begin, end)" is
//      the entire slot, so everything in it must be verified plaintext or not secret.
//   3. A trailing partial record (its ciphertext is on a page that release() just made readable)
//      must not be decrypted in this slot: ingest_from() refuses writable space on released pages.
//      Move its ciphertext to a fresh slot (or to the next page boundary, writable_begin()) and
//      decrypt it there.
//   4. Writable spans obtained from ingest()/ingest_from() BEFORE a release() must not be used
//      for anything on the released pages afterwards. (The kernel cannot revoke a pointer that is
//      still writable through the other view; re-ask ingest_from() after every release().)
//
// What this class enforces: release ranges increase and never overlap within a slot's lifetime
// (EINVAL otherwise); ingest_from() and scrub() refuse released pages (EPERM), so in-place
// decryption can never write plaintext onto a readable page through a fresh span; VerifiedBytes
// only ever gives out const pointers into a view that the kernel keeps read-only.
// =================================================================================================
//
// LIFETIME: a slot is recycled only when its GatedBuffer AND every VerifiedBytes from it are gone
// (refcount). Recycling puts the released pages back to PROT_NONE in the release view (one
// mprotect over [0, last released page]: release ranges only increase, so no page past it was ever
// opened) and scrubs the ingest bytes that may hold anything (explicit_bzero over the dirty range,
// below), so no plaintext survives into the next connection. If that mprotect fails the slot is
// quarantined rather than handed out readable, until a re-gate of the whole slot succeeds.
//
// DIRTY RANGE: a recycled slot is all zeros. The pool scrubs only what can have been written since:
// every writable span it handed out (ingest(), ingest_from(): to the end of the slot;
// ingest_range(): exactly that range), except that a span taken with receive_into() counts only up
// to what received() later reports the kernel wrote into it (a recv completes with the byte count it
// wrote and writes nothing past it). Until received() is called, the whole span counts as dirty. A
// small request thus scrubs a few hundred bytes, not the whole slot.
// GatedBuffer and VerifiedBytes must not outlive their pool (asserted in debug builds).
//
// MEMORY: slots*slot_size of shmem is reserved as address space only; pages are committed on first
// touch and stay committed (scrubbed, not freed) after recycling, so the footprint is the
// high-water mark of slots in use. Acquire is LIFO, which keeps that mark low.
//
// THREADS: a pool belongs to one worker thread. No locks; GatedBuffer/VerifiedBytes and their
// shares must be created, shared and destroyed on that thread only.
//
// COST, measured with tests/bench/gated_pool_bench.cpp (64 KiB slots, 4 KiB pages, 2-vCPU
// Firecracker VM, kernel 6.18, g++ 12 RelWithDebInfo; medians of 5x20000, range over 4 runs on a
// shared, noisy VM; for scale: a bare syscall costs ~160 ns here, AES-128-GCM (openssl speed)
// ~21 us per 64 KiB):
//                                    single thread   + 2nd thread blocked   + 2nd thread running
//   mprotect 64 KiB -> PROT_READ       2.0-2.8 us          1.8-3.0 us            2.4-4.4 us
//   mprotect 64 KiB -> PROT_NONE       3.0-3.7 us          2.7-3.9 us            6-15.6 us (IPIs)
//   explicit_bzero 64 KiB              0.6 us              0.45-0.6 us           0.45-0.8 us
//   full slot cycle, 4-slot pool       9-10.8 us           8-12 us               13.6-24 us
//   full slot cycle, 1-slot pool       5.4-7.7 us          7.6-8.3 us            18-19 us
// "full slot cycle" = acquire + fill 64 KiB (0.6 us, the caller's work) + release(0, 64 KiB) + read
// every page through the VerifiedBytes + drop (re-gate + scrub). Reads take no page faults in
// steady state: PTEs survive a PROT_NONE round. The 4-slot vs 1-slot gap (~2.7 us) is the VMA split
// on release and the merge on re-gate. A blocked thread costs nothing (lazy TLB); a thread RUNNING
// on another CPU turns every PROT_NONE into an IPI round trip. Consequence for the worker model:
// worker THREADS of one process all run this mm, so each re-gate interrupts every other busy
// worker; worker PROCESSES (SO_REUSEPORT) do not share the mm and avoid it. Net: the gate adds
// ~10 us per 64 KiB released, about half of the AES-GCM cost, which is why release() is called once
// per recv batch, never per record.
// VMAs: the ingest view stays one VMA; in the release view every partially released slot splits
// it (at most 2N+1 VMAs for N slots; vm.max_map_count defaults to 65530). Past that limit mprotect
// fails with ENOMEM and release() passes it on.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <sys/uio.h>
#include <vector>

#include "proxy/base/result.hpp"
#include "proxy/base/unique_fd.hpp"
#include "proxy/io/slot_waiters.hpp"

namespace ztp::io {

// The one owner of an mmap'd range: munmap is the destructor's job only.
class Mapping {
public:
    Mapping() = default;
    Mapping(void* addr, size_t len) : addr_(static_cast<uint8_t*>(addr)), len_(len) {}
    ~Mapping() { reset(); }

    Mapping(Mapping&& o) noexcept;
    Mapping& operator=(Mapping&& o) noexcept;
    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;

    uint8_t* data() const { return addr_; }
    size_t size() const { return len_; }
    bool valid() const { return addr_ != nullptr; }
    void reset();

private:
    uint8_t* addr_ = nullptr;
    size_t len_ = 0;
};

class GatedPool;

// A read-only handle to verified plaintext in the release view. Move-only: a second handle to the
// same bytes is made on purpose, with share() or slice(), each holding a reference on the slot;
// the slot is recycled when the GatedBuffer and every VerifiedBytes from it are gone. Never gives a
// writable pointer, and the kernel agrees: the pages are PROT_READ in the release view.
class VerifiedBytes {
public:
    VerifiedBytes() = default;
    ~VerifiedBytes() { reset(); }
    VerifiedBytes(const VerifiedBytes&) = delete;
    VerifiedBytes& operator=(const VerifiedBytes&) = delete;
    VerifiedBytes(VerifiedBytes&& o) noexcept;
    VerifiedBytes& operator=(VerifiedBytes&& o) noexcept;

    std::span<const uint8_t> bytes() const { return {data_, size_}; }
    const uint8_t* data() const { return data_; }
    size_t size() const { return size_; }
    bool empty() const { return size_ == 0; }

    // A sub-range sharing the same slot (for rewrite plans that point into verified bytes).
    // Clamped to this range; an out-of-range offset gives an empty handle.
    VerifiedBytes slice(size_t offset, size_t len) const;
    // Another handle to the same bytes (one more reference on the slot).
    VerifiedBytes share() const { return slice(0, size_); }
    // Both handles hold a reference on the same slot (empty handles hold none).
    bool same_slot(const VerifiedBytes& o) const { return pool_ && pool_ == o.pool_ && slot_ == o.slot_; }

    // [offset, offset+len) as an iovec for sendmsg. iovec's pointer is not const, but the kernel
    // only reads it, and the page is PROT_READ anyway: this is the one place that casts.
    iovec iov(size_t offset, size_t len) const {
        return {const_cast<uint8_t*>(data_ + offset), len};
    }

    void reset();

private:
    friend class GatedBuffer;
    VerifiedBytes(GatedPool* pool, uint32_t slot, const uint8_t* data, size_t size);

    GatedPool* pool_ = nullptr;  // null for an empty handle (holds no reference)
    uint32_t slot_ = 0;
    const uint8_t* data_ = nullptr;
    size_t size_ = 0;
};

// One slot, owned by the record layer while it receives and decrypts. Move-only.
class GatedBuffer {
public:
    GatedBuffer() = default;
    ~GatedBuffer() { reset(); }
    GatedBuffer(GatedBuffer&& o) noexcept;
    GatedBuffer& operator=(GatedBuffer&& o) noexcept;
    GatedBuffer(const GatedBuffer&) = delete;
    GatedBuffer& operator=(const GatedBuffer&) = delete;

    bool valid() const { return pool_ != nullptr; }
    size_t size() const;

    // The whole slot in the ingest view, writable. Only before the first release(): afterwards it
    // returns an empty span (use ingest_from(writable_begin())).
    std::span<uint8_t> ingest();

    // [offset, size()) in the ingest view, writable. EPERM when offset lies on a page that is
    // already released (offset < writable_begin()): plaintext must never be written onto a
    // readable page. EINVAL when offset > size().
    Result<std::span<uint8_t>> ingest_from(size_t offset);

    // [offset, offset + len) in the ingest view, writable, with the same rules as ingest_from():
    // for writes whose extent is known (copies, in-place decryption of received bytes).
    Result<std::span<uint8_t>> ingest_range(size_t offset, size_t len);

    // For a recv into [offset, size()): like ingest_from(), but once received(offset, n) reports
    // the n bytes the kernel wrote, only those count as dirty (see DIRTY RANGE above).
    Result<std::span<uint8_t>> receive_into(size_t offset);
    void received(size_t offset, size_t n);

    // First offset that is still writable: the page boundary after the last released byte (the
    // end of the slot once an isolated slot was released).
    size_t writable_begin() const;

    // What writable_begin() will be after release(_, end): where a trailing partial record has to
    // move before that release (contract 3).
    size_t writable_after_release(size_t end) const;

    // Read the contract at the top of this file first. Makes the pages covering [begin, end)
    // PROT_READ in the release view (at most one mprotect) and returns a handle to exactly
    // [begin, end) there. EINVAL when the range is out of the slot or begins before the end of
    // an earlier release (ranges must increase and never overlap). begin == end gives an empty
    // handle and no syscall.
    Result<VerifiedBytes> release(size_t begin, size_t end);

    // On a tag failure: wipe [begin, end) of the ingest view (the partially decrypted record).
    // Nothing is released. EPERM when the range touches a released page (that would modify
    // verified bytes, and plaintext there would already be a contract violation).
    Result<void> scrub(size_t begin, size_t end);

    // Gives the slot back (recycled once no VerifiedBytes reference it).
    void reset();

private:
    friend class GatedPool;
    GatedBuffer(GatedPool* pool, uint32_t slot) : pool_(pool), slot_(slot) {}

    GatedPool* pool_ = nullptr;
    uint32_t slot_ = 0;
};

class GatedPool {
public:
    // How slots sit in the release view.
    //   packed    one VMA for the pool; release() opens only the pages a range touches, so a slot
    //             can go on receiving on the pages after it. Every partial release splits the VMA
    //             and every re-gate merges it back: two VMA edits per release on top of mprotect.
    //   isolated  every slot its own VMA (an unmapped guard page between neighbours keeps the
    //             kernel from merging them); release() opens the WHOLE slot at once, so the caller
    //             must be done writing into it (writable_begin() becomes size()). No VMA is ever
    //             split or merged: for small reads (a request, a response) that halves the gate's
    //             cost. Costs two VMAs per slot for the pool's lifetime (vm.max_map_count).
    enum class Layout { packed, isolated };

    // slot_size is rounded up to the page size. Not movable: buffers and handles point at it.
    static Result<std::unique_ptr<GatedPool>> create(size_t slot_size, size_t slots, Layout layout = Layout::packed);
    ~GatedPool();
    GatedPool(const GatedPool&) = delete;
    GatedPool& operator=(const GatedPool&) = delete;

    // A free slot, or ENOBUFS when none is free: the caller applies back-pressure (stop reading).
    // Slots promised to waiters (below) are not free for this.
    Result<GatedBuffer> acquire();
    // The same for a party that waits when there is none: the slot promised to `w` if it holds a
    // promise, else a free one, else ENOBUFS and `w` waits at the tail of the pool's queue. When a
    // slot comes back, the oldest waiter is promised it, and wake_waiters() calls it back
    // (slot_waiters.hpp): FIFO, one waiter per slot, nothing run from inside the slot's release.
    Result<GatedBuffer> acquire(SlotWait& w);
    // The owner's safe point, between two loop turns: wakes the waiters promised a slot. Returns
    // how many were woken.
    size_t wake_waiters() { return waiters_.wake(); }
    // Retries the re-gate of quarantined slots while somebody waits: those waiters get no slot
    // back otherwise when nothing else is in use. Cheap when nothing is quarantined or waits.
    void retry_quarantined();
    // Waiters without a promise yet, and free slots promised and not yet claimed.
    size_t waiting() const { return waiters_.queued(); }
    size_t promised() const { return waiters_.promised(); }

    size_t slot_size() const { return slot_size_; }
    Layout layout() const { return layout_; }
    size_t slots() const { return slots_.size(); }
    size_t slots_in_use() const { return in_use_; }
    size_t quarantined() const { return quarantined_.size(); }
    uint64_t mprotect_calls() const { return mprotect_calls_; }

    // True when p points into the release view: a cheap check for debug assertions downstream
    // ("this iovec points at verified bytes").
    bool in_release_view(const void* p) const;

private:
    friend class GatedBuffer;
    friend class VerifiedBytes;

    struct Slot {
        uint32_t refs = 0;          // 1 for the GatedBuffer while it lives + 1 per VerifiedBytes
        size_t released_end = 0;    // end offset of the last release(); 0 = nothing released
        size_t dirty_end = 0;       // bytes [0, dirty_end) may be non-zero in the ingest view
        size_t receiving_end = 0;   // end of the receive_into() span awaiting received()
    };

    GatedPool(UniqueFd fd, Mapping ingest, Mapping release, Layout layout, size_t slot_size, size_t stride,
              size_t slots, size_t page);

    uint8_t* ingest_at(uint32_t slot, size_t offset) const {
        return ingest_.data() + static_cast<size_t>(slot) * slot_size_ + offset;
    }
    const uint8_t* release_at(uint32_t slot, size_t offset) const {
        return release_.data() + static_cast<size_t>(slot) * release_stride_ + offset;
    }
    size_t page_floor(size_t n) const { return n & ~(page_ - 1); }
    size_t page_ceil(size_t n) const { return (n + page_ - 1) & ~(page_ - 1); }
    size_t writable_begin(uint32_t slot) const {
        const size_t end = slots_[slot].released_end;
        return layout_ == Layout::isolated && end != 0 ? slot_size_ : page_ceil(end);
    }
    Result<std::span<uint8_t>> writable(uint32_t slot, size_t offset, size_t len);

    int protect(uint32_t slot, size_t begin, size_t end, int prot);
    // Free slots nobody was promised.
    bool has_unpromised() const { return free_.size() > waiters_.promised(); }
    // Re-gates the newest quarantined slot; true when it went back to the free list.
    bool regate_one();
    GatedBuffer take();
    void ref(uint32_t slot) { ++slots_[slot].refs; }
    void unref(uint32_t slot);
    void recycle(uint32_t slot);

    UniqueFd fd_;
    Mapping ingest_;   // unmapped before fd_ closes (members die in reverse order); either is fine
    Mapping release_;  // packed: the slots back to back; isolated: slots with a guard page after each
    Layout layout_;
    size_t slot_size_;
    size_t release_stride_;  // distance between two slots in the release view
    size_t page_;
    std::vector<Slot> slots_;
    std::vector<uint32_t> free_;  // LIFO: the most recently scrubbed slot is warm in cache and TLB
    size_t in_use_ = 0;
    // Slots whose re-gate failed (e.g. ENOMEM past vm.max_map_count): never handed out readable.
    // acquire() retries the re-gate when no other slot is free, so a passing failure loses nothing.
    std::vector<uint32_t> quarantined_;
    uint64_t mprotect_calls_ = 0;
    SlotWaiters waiters_;  // declared last: detached first, before the slots they wait for go
};

// A worker's two pools: `bulk` (packed, big slots) for streams, `burst` (isolated slots of one
// record) for the first read after a connection was idle, where a request or a response usually
// fits whole and the cheaper whole-slot gate matters more than room to go on receiving.
struct GatedPools {
    GatedPool& bulk;
    GatedPool& burst;
};

}  // namespace ztp::io
