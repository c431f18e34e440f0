// The userspace record layer's end towards the client (relay_core/direction.hpp):
//   SealingSink   plan → sealed TLS records → client socket: io_uring SENDMSG of a batch of records
//                 (and our control records: KeyUpdate, close_notify, a fatal alert) in an
//                 io::InFlight op record that holds every buffer the send reads until it completed.
//                 A plan segment that already lies in a record slot (SlotSource below) is sealed
//                 where it lies; anything else (a redaction stage's output) is copied into the
//                 slots of a pooled record buffer first: sealing needs contiguous plaintext.
//   SlotSource    backend socket → record slots (plain routes): io_uring RECVMSG straight into the
//                 slots of a record buffer the sink lends, between the room for each record's
//                 header and its tag, so the sink seals in place: no copy on this direction.
//
// One record buffer per connection at a time: the sink lends the next one only once the last one
// died (its records left, or nothing was received into it), so the backend is not read while
// sealed records are on their way (back-pressure), and an idle connection holds none.
#pragma once

#include <sys/socket.h>

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "crypto/record_layer.hpp"
#include "proxy/conn/relay_core/direction.hpp"
#include "proxy/conn/relay_core/readiness_wait.hpp"
#include "proxy/io/lease.hpp"

namespace ztp::conn::core {

// Where the records of a batch lie in a record buffer: slot i's plaintext starts at
// i * stride + headroom, with the writer's headroom before it and its tailroom after.
struct RecordSlots {
    size_t count = 0;
    size_t stride = 0;
    size_t headroom = 0;
    size_t payload = 0;  // the writer's max_plaintext (max_fragment_length)
};

class SealingSink final : public Sink {
public:
    SealingSink(RelayHost& host, Direction& dir, crypto::RecordWriter writer, int fd, size_t slots, uint8_t send_tag);

    void pump() override;
    size_t held_segments() const override { return plan_.iovecs().size(); }
    // Once our close_notify is sealed nothing can be cut off any more: it travels behind the rest.
    bool holds_bytes() const override { return !close_notify_sealed_ && (send_.pending() || !plan_.empty()); }
    void goodbye() override;
    bool on_completion(uint8_t tag, int res);

    const RecordSlots& slots() const { return slots_; }
    // A record buffer for a SlotSource to receive into, or null while the last one lent lives.
    std::shared_ptr<io::BufferLease> lend();

    // The client asked for our KeyUpdate (RFC 8446 §4.6.3): it goes out before the next application
    // data, alone if nothing else is ready.
    void answer_key_update();
    // Ends the relay with a fatal alert to the client, behind the records already on their way (the
    // client could not decrypt it otherwise); `reason` is reported once it is out.
    void fatal_alert(uint8_t description, const char* reason, const std::string& detail);

private:
    struct Send {
        std::shared_ptr<io::BufferLease> in_place;  // the lent buffer, when records were sealed in it
        io::BufferLease copies;                     // records copied out of the plan
        std::array<uint8_t, 64> control{};   // our KeyUpdate in front, close_notify or alert at the end
        std::vector<iovec> iov;
        size_t next = 0;                     // first iovec not yet sent in full
        msghdr msg{};
        bool close_notify = false;
        bool alert = false;
    };
    // Slot index of a plan segment that is the plaintext of a slot of the lent buffer, or -1.
    long in_slot(const iovec& v) const;
    bool seal_records(Send& s);
    void start(Send& s);
    void send_alert();

    RelayHost& host_;
    Direction& dir_;
    crypto::RecordWriter writer_;
    int fd_;
    RecordSlots slots_;
    io::InFlight<Send> send_;
    redact::RewritePlan plan_;  // taken from the direction, not yet sealed
    std::weak_ptr<io::BufferLease> lent_;
    bool key_update_owed_ = false;
    bool close_notify_sealed_ = false;
    // A fatal alert waits for the send in flight; the relay fails (alert_reason_) once it is out.
    bool alert_owed_ = false;
    std::array<uint8_t, 64> alert_record_{};
    size_t alert_len_ = 0;
    const char* alert_reason_ = nullptr;
    std::string alert_detail_;
};

class SlotSource final : public Source {
public:
    SlotSource(RelayHost& host, Direction& dir, SealingSink& sink, int fd, uint8_t recv_tag, uint8_t poll_tag)
        : host_(host), dir_(dir), sink_(sink), fd_(fd), recv_(&host.completion_target(), recv_tag),
          ready_(host, fd, poll_tag) {}
    void pump() override;
    bool on_completion(uint8_t tag, int res);

private:
    struct Recv {
        std::shared_ptr<io::BufferLease> buf;  // the record buffer the kernel writes into
        size_t len = 0;                        // bytes asked for
        std::vector<iovec> iov;
        msghdr msg{};
    };
    RelayHost& host_;
    Direction& dir_;
    SealingSink& sink_;
    int fd_;
    io::InFlight<Recv> recv_;
    ReadinessWait ready_;
};

}  // namespace ztp::conn::core
