#include "proxy/conn/userspace_relay.hpp"

#include <limits.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cstring>
#include <functional>

#include "proxy/conn/client_records.hpp"
#include "proxy/conn/stats.hpp"

namespace ztp::conn {

namespace {

// The most one record of our AEAD suites can occupy on the wire (the reader refuses longer ones):
// a slot must always have room for a whole record after the first undecrypted byte.
constexpr size_t kMaxWireRecord = crypto::kRecordMaxSize;

}  // namespace

UserspaceRelay::UserspaceRelay(RelayHost& host, io::GatedPools pools, crypto::RecordReader reader,
                               crypto::RecordWriter writer, config::TlsVersion version, int client_fd,
                               int backend_fd, size_t buffer_size, RedactionStage up, RedactionStage down)
    : host_(host),
      ending_(host),
      pool_(pools.bulk),
      burst_pool_(pools.burst),
      reader_(std::move(reader)),
      writer_(std::move(writer)),
      post_handshake_(version, crypto::PostHandshakeParser::Sender::client),
      // The per-second cap is the flood defence; a client may legitimately rekey twice in a row.
      key_updates_(crypto::KeyUpdateLimiter::Limits{8, 0}),
      client_(client_fd),
      backend_(backend_fd),
      op_client_recv_{&host.completion_target(), kClientRecv},
      op_client_readable_{&host.completion_target(), kClientReadable},
      op_backend_readable_{&host.completion_target(), kBackendReadable},
      op_slot_retry_{&host.completion_target(), kSlotRetry},
      // The direction's one chunk is the small buffer small verified batches are copied into.
      up_(host, ending_, counters_, core::DirectionConfig{true, kSmallBuffer, kCopyBelow, 1, kMaxSegments, nullptr},
          std::move(up), kUpQuiet),
      client_records_(*this),
      backend_out_(host, up_, backend_fd, kBackendSend),
      backend_recv_(&host.completion_target(), kBackendRecv),
      client_send_(&host.completion_target(), kClientSend),
      down_stage_(std::move(down)),
      down_quiet_(io::Op{&host.completion_target(), kDownQuiet}),
      down_chunks_(0, 0, 0) {
    // Fits a record of any of our suites. The slots live in the worker's pooled buffers, whose
    // size was fixed when the worker started (a reload may have changed the configured size).
    // Plain routes seal a batch of at least kBatchRecords per recvmsg/sendmsg pair; rule routes
    // keep the configured size (their backend bytes go through a separately allocated chunk).
    stride_ = crypto::kRecordMaxSize;
    const size_t batch = down_stage_.rewrites() ? buffer_size
                                                : std::max(buffer_size, kBatchRecords * crypto::kRecordMaxPlaintext);
    record_slots_ = std::clamp<size_t>(batch / crypto::kRecordMaxPlaintext, 1, host.buffers().buffer_size() / stride_);
    // Rule routes towards the client: chunks of one batch; held-back bytes pin at most a few.
    down_chunks_ = io::ChunkArena(record_slots_ * crypto::kRecordMaxPlaintext, crypto::kRecordMaxPlaintext,
                                  kMaxDownChunks);
    up_.attach(client_records_, backend_out_);
}

void UserspaceRelay::start() {
    up_.kick();
    pump_backend_recv();
}

void UserspaceRelay::on_completion(uint8_t tag, int res) {
    switch (tag) {
        case kClientRecv: client_recv_inflight_ = false; return on_client_recv(res);
        case kBackendSend: backend_out_.on_completion(tag, res); return;
        case kBackendRecv: return on_backend_recv(res);
        case kClientSend: return on_client_send(res);
        case kClientReadable:
            client_poll_inflight_ = false;
            client_readable_ = res >= 0;
            client_woke_ = res >= 0;
            if (res < 0 && res != -ECANCELED) return fail("client_error", "poll: " + std::string(std::strerror(-res)));
            return up_.kick();
        case kUpQuiet: return up_.on_quiet();
        case kDownQuiet:
            if (failed() || !down_quiet_.fired(host_, down_feeds_, down_stage_)) return;
            if (auto f = down_stage_.flush(down_plan_); !f)
                return fail("internal_error", "redaction: " + f.error().message());
            fill_records_from_plan();  // the released tail goes into record slots to be sealed
            return flush_down();
        case kSlotRetry:
            slot_wait_ = false;
            return up_.kick();
        case kBackendReadable:
            backend_poll_inflight_ = false;
            backend_readable_ = res >= 0;
            if (res < 0 && res != -ECANCELED) return fail("backend_reset", "poll: " + std::string(std::strerror(-res)));
            return pump_backend_recv();
    }
}

// ---------------------------------------------------------------------------- client → backend

void UserspaceRelay::wait_for_slot() {
    if (slot_wait_) return;
    slot_wait_ = true;
    bump(stats().gated_slot_waits);
    // Slots come back when other connections' batches were sent: a short timer, not a wake-up
    // list, keeps the pool free of callbacks into connections from inside a slot's release.
    slot_retry_ts_ = {0, kSlotRetryAfter.count() * 1'000'000};
    host_.op_submitted();
    host_.loop().timeout(&op_slot_retry_, &slot_retry_ts_);
}

void UserspaceRelay::pump_client_recv() {
    // Back-pressure: a verified batch waits behind the one the backend is taking.
    if (!up_.reading() || client_recv_inflight_ || client_poll_inflight_ || up_.full()) return;
    if (slot_wait_) return;  // back-pressure: no free slot yet
    if (fill_ == parse_off_ && parked_tail_.empty() && !client_readable_) {
        // Nothing partial: give the slot back while we wait (verified batches keep their own
        // reference), and take one again when the client has sent something.
        in_.reset();
        parse_off_ = fill_ = 0;
        client_poll_inflight_ = true;
        host_.op_submitted();
        host_.loop().poll(&op_client_readable_, client_, POLLIN);
        return;
    }
    // Room for a whole record after the first undecrypted byte, else continue in a fresh slot.
    if (!in_.valid() || in_.size() - parse_off_ < kMaxWireRecord) {
        if (!switch_slot(parse_off_)) return;
    }
    auto space = in_.receive_into(fill_);
    if (!space) return fail("internal_error", "gated buffer: " + space.error().message());
    if (space->empty()) return;  // a whole record is buffered but not yet complete: cannot happen
    client_recv_inflight_ = true;
    last_client_recv_size_ = space->size();
    host_.op_submitted();
    host_.loop().recv(&op_client_recv_, client_, space->data(), space->size());
}

bool UserspaceRelay::switch_slot(size_t keep_from) {
    // After an idle wait with nothing partial, a burst slot: a request usually fits one record,
    // and a whole-slot gate costs about half of a partial one. Not when the read before the wait
    // was bigger than a burst slot: a stream that drained the socket for a moment goes on in bulk
    // slots, rather than paying a gate round and a tail copy for one record. When no burst slot is
    // free, bulk serves.
    const bool burst = std::exchange(client_woke_, false) && (!in_.valid() || fill_ == keep_from) &&
                       last_client_recv_bytes_ < burst_pool_.slot_size();
    auto fresh = burst ? burst_pool_.acquire() : pool_.acquire();
    if (!fresh && burst) fresh = pool_.acquire();
    if (!fresh) {
        // Every slot of the worker is busy: stop reading this client (back-pressure) and try again
        // shortly. Never a failure: other connections' load must not end this one.
        client_woke_ = client_woke_ || burst;
        wait_for_slot();
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

void UserspaceRelay::on_client_recv(int res) {
    if (failed() || res == -ECANCELED) return;
    if (res < 0)
        return fail(res == -ECONNRESET || res == -EPIPE ? "client_reset" : "client_error",
                    std::string("recv from client: ") + std::strerror(-res));
    in_.received(fill_, static_cast<size_t>(res));  // the kernel wrote exactly res bytes at fill_
    if (res == 0) {  // FIN without close_notify: treated as the end of the client's stream
        up_eof_ = true;
        in_.reset();
        up_.input_ended("client_close");
        return up_.kick();
    }
    fill_ += static_cast<size_t>(res);
    client_readable_ = static_cast<size_t>(res) == last_client_recv_size_;
    last_client_recv_bytes_ = static_cast<size_t>(res);
    host_.activity();
    process_records();
    up_.kick();
}

void UserspaceRelay::process_records() {
    const size_t base = parse_off_;
    auto region = in_.ingest_range(base, fill_ - base);
    if (!region) return fail("internal_error", "gated buffer: " + region.error().message());
    spans_.clear();
    size_t off = base;
    // A bad record ends the client's stream, but the verified records before it in the same read
    // are forwarded first, as on the kernel and OpenSSL paths (which deliver record by record);
    // the refusal (and the client's alert) comes once they reached the backend.
    std::function<void()> refusal;
    while (!up_eof_ && fill_ - off >= crypto::kRecordHeaderSize) {
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
    if (up_eof_ || refusal) fill_ = off;
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
        io::GatedBuffer& slot = releasing.valid() ? releasing : in_;
        auto verified = slot.release(begin, end);
        if (!verified) return fail("internal_error", "gated buffer release: " + verified.error().message());
        // Rule routes: a small batch is copied into the connection's small buffer and its slot goes
        // back at once. The stage may hold such bytes back for as long as the client pauses, and a
        // few hundred copied bytes cost less than a pinned slot (a slow typist would pin one per
        // keystroke). When that buffer is full, the bytes stay in their slot.
        const bool copy = up_.rewrites() && end - begin <= kCopyBelow;
        for (const auto& sp : spans_) {
            auto room = copy ? up_.room() : std::span<uint8_t>();
            if (room.size() >= sp.size) {
                std::memcpy(room.data(), verified->data() + (sp.offset - begin), sp.size);
                counters_.copied_up += sp.size;
                up_.received(sp.size);
            } else {
                up_.deliver(redact::SharedBytes(verified->slice(sp.offset - begin, sp.size)));
            }
        }
    }
    up_.end_pass(!client_readable_);
    if (refusal) {
        up_.input_refused(std::move(refusal));
    } else if (up_eof_) {
        in_.reset();  // nothing after close_notify is read; the verified batches hold their slots
        up_.input_ended("client_close");
    }
}

bool UserspaceRelay::handle_control(const crypto::OpenedRecord& rec, std::span<uint8_t> record) {
    auto plaintext = std::span<const uint8_t>(record.data() + rec.plaintext_offset, rec.plaintext_size);
    switch (rec.type) {
        case crypto::ContentType::alert: {
            if (auto r = post_handshake_.on_other_record(); !r) {
                refuse_record(crypto::RecordError::handshake_interleaved, "alert inside a split handshake message");
                return false;
            }
            auto alert = crypto::parse_alert(plaintext);
            if (alert && alert->description == crypto::kAlertCloseNotify) {
                up_eof_ = true;  // the direction's input ends once the batch before it is queued
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
                if (events->update_requested) {
                    key_update_owed_ = true;
                    flush_down();
                }
            }
            return true;
        }
        default:
            fail("client_error", "unexpected record type " + std::to_string(static_cast<int>(rec.type)));
            return false;
    }
}

// ---------------------------------------------------------------------------- backend → client

bool UserspaceRelay::record_buffer_elsewhere() const {
    return (backend_recv_.pending() && backend_recv_.held().buf) || (client_send_.pending() && client_send_.held().records);
}

void UserspaceRelay::pump_backend_recv() {
    if (failed() || down_eof_ || backend_recv_.pending() || backend_poll_inflight_) return;
    // Received plaintext waits for its seal, and sealed records for their send: one record buffer.
    if (!pending_records_.empty() || record_buffer_elsewhere()) return;
    if (!backend_readable_) {
        down_buf_.reset();  // idle: hold no buffer while we wait
        backend_poll_inflight_ = true;
        host_.op_submitted();
        host_.loop().poll(&op_backend_readable_, backend_, POLLIN);
        return;
    }
    RecordsRecv& r = backend_recv_.body();
    if (down_stage_.rewrites()) {
        if (!down_plan_.empty()) return;  // its output must reach the record slots first
        auto space = down_chunks_.space();
        if (space.empty()) return;  // held-back bytes pin every chunk: the stage releases them
        r.chunk = down_chunks_.lease();
        r.len = space.size();
        host_.op_submitted();
        host_.loop().recv(backend_recv_.start(), backend_, space.data(), space.size());
        return;
    }
    r.buf = down_buf_ ? std::move(down_buf_) : host_.buffers().take();
    // Each record slot receives plaintext between the room for its header and for its tag, so it
    // can be sealed where it lies.
    r.iov.resize(record_slots_);
    for (size_t i = 0; i < record_slots_; ++i)
        r.iov[i] = {r.buf.data() + i * stride_ + writer_.headroom(), writer_.max_plaintext()};
    r.msg = {};
    r.msg.msg_iov = r.iov.data();
    r.msg.msg_iovlen = record_slots_;
    r.len = record_slots_ * writer_.max_plaintext();
    host_.op_submitted();
    io::Op* op = backend_recv_.start();
    host_.loop().recvmsg(op, backend_, &backend_recv_.completing().msg);
}

void UserspaceRelay::on_backend_recv(int res) {
    RecordsRecv done = backend_recv_.finish();
    down_buf_ = std::move(done.buf);  // the buffer is ours again (or nothing, on rule routes)
    if (failed() || res == -ECANCELED) return;
    if (res < 0) return fail("backend_reset", std::string("recv from backend: ") + std::strerror(-res));
    if (res == 0) {
        down_eof_ = true;
        ending_.source_ended("backend_close");
        if (auto f = down_stage_.finish(down_plan_); !f)
            return fail("internal_error", "redaction: " + f.error().message());
        fill_records_from_plan();
        return flush_down();
    }
    size_t left = static_cast<size_t>(res);
    backend_readable_ = left == done.len;  // a full read: more is likely queued
    counters_.bytes_down += left;
    ++down_feeds_;
    host_.activity();
    if (down_stage_.rewrites()) {
        auto [owner, bytes] = down_chunks_.commit(left);
        if (auto f = down_stage_.feed(redact::SharedBytes::adopt(std::move(owner), bytes), down_plan_); !f)
            return fail("internal_error", "redaction: " + f.error().message());
        if (!backend_readable_) down_quiet_.arm(host_, down_feeds_, down_stage_);
        fill_records_from_plan();
        flush_down();
        return pump_backend_recv();
    }
    while (left > 0) {
        size_t n = std::min(left, writer_.max_plaintext());
        pending_records_.push_back(n);
        left -= n;
    }
    flush_down();
}

void UserspaceRelay::flush_down() {
    // Nothing follows our close_notify (RFC 8446 §6.1), not even the KeyUpdate a client asks for.
    if (failed() || client_send_.pending() || close_notify_sealed_) return;
    ClientSend& s = client_send_.body();
    size_t control = 0;
    // A KeyUpdate goes out before any record sealed under the next key (seal_key_update rekeys).
    if (key_update_owed_ || writer_.key_update_due()) {
        auto n = writer_.seal_key_update(std::span<uint8_t>(s.control).first(32), false);
        if (!n) return fail("internal_error", "sealing KeyUpdate: " + n.error().message());
        s.iov.push_back({s.control.data(), *n});
        control = *n;
        key_update_owed_ = false;
    }
    if (!pending_records_.empty()) {
        for (size_t i = 0; i < pending_records_.size(); ++i) {
            auto slot = std::span<uint8_t>(down_buf_.data() + i * stride_, stride_);
            auto n = writer_.seal_in_place(slot, pending_records_[i], crypto::ContentType::application_data);
            if (!n) return fail("internal_error", "sealing record: " + n.error().message());
            s.iov.push_back({slot.data(), *n});
        }
        pending_records_.clear();
        s.records = std::move(down_buf_);  // the send holds the sealed records until it completes
    }
    // close_notify is the last item of the direction: only behind every byte the backend sent.
    if (down_eof_ && !close_notify_sealed_ && down_plan_.empty()) {
        auto n = writer_.seal_alert(std::span<uint8_t>(s.control).subspan(control), crypto::kAlertWarning,
                                    crypto::kAlertCloseNotify);
        if (!n) return fail("internal_error", "sealing close_notify: " + n.error().message());
        s.iov.push_back({s.control.data() + control, *n});
        close_notify_sealed_ = true;
        s.close_notify = true;
    }
    if (s.iov.empty()) return pump_backend_recv();
    start_client_send();
}

void UserspaceRelay::start_client_send() {
    ClientSend& s = client_send_.body();
    s.next = 0;
    s.msg = {};
    s.msg.msg_iov = s.iov.data();
    s.msg.msg_iovlen = s.iov.size();
    host_.op_submitted();
    io::Op* op = client_send_.start();
    host_.loop().sendmsg(op, client_, &client_send_.completing().msg);
}

void UserspaceRelay::on_client_send(int res) {
    if (res >= 0 && !(failed() && alert_ == AlertState::none)) {
        host_.activity();
        ClientSend& s = client_send_.completing();
        s.next = io::advance_iovecs(s.iov, s.next, static_cast<size_t>(res));
        if (s.next < s.iov.size()) {  // short send: the rest, in order, from the same record
            s.msg.msg_iov = s.iov.data() + s.next;
            s.msg.msg_iovlen = s.iov.size() - s.next;
            host_.op_submitted();
            host_.loop().sendmsg(client_send_.again(), client_, &s.msg);
            return;
        }
    }
    ClientSend done = client_send_.finish();  // the records come back; dropped on every error path
    if ((failed() && alert_ == AlertState::none) || res == -ECANCELED) return;
    if (res < 0) {
        if (alert_ != AlertState::none) return host_.relay_failed(alert_reason_, alert_detail_);
        return fail(res == -ECONNRESET || res == -EPIPE ? "client_reset" : "client_error",
                    std::string("send to client: ") + std::strerror(-res));
    }
    if (done.records) {
        assert(!down_buf_);  // one record buffer per connection: it was the send's
        down_buf_ = std::move(done.records);  // free again for the next receive
    }
    if (alert_ == AlertState::owed) return send_fatal_alert();
    if (done.alert) return host_.relay_failed(alert_reason_, alert_detail_);
    if (done.close_notify) {
        down_done_ = true;
        return ending_.direction_done();
    }
    fill_records_from_plan();
    flush_down();
    pump_backend_recv();
}

void UserspaceRelay::fill_records_from_plan() {
    if (failed() || down_plan_.empty() || !pending_records_.empty() || record_buffer_elsewhere()) return;
    if (!down_buf_) down_buf_ = host_.buffers().take();
    for (size_t i = 0; i < record_slots_ && !down_plan_.empty(); ++i) {
        uint8_t* payload = down_buf_.data() + i * stride_ + writer_.headroom();
        size_t filled = 0;
        while (filled < writer_.max_plaintext() && !down_plan_.empty()) {
            const iovec& v = down_plan_.iovecs().front();
            size_t n = std::min(v.iov_len, writer_.max_plaintext() - filled);
            std::memcpy(payload + filled, v.iov_base, n);
            down_plan_.consume(n);
            filled += n;
        }
        pending_records_.push_back(filled);
        counters_.copied_down += filled;
    }
    if (down_plan_.empty()) down_plan_.clear();  // drops the chunks it referenced
}

// ---------------------------------------------------------------------------- endings

void UserspaceRelay::send_alert_now(uint8_t level, uint8_t description) {
    // Best effort, for a connection that ends now (say_goodbye); only called with nothing queued or
    // in flight towards the client, so it cannot interleave with a record.
    std::array<uint8_t, 64> buf{};
    auto n = writer_.seal_alert(buf, level, description);
    if (n) [[maybe_unused]] auto sent = ::send(client_, buf.data(), *n, MSG_NOSIGNAL | MSG_DONTWAIT);
    close_notify_sealed_ = true;
}

void UserspaceRelay::bad_record(const std::string& detail) {
    // Nothing of the record was released (what was decrypted of it is scrubbed). Tell the client why.
    bump(stats().bad_records);
    fail_with_alert(crypto::kAlertBadRecordMac, "bad_record", detail);
}

void UserspaceRelay::refuse_record(crypto::RecordError e, const std::string& detail) {
    const auto& row = crypto::describe(e);
    note_relay_close(row.close_reason);
    fail_with_alert(row.alert, row.close_reason, detail);
}

void UserspaceRelay::refused_header(uint8_t alert, const Error& e) {
    if (alert == crypto::kAlertBadRecordMac) return bad_record("malformed record: " + e.message());
    if (alert == 0) return fail("client_error", "malformed record: " + e.message());  // reader poisoned
    // Framing is lost: nothing of the record was decrypted, and nothing after it can be located.
    bump(stats().malformed_records);
    fail_with_alert(alert, e.code == EMSGSIZE ? "record_overflow" : "malformed_record",
                    "malformed record: " + e.message());
}

void UserspaceRelay::fail_with_alert(uint8_t description, const char* reason, const std::string& detail) {
    if (!ending_.halt()) return;  // nothing more is read, sealed or forwarded
    // Nothing may follow our close_notify (RFC 8446 §6.1).
    if (close_notify_sealed_) return host_.relay_failed(reason, detail);
    auto n = writer_.seal_alert(alert_record_, crypto::kAlertFatal, description);
    if (!n) return host_.relay_failed(reason, detail);
    alert_len_ = *n;
    alert_reason_ = reason;
    alert_detail_ = detail;
    alert_ = AlertState::owed;
    // Records sealed before the alert may still be on their way: they must reach the client whole
    // and first, or it could not decrypt the alert behind them. on_client_send sends it after them.
    // A client that stops reading meanwhile is ended by the idle timeout.
    if (!client_send_.pending()) send_fatal_alert();
}

void UserspaceRelay::send_fatal_alert() {
    alert_ = AlertState::sending;
    // Through the same op record as the records: on_client_send resumes a short send, then fails
    // the relay.
    ClientSend& s = client_send_.body();
    std::memcpy(s.control.data(), alert_record_.data(), alert_len_);
    s.iov.assign(1, iovec{s.control.data(), alert_len_});
    s.alert = true;
    start_client_send();
}

void UserspaceRelay::say_goodbye() {
    if (failed() || down_done_ || close_notify_sealed_) return;
    // close_notify only behind the last byte: with records, plaintext or held-back bytes still
    // queued towards the client, the client must see the truncation, not a clean end.
    if (client_send_.pending() || !pending_records_.empty() || !down_plan_.empty() || down_stage_.held() > 0)
        return note_truncated_close();
    send_alert_now(crypto::kAlertWarning, crypto::kAlertCloseNotify);
}

}  // namespace ztp::conn
