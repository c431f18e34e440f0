// A connection of the userspace record path on the fake completion queue (fake_ring.hpp), for tests
// where several connections share one worker's gated pools: the relay, a TLS client that seals
// records (keys of its own: the relay's reader has the same), and what reached the backend.
#pragma once

#include <gtest/gtest.h>
#include <poll.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "crypto/record_layer.hpp"
#include "fake_ring.hpp"
#include "proxy/conn/userspace_relay.hpp"
#include "proxy/io/gated_pool.hpp"

namespace ztp::testing::userspace {

constexpr int kClientFd = 1 << 20;  // never real descriptors
constexpr int kBackendFd = (1 << 20) + 1;

inline crypto::DirectionKeys client_keys() {
    crypto::DirectionKeys k;
    EXPECT_TRUE(k.key.assign(std::vector<uint8_t>(16, 0x11)));
    EXPECT_TRUE(k.iv.assign(std::vector<uint8_t>(12, 0x22)));
    return k;
}
inline crypto::SecretBytes client_secret() {
    crypto::SecretBytes s;
    EXPECT_TRUE(s.assign(std::vector<uint8_t>(32, 0x33)));
    return s;
}

// One connection of the worker: its relay on a fake ring, the client's sealed records, what the
// backend received. Like Connection, it lets no completion reach a relay once it is closing.
class Conn final : public conn::RelayHost, public io::CompletionHandler {
public:
    // `up`: the client → backend direction's redaction stage (none: a plain route).
    explicit Conn(io::GatedPools pools, conn::RedactionStage up = {}) {
        ring.on_recv_now = [this](int fd, void* buf, size_t len) -> long {
            if (fd != kClientFd || wire.empty()) return -EAGAIN;
            const size_t n = std::min(len, wire.size());
            std::memcpy(buf, wire.data(), n);
            wire.erase(0, n);
            return static_cast<long>(n);
        };
        relay = std::make_unique<conn::UserspaceRelay>(
            *this, pools, crypto::RecordReader::create(client_keys(), client_secret()).value(),
            crypto::RecordWriter::create(client_keys(), client_secret()).value(), config::TlsVersion::tls1_3,
            kClientFd, kBackendFd, 64 * 1024, std::move(up), conn::RedactionStage{});
        relay->start();
    }

    void client_sends(const std::string& plain) {
        std::vector<uint8_t> buf(client.headroom() + plain.size() + client.tailroom());
        std::memcpy(buf.data() + client.headroom(), plain.data(), plain.size());
        auto n = client.seal_in_place(buf, plain.size(), crypto::ContentType::application_data);
        ASSERT_TRUE(n);
        wire.append(reinterpret_cast<const char*>(buf.data()), *n);
    }
    // The client's readiness fires (the relay reads what is there in the same turn, if it can).
    void client_readable() {
        const int i = ring.find(kClientFd, FakeRing::Kind::poll);
        ASSERT_GE(i, 0);
        ring.complete(static_cast<size_t>(i), POLLIN);
    }
    // Completes client receives and backend sends until neither is pending.
    void run() {
        for (int guard = 0; guard < 100; ++guard) {
            if (int i = ring.find(kClientFd, FakeRing::Kind::recv); i >= 0 && !wire.empty()) {
                const size_t n = std::min(wire.size(), ring.pending()[static_cast<size_t>(i)].len);
                const std::string bytes = wire.substr(0, n);
                wire.erase(0, n);
                ring.complete_recv(static_cast<size_t>(i), bytes);
            } else if (int s = ring.find(kBackendFd, FakeRing::Kind::send); s >= 0) {
                ring.complete_send(static_cast<size_t>(s), ring.pending()[static_cast<size_t>(s)].len, backend_got);
            } else {
                return;
            }
        }
    }
    // The client stays quiet for longer than the redaction stage's pause: its timers fire.
    void quiet() {
        for (int i = ring.find(-1, FakeRing::Kind::timeout); i >= 0; i = ring.find(-1, FakeRing::Kind::timeout))
            ring.complete(static_cast<size_t>(i), -ETIME);
        run();
    }
    bool reading_client() const {
        return ring.find(kClientFd, FakeRing::Kind::recv) >= 0 || ring.find(kClientFd, FakeRing::Kind::poll) >= 0;
    }

    FakeRing ring;
    io::BufferPool buffer_pool{conn::UserspaceRelay::kBatchRecords * crypto::kRecordMaxSize, 2};
    std::unique_ptr<conn::Relay> relay;
    crypto::RecordWriter client = crypto::RecordWriter::create(client_keys(), client_secret()).value();
    std::string wire;         // sealed records the proxy has not read yet
    std::string backend_got;  // plaintext that reached the backend
    std::string failed;
    bool closing = false;

    io::Submitter& loop() override { return ring; }
    io::CompletionHandler& completion_target() override { return *this; }
    io::BufferPool& buffers() override { return buffer_pool; }
    void op_submitted() override {}
    void activity() override {}
    void relay_finished(const char*) override { closing = true; }
    void relay_failed(const char* reason, const std::string& detail) override {
        failed = std::string(reason) + ": " + detail;
        closing = true;
    }
    void on_completion(uint8_t tag, int res, uint32_t) override {
        if (!closing) relay->on_completion(tag, res);
    }
};

}  // namespace ztp::testing::userspace
