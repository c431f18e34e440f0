// GatedSource: the userspace record layer's reader as the source of the client → backend direction
// (relay_core/direction.hpp). Ciphertext is received (io_uring RECV) into a GatedBuffer's ingest
// view and decrypted there in place. Only once every record of the batch has verified are their
// pages released (one mprotect) and the plaintext delivered to the direction straight out of the
// read-only release view: no copy, and no unverified byte is ever readable elsewhere. A trailing
// partial record's ciphertext is moved off the pages before they are released.
//
// The gated slot being received into sits in the receive's op record while the kernel writes it;
// verified batches keep their slot alive through the plan (VerifiedBytes) until they were sent.
// Idle connections hold no slot: with nothing partially received, the source waits for readiness
// first and takes a slot only once bytes are there; those are read at once, in the loop turn the
// readiness completed in (a non-blocking recv, not a second io_uring submission). When every slot
// of the worker is busy, the client is not read (back-pressure, never a failure): it waits in the
// pool's queue (io::SlotWait), and when a slot comes back the oldest waiter is promised it and woken
// at the worker's next safe point, as the completion of its slot tag (so the connection's rules
// for completions apply: none reaches a relay that is closing).
//
// Control records: close_notify ends the input; other alerts end the relay; TLS 1.3 KeyUpdate
// rekeys the reader (rate-limited) and, when the client asks, the sealing sink answers with ours.
// A bad record ends the input after the verified records before it (their refusal runs once those
// reached the backend), with the fatal alert the sealing sink sends behind what is in flight.
#pragma once

#include <string>
#include <variant>
#include <vector>

#include "crypto/record_layer.hpp"
#include "proxy/conn/relay_core/direction.hpp"
#include "proxy/conn/relay_core/sealing.hpp"
#include "proxy/io/gated_pool.hpp"
#include "proxy/io/lease.hpp"

namespace ztp::conn::core {

class GatedSource final : public Source {
public:
    // Rule routes: verified batches up to this size are copied out of their gated slot into the
    // direction's small chunk, so held-back bytes never pin a slot.
    static constexpr size_t kCopyBelow = 512;

    struct Tags {
        uint8_t recv, readable;
        uint8_t slot_free;  // a slot was promised to this source (no io_uring op: see above)
    };
    GatedSource(RelayHost& host, Direction& dir, SealingSink& replies, io::GatedPools pools,
                crypto::RecordReader reader, config::TlsVersion version, int fd, Tags tags);

    void pump() override;
    bool on_completion(uint8_t tag, int res);

private:
    struct Recv {
        io::GatedBuffer slot;  // the kernel writes into its ingest view
        size_t len = 0;        // bytes asked for
    };
    struct Span {
        size_t offset;
        size_t size;
    };
    bool may_read() const;
    // The current slot's room for the next receive (a fresh slot when it has too little), or empty.
    std::span<uint8_t> receive_space();
    void read_now();
    void on_recv(int res);
    // A receive of `asked` bytes into the current slot's room completed with `res`.
    void received(int res, size_t asked);
    void slot_promised();
    // A slot promised to us, else a free one; else we wait in the pools' queues.
    Result<io::GatedBuffer> take_slot(bool burst);
    // Waiting for a slot, and none promised yet.
    bool waiting_for_slot() const {
        return (slot_wait_.queued() || burst_wait_.queued()) && !slot_wait_.granted() && !burst_wait_.granted();
    }
    bool switch_slot(size_t keep_from);
    void process_records();
    void forward(io::GatedBuffer& slot, size_t begin, size_t end);
    bool handle_control(const crypto::OpenedRecord& rec, std::span<uint8_t> record);
    void bad_record(const std::string& detail);
    void refuse_record(crypto::RecordError e, const std::string& detail);  // crypto/record_errors.hpp row
    void refused_header(uint8_t alert, const Error& e);
    void fail(const char* reason, const std::string& detail) { dir_.fail(reason, detail); }

    RelayHost& host_;
    Direction& dir_;
    SealingSink& replies_;     // our KeyUpdate answers and fatal alerts
    io::GatedPool& pool_;      // bulk: slots to go on receiving into while a stream flows
    io::GatedPool& burst_pool_;  // one record, gated whole: the first read after an idle wait
    crypto::RecordReader reader_;
    crypto::PostHandshakeParser post_handshake_;
    crypto::KeyUpdateLimiter key_updates_;
    int fd_;

    io::InFlight<Recv> recv_;
    io::InFlight<std::monostate> wait_;           // readiness, holding nothing
    uint8_t slot_free_tag_;
    // In the pools' queues while no slot is free (the burst pool's only when a burst slot would
    // do); each leaves its queue when destroyed.
    io::SlotWait slot_wait_;
    io::SlotWait burst_wait_;
    bool readable_ = false;  // a recv that filled what it asked for: more is likely queued
    bool woke_ = false;      // the next slot is for the first read after a readiness wait
    size_t last_recv_bytes_ = 0;  // what the last recv got: request-sized or a stream

    io::GatedBuffer in_;
    size_t parse_off_ = 0;  // first byte not yet decrypted
    size_t fill_ = 0;       // end of received ciphertext
    bool eof_ = false;      // close_notify or FIN: nothing after it is parsed
    std::vector<uint8_t> parked_tail_;  // a partial record's ciphertext waiting for a free slot
    std::vector<Span> spans_;           // application data of the batch being processed (reused)
};

}  // namespace ztp::conn::core
