#include "proxy/conn/relay_core/direction.hpp"

#include "proxy/conn/client_records.hpp"

namespace ztp::conn::core {

void Ending::fail(const char* reason, const std::string& detail) {
    if (failed_) return;
    failed_ = true;  // nothing more is read or written, and no other ending is reported
    note_relay_close(reason);
    host_.relay_failed(reason, detail);
}

void Ending::direction_done() {
    if (++done_ == 2 && !failed_) host_.relay_finished(first_close_ ? first_close_ : "client_close");
}

Direction::Direction(RelayHost& host, Ending& ending, RelayCounters& counters, const DirectionConfig& config,
                     RedactionStage stage, uint8_t quiet_tag)
    : host_(host),
      ending_(ending),
      counters_(counters),
      config_(config),
      stage_(std::move(stage)),
      quiet_(io::Op{&host.completion_target(), quiet_tag}),
      arena_(config.chunk_size, config.min_read, config.max_chunks, config.pool) {}

void Direction::kick() {
    if (kicking_) {
        kick_again_ = true;
        return;
    }
    kicking_ = true;
    do {
        kick_again_ = false;
        if (!ending_.failed()) source_->pump();
        if (!ending_.failed()) sink_->pump();
    } while (kick_again_ && !ending_.failed());
    kicking_ = false;
}

std::span<uint8_t> Direction::room() {
    if (!reading()) return {};
    // Every queued segment costs an iovec and a chunk reference, whatever the bytes it carries.
    if (out_.iovecs().size() + sink_->held_segments() >= config_.max_segments) return {};
    return arena_.space();  // empty at the chunk cap
}

void Direction::received(size_t n) {
    (config_.up ? counters_.bytes_up : counters_.bytes_down) += n;
    host_.activity();
    auto [owner, bytes] = arena_.commit(n);
    if (!unfed_.empty() && unfed_.data() + unfed_.size() == bytes.data()) {
        unfed_ = {unfed_.data(), unfed_.size() + bytes.size()};
        return;
    }
    if (!feed()) return;
    unfed_owner_ = std::move(owner);
    unfed_ = bytes;
}

bool Direction::feed() {
    if (unfed_.empty()) return true;
    ++feeds_;
    auto f = stage_.feed(redact::SharedBytes::adopt(std::move(unfed_owner_), unfed_), out_);
    unfed_ = {};
    if (!f) fail("internal_error", "redaction: " + f.error().message());
    return static_cast<bool>(f);
}

void Direction::end_pass(bool drained) {
    if (ending_.failed() || !feed()) return;
    if (drained) quiet_.arm(host_, feeds_, stage_);
}

void Direction::deliver(redact::SharedBytes bytes) {
    if (ending_.failed() || !feed()) return;  // what was received before it goes first
    (config_.up ? counters_.bytes_up : counters_.bytes_down) += bytes.size();
    ++feeds_;
    if (auto f = stage_.feed(std::move(bytes), out_); !f) fail("internal_error", "redaction: " + f.error().message());
}

bool Direction::full() const {
    return out_.iovecs().size() + sink_->held_segments() >= config_.max_segments ||
           (sink_->holds_bytes() && !out_.empty());
}

void Direction::input_refused(std::function<void()> refusal) {
    if (ending_.failed() || input_ended_ || !feed()) return;
    input_ended_ = true;
    refusal_ = std::move(refusal);
    if (auto f = stage_.finish(out_); !f) fail("internal_error", "redaction: " + f.error().message());
}

bool Direction::refused() {
    if (!refusal_) return false;
    std::exchange(refusal_, nullptr)();
    return true;
}

void Direction::input_ended(const char* who) {
    if (ending_.failed() || input_ended_ || !feed()) return;
    input_ended_ = true;
    ending_.source_ended(who);
    if (auto f = stage_.finish(out_); !f) fail("internal_error", "redaction: " + f.error().message());
}

void Direction::take(redact::RewritePlan& into) {
    into.clear();  // drops the chunks the sink's last plan referenced
    into.swap(out_);
}

void Direction::sent(size_t n) {
    if (n == 0) return;
    host_.activity();
    // A sink writing synchronously from inside kick() freed room: the source may read again.
    if (kicking_) kick_again_ = true;
}

void Direction::finished() {
    if (done_) return;
    done_ = true;
    ending_.direction_done();
}

void Direction::on_quiet() {
    if (ending_.failed() || !quiet_.fired(host_, feeds_, stage_)) return;
    if (auto f = stage_.flush(out_); !f) return fail("internal_error", "redaction: " + f.error().message());
    kick();
}

bool Direction::queued() const {
    return !out_.empty() || !unfed_.empty() || sink_->holds_bytes() || stage_.held() > 0;
}

void Direction::say_goodbye() {
    if (done_ || ending_.failed()) return;
    // close_notify only behind the last byte: with output or held-back bytes still queued, the
    // peer must see the truncation, not a clean end.
    if (queued()) return note_truncated_close();
    sink_->goodbye();
}

}  // namespace ztp::conn::core
