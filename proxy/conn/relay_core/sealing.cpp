#include "proxy/conn/relay_core/sealing.hpp"

#include <algorithm>
#include <cstring>

namespace ztp::conn::core {

SealingSink::SealingSink(RelayHost& host, Direction& dir, crypto::RecordWriter writer, int fd, size_t slots,
                         uint8_t send_tag)
    : host_(host), dir_(dir), writer_(std::move(writer)), fd_(fd), send_(&host.completion_target(), send_tag) {
    // Fits a record of any of our suites, whatever max_fragment_length the client negotiated.
    slots_ = {slots, crypto::kRecordMaxSize, writer_.headroom(), writer_.max_plaintext()};
}

std::shared_ptr<io::BufferLease> SealingSink::lend() {
    if (!lent_.expired()) return nullptr;
    auto buf = std::make_shared<io::BufferLease>(host_.buffers().take());
    lent_ = buf;
    return buf;
}

void SealingSink::pump() {
    // Nothing follows our close_notify (RFC 8446 §6.1), not even the KeyUpdate a client asks for.
    if (dir_.failed() || send_.pending() || close_notify_sealed_) return;
    if (plan_.empty()) dir_.take(plan_);
    Send& s = send_.body();
    size_t control = 0;
    // A KeyUpdate goes out before any record sealed under the next key (seal_key_update rekeys).
    if (key_update_owed_ || writer_.key_update_due()) {
        auto n = writer_.seal_key_update(std::span<uint8_t>(s.control).first(32), false);
        if (!n) return dir_.fail("internal_error", "sealing KeyUpdate: " + n.error().message());
        s.iov.push_back({s.control.data(), *n});
        control = *n;
        key_update_owed_ = false;
    }
    if (!seal_records(s)) return;
    // close_notify is the last item of the direction: only behind every byte the backend sent.
    if (plan_.empty() && dir_.finishing() && !dir_.done()) {
        auto n = writer_.seal_alert(std::span<uint8_t>(s.control).subspan(control), crypto::kAlertWarning,
                                    crypto::kAlertCloseNotify);
        if (!n) return dir_.fail("internal_error", "sealing close_notify: " + n.error().message());
        s.iov.push_back({s.control.data() + control, *n});
        close_notify_sealed_ = true;
        s.close_notify = true;
    }
    if (!s.iov.empty()) start(s);
}

long SealingSink::in_slot(const iovec& v) const {
    auto lent = lent_.lock();
    if (!lent) return -1;
    const auto base = reinterpret_cast<uintptr_t>(lent->data());
    const auto at = reinterpret_cast<uintptr_t>(v.iov_base);
    if (at < base || at >= base + slots_.count * slots_.stride) return -1;
    const size_t off = at - base;
    if (off % slots_.stride != slots_.headroom || v.iov_len > slots_.payload) return -1;
    return static_cast<long>(off / slots_.stride);
}

bool SealingSink::seal_records(Send& s) {
    size_t records = 0, copied = 0;
    while (!plan_.empty() && records < slots_.count) {
        const iovec front = plan_.iovecs().front();
        std::span<uint8_t> slot;
        size_t size = 0;
        if (const long i = in_slot(front); i >= 0) {
            // Plaintext the backend's receive put into a slot of the lent buffer: sealed where it lies.
            // The send holds the buffer; nothing else references it once the plan let go.
            if (!s.in_place) s.in_place = lent_.lock();
            slot = {s.in_place->data() + static_cast<size_t>(i) * slots_.stride, slots_.stride};
            size = front.iov_len;
            plan_.consume(size);
        } else {
            // The stage's output (spans of its input chunks and replacement bytes): copied into a
            // record slot, the one copy on a rule route (sealing needs contiguous plaintext).
            if (!s.copies) s.copies = host_.buffers().take();
            slot = {s.copies.data() + copied++ * slots_.stride, slots_.stride};
            while (size < slots_.payload && !plan_.empty() && in_slot(plan_.iovecs().front()) < 0) {
                const iovec& v = plan_.iovecs().front();
                const size_t n = std::min(v.iov_len, slots_.payload - size);
                std::memcpy(slot.data() + slots_.headroom + size, v.iov_base, n);
                plan_.consume(n);
                size += n;
            }
            dir_.counters().copied_down += size;
        }
        auto n = writer_.seal_in_place(slot, size, crypto::ContentType::application_data);
        if (!n) {
            dir_.fail("internal_error", "sealing record: " + n.error().message());
            return false;
        }
        s.iov.push_back({slot.data(), *n});
        ++records;
    }
    if (plan_.empty()) plan_.clear();  // drops the chunks and buffers it referenced
    return true;
}

void SealingSink::start(Send& s) {
    s.next = 0;
    s.msg = {};
    s.msg.msg_iov = s.iov.data();
    s.msg.msg_iovlen = s.iov.size();
    host_.op_submitted();
    io::Op* op = send_.start();
    host_.loop().sendmsg(op, fd_, &send_.completing().msg);
}

bool SealingSink::on_completion(uint8_t tag, int res) {
    if (tag != send_.tag()) return false;
    // After a failure only a fatal alert (owed, or this send) still goes out.
    const bool alerting = alert_owed_ || send_.held().alert;
    const bool live = !dir_.failed() || alerting;
    if (res >= 0 && live) {
        host_.activity();
        Send& s = send_.completing();
        s.next = io::advance_iovecs(s.iov, s.next, static_cast<size_t>(res));
        if (s.next < s.iov.size()) {  // short send: the rest, in order, from the same record
            s.msg.msg_iov = s.iov.data() + s.next;
            s.msg.msg_iovlen = s.iov.size() - s.next;
            host_.op_submitted();
            host_.loop().sendmsg(send_.again(), fd_, &s.msg);
            return true;
        }
    }
    bool was_alert = false, was_close_notify = false;
    {
        // The record buffers go back before anything else runs: the next receive may need one.
        const Send done = send_.finish();
        was_alert = done.alert;
        was_close_notify = done.close_notify;
    }
    if (!live || res == -ECANCELED) return true;
    if (res < 0) {
        if (alerting) host_.relay_failed(alert_reason_, alert_detail_);
        else dir_.fail(res == -ECONNRESET || res == -EPIPE ? "client_reset" : "client_error",
                       std::string("send to client: ") + std::strerror(-res));
        return true;
    }
    if (alert_owed_) {
        send_alert();
    } else if (was_alert) {
        host_.relay_failed(alert_reason_, alert_detail_);
    } else if (was_close_notify) {
        dir_.finished();
    } else {
        dir_.kick();
    }
    return true;
}

void SealingSink::answer_key_update() {
    key_update_owed_ = true;
    dir_.kick();
}

void SealingSink::fatal_alert(uint8_t description, const char* reason, const std::string& detail) {
    if (!dir_.halt()) return;  // nothing more is read, sealed or forwarded
    // Nothing may follow our close_notify (RFC 8446 §6.1).
    if (close_notify_sealed_) return host_.relay_failed(reason, detail);
    auto n = writer_.seal_alert(alert_record_, crypto::kAlertFatal, description);
    if (!n) return host_.relay_failed(reason, detail);
    alert_len_ = *n;
    alert_reason_ = reason;
    alert_detail_ = detail;
    alert_owed_ = true;
    // Records sealed before the alert may still be on their way: they must reach the client whole
    // and first, or it could not decrypt the alert behind them. A client that stops reading
    // meanwhile is ended by the idle timeout.
    if (!send_.pending()) send_alert();
}

void SealingSink::send_alert() {
    alert_owed_ = false;
    Send& s = send_.body();
    std::memcpy(s.control.data(), alert_record_.data(), alert_len_);
    s.iov.assign(1, iovec{s.control.data(), alert_len_});
    s.alert = true;
    start(s);
}

void SealingSink::goodbye() {
    if (close_notify_sealed_) return;
    // Best effort, for a connection that ends now: only called with nothing queued or in flight
    // towards the client (Direction::say_goodbye), so it cannot interleave with a record.
    std::array<uint8_t, 64> buf{};
    auto n = writer_.seal_alert(buf, crypto::kAlertWarning, crypto::kAlertCloseNotify);
    if (n) [[maybe_unused]] auto sent = ::send(fd_, buf.data(), *n, MSG_NOSIGNAL | MSG_DONTWAIT);
    close_notify_sealed_ = true;
}

// ---------------------------------------------------------------------------- backend → record slots

void SlotSource::pump() {
    if (recv_.pending() || ready_.pending() || !dir_.reading()) return;
    if (!ready_.readable()) return ready_.arm();  // idle: wait for bytes without holding a record buffer
    auto buf = sink_.lend();
    if (!buf) return;  // the last batch's records are still on their way: the sink's progress pumps again
    const RecordSlots& sl = sink_.slots();
    Recv& r = recv_.body();
    r.buf = std::move(buf);
    // Each slot receives plaintext between the room for its header and for its tag, so the sink
    // seals it where it lies.
    r.iov.resize(sl.count);
    for (size_t i = 0; i < sl.count; ++i) r.iov[i] = {r.buf->data() + i * sl.stride + sl.headroom, sl.payload};
    r.msg = {};
    r.msg.msg_iov = r.iov.data();
    r.msg.msg_iovlen = r.iov.size();
    r.len = sl.count * sl.payload;
    host_.op_submitted();
    io::Op* op = recv_.start();
    host_.loop().recvmsg(op, fd_, &recv_.completing().msg);
}

bool SlotSource::on_completion(uint8_t tag, int res) {
    if (tag != recv_.tag()) return ready_.on_completion(tag, res, dir_);
    {
        // The receive's lease on the record buffer ends with this block, before the kick: the
        // delivered bytes hold their own references, and the sink may need the buffer back.
        const Recv done = recv_.finish();
        if (dir_.failed() || res == -ECANCELED) return true;
        if (res < 0) {
            dir_.fail("backend_reset", std::string("recv from backend: ") + std::strerror(-res));
            return true;
        }
        if (res == 0) {
            dir_.input_ended("backend_close");
        } else {
            ready_.received(static_cast<size_t>(res), done.len);  // a full read: more is likely queued
            host_.activity();
            size_t left = static_cast<size_t>(res);
            for (size_t i = 0; left > 0; ++i) {
                const size_t n = std::min(left, done.iov[i].iov_len);
                dir_.deliver(
                    redact::SharedBytes::adopt(done.buf, {static_cast<const uint8_t*>(done.iov[i].iov_base), n}));
                left -= n;
            }
            dir_.end_pass(!ready_.readable());
        }
    }
    dir_.kick();
    return true;
}

}  // namespace ztp::conn::core
