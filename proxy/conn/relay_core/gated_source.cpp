#include "proxy/conn/relay_core/gated_source.hpp"

#include <poll.h>

#include <cstring>
#include <functional>
#include <memory>

#include "proxy/conn/client_records.hpp"
#include "proxy/conn/stats.hpp"

namespace ztp::conn::core {

namespace {

// The most one record of our AEAD suites can occupy on the wire (the reader refuses longer ones):
// a slot must always have room for a whole record after the first undecrypted byte.
constexpr size_t kMaxWireRecord = crypto::kRecordMaxSize;

}  // namespace

GatedSource::GatedSource(RelayHost& host, Direction& dir, SealingSink& replies, io::GatedPools pools,
                         crypto::RecordReader reader, config::TlsVersion version, int fd, Tags tags)
    : host_(host),
      dir_(dir),
      replies_(replies),
      pool_(pools.bulk),
      burst_pool_(pools.burst),
      reader_(std::move(reader)),
      post_handshake_(version, crypto::PostHandshakeParser::Sender::client),
      // The per-second cap is the flood defence; a client may legitimately rekey twice in a row.
      key_updates_(crypto::KeyUpdateLimiter::Limits{8, 0}),
      fd_(fd),
      recv_(&host.completion_target(), tags.recv),
      wait_(&host.completion_target(), tags.readable),
      slot_free_tag_(tags.slot_free),
      slot_wait_([this] { slot_promised(); }),
      burst_wait_([this] { slot_promised(); }) {}

bool GatedSource::on_completion(uint8_t tag, int res) {
    if (tag == recv_.tag()) {
        on_recv(res);
    } else if (tag == wait_.tag()) {
        wait_.finish();
        readable_ = res >= 0;
        woke_ = res >= 0;
        if (res < 0 && res != -ECANCELED) fail("client_error", "poll: " + std::string(std::strerror(-res)));
        if (res >= 0) read_now();
    } else if (tag != slot_free_tag_) {
        return false;
    }
    dir_.kick();
    return true;
}

void GatedSource::slot_promised() {
    // Called by the pool's wake_waiters(), at the worker's safe point (no connection's code on the
    // stack). Delivered like a completion of this connection's (one in flight for the moment it
    // takes), so a connection that is closing ignores it, exactly as it ignores late completions;
    // the promise it leaves unclaimed passes to the next waiter.
    host_.op_submitted();
    host_.completion_target().on_completion(slot_free_tag_, 0, 0);
}

bool GatedSource::may_read() const {
    // Back-pressure: a verified batch waits behind the one the backend is taking, and without a
    // free slot nothing is read until one was promised to us.
    return dir_.reading() && !recv_.pending() && !wait_.pending() && !waiting_for_slot() && !dir_.full();
}

std::span<uint8_t> GatedSource::receive_space() {
    // Room for a whole record after the first undecrypted byte, else continue in a fresh slot.
    if (!in_.valid() || in_.size() - parse_off_ < kMaxWireRecord) {
        if (!switch_slot(parse_off_)) return {};
    }
    auto space = in_.receive_into(fill_);
    if (!space) {
        fail("internal_error", "gated buffer: " + space.error().message());
        return {};
    }
    return *space;  // empty only if a whole record were buffered but incomplete: cannot happen
}

void GatedSource::pump() {
    if (!may_read()) return;
    if (fill_ == parse_off_ && parked_tail_.empty() && !readable_) {
        // Nothing partial: give the slot back while we wait (verified batches keep their own
        // reference), and take one again when the client has sent something.
        in_.reset();
        parse_off_ = fill_ = 0;
        host_.op_submitted();
        host_.loop().poll(wait_.start(), fd_, POLLIN);
        return;
    }
    auto space = receive_space();
    if (space.empty()) return;
    Recv& r = recv_.body();
    r.len = space.size();
    r.slot = std::move(in_);  // the kernel's until the receive completes
    host_.op_submitted();
    host_.loop().recv(recv_.start(), fd_, space.data(), space.size());
}

void GatedSource::read_now() {
    // The client's readiness just completed: its bytes are there, so they are read in this loop
    // turn (a non-blocking recv) instead of through a second submission and loop turn.
    if (!may_read()) return;
    auto space = receive_space();
    if (space.empty()) return;
    const long res = host_.loop().recv_now(fd_, space.data(), space.size());
    if (res == -EAGAIN || res == -EWOULDBLOCK || res == -EINTR) {
        in_.received(fill_, 0);  // nothing was written
        readable_ = res == -EINTR;  // EAGAIN: the readiness was spurious, wait for it again
        return;
    }
    received(static_cast<int>(res), space.size());
}

bool GatedSource::switch_slot(size_t keep_from) {
    // After an idle wait with nothing partial, a burst slot: a request usually fits one record,
    // and a whole-slot gate costs about half of a partial one. Not when the read before the wait
    // was bigger than a burst slot: a stream that drained the socket for a moment goes on in bulk
    // slots, rather than paying a gate round and a tail copy for one record. When no burst slot is
    // free, bulk serves. A bulk slot promised to us is taken first: it is ours.
    const bool burst = std::exchange(woke_, false) && (!in_.valid() || fill_ == keep_from) &&
                       last_recv_bytes_ < burst_pool_.slot_size() && !slot_wait_.granted();
    auto fresh = take_slot(burst);
    if (!fresh) {
        // Every slot of the worker is busy: stop reading this client (back-pressure) until a slot
        // is promised to it, in the order the clients began to wait. Never a failure: other
        // connections' load must not end this one.
        woke_ = woke_ || burst;
        bump(stats().gated_slot_waits);
        return false;
    }
    size_t tail = in_.valid() ? fill_ - keep_from : 0;
    if (!parked_tail_.empty()) {
        // A partial record's ciphertext that waited off-slot for a free one.
        auto to = fresh->ingest_range(0, parked_tail_.size());
        if (!to) {
            fail("internal_error", "gated buffer: " + to.error().message());
            return false;
        }
        std::memcpy(to->data(), parked_tail_.data(), parked_tail_.size());
        tail = parked_tail_.size();
        parked_tail_.clear();
    } else if (tail > 0) {
        // Only ciphertext moves here (nothing of it was decrypted yet), from pages not released.
        auto from = in_.ingest_range(keep_from, tail);
        auto to = fresh->ingest_range(0, tail);
        if (!from || !to) {
            fail("internal_error", "gated buffer: " + (from ? to.error() : from.error()).message());
            return false;
        }
        std::memcpy(to->data(), from->data(), tail);
    }
    in_ = std::move(fresh).value();
    parse_off_ = 0;
    fill_ = tail;
    return true;
}

Result<io::GatedBuffer> GatedSource::take_slot(bool burst) {
    // Waiting for a burst slot, we wait for a bulk one too: whichever pool gives one back first.
    auto fresh = burst ? burst_pool_.acquire(burst_wait_) : pool_.acquire(slot_wait_);
    if (!fresh && burst) fresh = pool_.acquire(slot_wait_);
    if (fresh) {
        // Out of both queues; a promise the other pool made us goes to its next waiter.
        slot_wait_.leave();
        burst_wait_.leave();
    }
    return fresh;
}

void GatedSource::on_recv(int res) {
    Recv done = recv_.finish();
    in_ = std::move(done.slot);
    if (dir_.failed() || res == -ECANCELED) return;
    received(res, done.len);
}

void GatedSource::received(int res, size_t asked) {
    if (res < 0)
        return fail(res == -ECONNRESET || res == -EPIPE ? "client_reset" : "client_error",
                    std::string("recv from client: ") + std::strerror(-res));
    in_.received(fill_, static_cast<size_t>(res));  // the kernel wrote exactly res bytes at fill_
    if (res == 0) {  // FIN without close_notify: treated as the end of the client's stream
        eof_ = true;
        in_.reset();
        return dir_.input_ended("client_close");
    }
    fill_ += static_cast<size_t>(res);
    readable_ = static_cast<size_t>(res) == asked;
    last_recv_bytes_ = static_cast<size_t>(res);
    host_.activity();
    process_records();
}

void GatedSource::process_records() {
    const size_t base = parse_off_;
    auto region = in_.ingest_range(base, fill_ - base);
    if (!region) return fail("internal_error", "gated buffer: " + region.error().message());
    spans_.clear();
    size_t off = base;
    // A bad record ends the client's stream, but the verified records before it in the same read
    // are forwarded first, as on the kernel and OpenSSL paths (which deliver record by record);
    // the refusal (and the client's alert) comes once they reached the backend.
    std::function<void()> refusal;
    while (!eof_ && fill_ - off >= crypto::kRecordHeaderSize) {
        auto rest = region->subspan(off - base, fill_ - off);
        uint8_t alert = 0;
        auto need = reader_.record_size(rest, &alert);
        if (!need) {
            refusal = [this, alert, e = need.error()] { refused_header(alert, e); };
            break;
        }
        if (*need > rest.size()) break;
        auto record = rest.first(*need);
        auto opened = reader_.open_in_place(record);
        if (!opened) {
            // The reader scrubbed what it decrypted of the record; the records before it verified.
            if (auto e = reader_.failure()) {
                refusal = [this, e = *e, detail = "record: " + opened.error().message()] { refuse_record(e, detail); };
                break;
            }
            return fail("client_error", "record: " + opened.error().message());
        }
        if (opened->type == crypto::ContentType::application_data) {
            if (auto r = post_handshake_.on_other_record(); !r) {
                refusal = [this] {
                    refuse_record(crypto::RecordError::handshake_interleaved, "data inside a split handshake message");
                };
                break;
            }
            if (opened->plaintext_size > 0) spans_.push_back({off + opened->plaintext_offset, opened->plaintext_size});
        } else if (!handle_control(*opened, record)) {
            return;
        }
        off += *need;
    }
    // Nothing after close_notify counts (RFC 8446 §6.1), nothing after a bad record can: drop it.
    if (eof_ || refusal) fill_ = off;
    parse_off_ = off;
    if (!spans_.empty()) {
        // Every record of the batch verified. Before their pages become readable, the ciphertext
        // of a trailing partial record must leave them (gated_pool.hpp, contract 3).
        const size_t begin = spans_.front().offset;
        const size_t end = spans_.back().offset + spans_.back().size;
        const size_t released_to = in_.writable_after_release(end);
        io::GatedBuffer releasing;  // the slot the batch lives in, if the tail moves to a fresh one
        if (parse_off_ < released_to) {
            size_t tail = fill_ - parse_off_;
            if (tail == 0 && released_to == in_.size()) {
                // Nothing to keep and no room left after the release: the slot's only job now is
                // to hold the batch until it is sent; the next read takes a new one.
                releasing = std::move(in_);
                in_ = io::GatedBuffer();
                parse_off_ = fill_ = 0;
            } else if (released_to + kMaxWireRecord <= in_.size()) {
                auto to = in_.ingest_range(released_to, tail);
                if (!to) return fail("internal_error", "gated buffer: " + to.error().message());
                std::memmove(to->data(), region->data() + (parse_off_ - base), tail);
                parse_off_ = released_to;
                fill_ = released_to + tail;
            } else {
                releasing = std::move(in_);
                in_ = io::GatedBuffer();
                auto fresh = pool_.acquire();
                const uint8_t* from = region->data() + (parse_off_ - base);
                if (!fresh) {
                    // No free slot for it: the tail's ciphertext (never decrypted, not secret)
                    // waits on the heap until one is free (switch_slot), and the batch goes on.
                    parked_tail_.assign(from, from + tail);
                    parse_off_ = fill_ = 0;
                } else {
                    auto to = fresh->ingest_range(0, tail);
                    if (!to) return fail("internal_error", "gated buffer: " + to.error().message());
                    std::memcpy(to->data(), from, tail);
                    in_ = std::move(fresh).value();
                    parse_off_ = 0;
                    fill_ = tail;
                }
            }
        }
        forward(releasing.valid() ? releasing : in_, begin, end);
    }
    dir_.end_pass(!readable_);
    if (refusal) {
        dir_.input_refused(std::move(refusal));
    } else if (eof_) {
        in_.reset();  // nothing after close_notify is read; the verified batches hold their slots
        dir_.input_ended("client_close");
    }
}

void GatedSource::forward(io::GatedBuffer& slot, size_t begin, size_t end) {
    auto verified = slot.release(begin, end);
    if (!verified) return fail("internal_error", "gated buffer release: " + verified.error().message());
    // Rule routes: a small batch is copied into the direction's small chunk and its slot goes back
    // at once. The stage may hold such bytes back for as long as the client pauses, and a few
    // hundred copied bytes cost less than a pinned slot (a slow typist would pin one per
    // keystroke). That chunk rolls over when its tail gets short, but while held-back bytes still
    // reference it no other can be taken (one chunk); the batch then gets a heap piece of its own,
    // exactly its size: the held bytes are at most the rules' hold-back (<= 4 KiB + 1), and what is
    // queued is bounded by the segment cap, so this stays small where a slot would be 16-256 KiB.
    const bool copy = dir_.rewrites() && end - begin <= kCopyBelow;
    for (const auto& sp : spans_) {
        const uint8_t* from = verified->data() + (sp.offset - begin);
        if (!copy) {
            dir_.deliver(redact::SharedBytes(verified->slice(sp.offset - begin, sp.size)));
            continue;
        }
        dir_.counters().copied_up += sp.size;
        if (auto room = dir_.room(); room.size() >= sp.size) {
            std::memcpy(room.data(), from, sp.size);
            dir_.received(sp.size);
            continue;
        }
        auto piece = std::make_shared<uint8_t[]>(sp.size);
        std::memcpy(piece.get(), from, sp.size);
        dir_.deliver(redact::SharedBytes::adopt(piece, {piece.get(), sp.size}));
    }
}

bool GatedSource::handle_control(const crypto::OpenedRecord& rec, std::span<uint8_t> record) {
    auto plaintext = std::span<const uint8_t>(record.data() + rec.plaintext_offset, rec.plaintext_size);
    switch (rec.type) {
        case crypto::ContentType::alert: {
            if (auto r = post_handshake_.on_other_record(); !r) {
                refuse_record(crypto::RecordError::handshake_interleaved, "alert inside a split handshake message");
                return false;
            }
            auto alert = crypto::parse_alert(plaintext);
            if (alert && alert->description == crypto::kAlertCloseNotify) {
                eof_ = true;  // the direction's input ends once the batch before it is queued
                return true;
            }
            fail("client_alert", alert ? "client sent alert " + std::to_string(alert->description) : "malformed alert");
            return false;
        }
        case crypto::ContentType::handshake: {
            auto events = post_handshake_.feed(plaintext);
            if (!events) {
                refuse_record(post_handshake_.failure().value_or(crypto::RecordError::unexpected_handshake_message),
                              "post-handshake message: " + events.error().message());
                return false;
            }
            if (events->key_update) {
                // A peer can send KeyUpdates back to back; each costs us a key derivation.
                if (!key_updates_.allow(reader_.seq())) {
                    fail("key_update_flood", "client exceeded the KeyUpdate rate limit");
                    return false;
                }
                bump(stats().key_updates);
                if (auto r = reader_.rekey(); !r) {
                    fail("client_error", "KeyUpdate: " + r.error().message());
                    return false;
                }
                if (events->update_requested) replies_.answer_key_update();
            }
            return true;
        }
        default:
            fail("client_error", "unexpected record type " + std::to_string(static_cast<int>(rec.type)));
            return false;
    }
}

void GatedSource::bad_record(const std::string& detail) {
    // Nothing of the record was released (what was decrypted of it is scrubbed). Tell the client why.
    bump(stats().bad_records);
    replies_.fatal_alert(crypto::kAlertBadRecordMac, "bad_record", detail);
}

void GatedSource::refuse_record(crypto::RecordError e, const std::string& detail) {
    const auto& row = crypto::describe(e);
    note_relay_close(row.close_reason);
    replies_.fatal_alert(row.alert, row.close_reason, detail);
}

void GatedSource::refused_header(uint8_t alert, const Error& e) {
    if (alert == crypto::kAlertBadRecordMac) return bad_record("malformed record: " + e.message());
    if (alert == 0) return fail("client_error", "malformed record: " + e.message());  // reader poisoned
    // Framing is lost: nothing of the record was decrypted, and nothing after it can be located.
    bump(stats().malformed_records);
    replies_.fatal_alert(alert, e.code == EMSGSIZE ? "record_overflow" : "malformed_record",
                         "malformed record: " + e.message());
}

}  // namespace ztp::conn::core
