// hostile_peer: the HostilePeer (hostile_peer.hpp) driven by a tiny script, for the Python tests.
//
//   hostile_peer --connect 127.0.0.1:PORT [--sni NAME] [--cafile CA] [--tls 1.2|1.3]
//                [--cipher aes128|aes256|chacha] [--rcvbuf N] [--connections N] [--seed S]
//                [--read-max N] [--pace-ms MS] [--key-updates] STEP...
//
// Each STEP is one argument, "name" or "name:arg[:arg]" (the last argument takes the rest, colons
// included). TEXT takes C escapes: \r \n \t \\ \xHH.
//   send:TEXT              application data, in records of the current record size
//   send-bytes:N           N bytes ('x')
//   record-size:N          record size for the sends that follow (1..16384; default 16384)
//   sleep:MS
//   type:MS:TEXT           one byte per record, MS apart (a person typing)
//   type-for:MS:SECONDS    token characters one per record, MS apart, for SECONDS
//   key-update:requested | key-update:not-requested
//   hostile:NAME           one record of hostile_records() (--list shows them)
//   expect:TEXT            reads exactly len(TEXT) bytes of application data; they must equal TEXT
//   expect-echo            reads back every application byte sent so far (an echo backend)
//   read:N                 reads N bytes of application data, whatever they are
//   flood:SIZE:SECONDS     SIZE-byte records for SECONDS (waits while the proxy does not read)
//   get:PATH:SIZE:COUNT    COUNT HTTP/1.1 GETs of PATH/SIZE on one connection, each answer checked
//                          byte by byte against the e2e backend's pattern; requests go out as
//                          1-byte records, the answer is read in random pieces of 1..--read-max
//                          bytes with random pauses up to --pace-ms, and with --key-updates one
//                          KeyUpdate(update_requested) goes out at a random point of each answer
//                          (skipped when the last one went out less than 200 ms before), with the
//                          next request pipelined right behind it; with --stall-ms, near the end of
//                          the answer and between two stops of reading (see get())
//   request:TEXT           like send, named for readability (a request the test will not read)
//   close-notify           sends close_notify
//   fin                    shuts down our write side (TCP FIN, no close_notify)
//   wait-stdin             blocks until stdin reaches EOF (the test decides when to go on)
//   mark:NAME              prints {"event":"mark","name":NAME,...}
//   read-close             reads until the proxy ends the connection (the result names how)
//   read-paced:CHUNK:MS    reads CHUNK bytes every MS ms until the proxy ends the connection
//
// Output: JSON lines on stdout; events as they happen, and one result per connection:
//   {"conn":0,"ok":true,"error":null,"step":N,"alert":"bad_record_mac"|null,"alert_level":2,
//    "close":"fin"|"rst"|"close_notify"|"timeout"|"bad_record"|"open","app_bytes":N,
//    "verified_bytes":N,"records_sent":N,"key_updates_sent":N,"key_updates_received":N,"seed":S,
//    "local_port":P (the access log's client port)}
// Exit status 0 when every connection ran every step, 1 otherwise, 2 for usage errors.
// Never prints key material: the peer holds it only in SecretBytes and the record layer.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/hostile/hostile_peer.hpp"

namespace {

using namespace ztp;
using namespace ztp::hostile;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

std::mutex g_out;

void emit(const json& j) {
    std::lock_guard lock(g_out);
    std::cout << j.dump() << std::endl;
}

std::string unescape(std::string_view s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '\\' || i + 1 == s.size()) {
            out += s[i];
            continue;
        }
        const char c = s[++i];
        if (c == 'r') out += '\r';
        else if (c == 'n') out += '\n';
        else if (c == 't') out += '\t';
        else if (c == 'x' && i + 2 < s.size()) {
            out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
            i += 2;
        } else out += c;
    }
    return out;
}

struct Step {
    std::string name;
    std::vector<std::string> args;
};

// "name:a:b:rest" with `nargs` arguments; the last one takes the rest of the string.
size_t arg_count(const std::string& name) {
    if (name == "type" || name == "type-for" || name == "flood" || name == "read-paced") return 2;
    if (name == "get") return 3;
    if (name == "close-notify" || name == "fin" || name == "wait-stdin" || name == "read-close" ||
        name == "expect-echo")
        return 0;
    return 1;
}

std::optional<Step> parse_step(const std::string& s) {
    Step st;
    const size_t c = s.find(':');
    st.name = s.substr(0, c);
    const size_t n = arg_count(st.name);
    std::string rest = c == std::string::npos ? "" : s.substr(c + 1);
    for (size_t i = 0; i < n; ++i) {
        if (c == std::string::npos) return std::nullopt;
        if (i + 1 == n) {
            st.args.push_back(rest);
            break;
        }
        const size_t d = rest.find(':');
        if (d == std::string::npos) return std::nullopt;
        st.args.push_back(rest.substr(0, d));
        rest = rest.substr(d + 1);
    }
    if (n == 0 && c != std::string::npos) return std::nullopt;
    return st;
}

struct Options {
    PeerOptions peer;
    unsigned connections = 1;
    uint64_t seed = 0;
    size_t read_max = 16384;
    unsigned pace_ms = 0;
    unsigned stall_ms = 0;
    bool key_updates = false;
};

class Runner {
public:
    Runner(const Options& o, unsigned index) : o_(o), index_(index), rng_(o.seed + index) {}

    json run(const std::vector<Step>& steps) {
        json res = {{"conn", index_}, {"ok", false}, {"error", nullptr}, {"step", 0}, {"alert", nullptr},
                    {"alert_level", nullptr}, {"close", "open"}, {"seed", o_.seed + index_}};
        auto p = HostilePeer::connect(o_.peer);
        if (!p) {
            res["error"] = "connect: " + p.error().message();
            return res;
        }
        peer_ = std::move(*p);
        res["local_port"] = peer_->local_port();
        for (size_t i = 0; i < steps.size(); ++i) {
            res["step"] = i;
            std::string err;
            try {
                err = one(steps[i]);
            } catch (const std::exception&) {  // std::stoul and friends on a step's arguments
                err = "bad argument";
            }
            if (!err.empty()) {
                res["error"] = steps[i].name + ": " + err;
                break;
            }
            if (i + 1 == steps.size()) res["ok"] = true;
        }
        if (steps.empty()) res["ok"] = true;
        if (last_.alert) {
            res["alert"] = alert_name(last_.alert->description);
            res["alert_level"] = last_.alert->level;
        }
        res["close"] = to_string(last_.how);
        if (!last_.detail.empty()) res["detail"] = last_.detail;
        res["app_bytes"] = app_bytes_;
        res["verified_bytes"] = verified_;
        res["records_sent"] = peer_->records_sent();
        res["key_updates_sent"] = peer_->key_updates_sent();
        res["key_updates_received"] = peer_->key_updates_received();
        res["version"] = peer_->version() == config::TlsVersion::tls1_3 ? "1.3" : "1.2";
        return res;
    }

private:
    static std::string fail(const Error& e) { return e.message(); }

    // Remembers how a read ended; an empty string when it got what it wanted.
    std::string note(ReadResult r, size_t want) {
        app_bytes_ += r.app_bytes;
        const size_t got = r.data.size();
        last_ = std::move(r);
        if (got == want) return "";
        return "got " + std::to_string(got) + " of " + std::to_string(want) + " bytes, then " + to_string(last_.how) +
               (last_.alert ? " after alert " + alert_name(last_.alert->description) : "") +
               (last_.detail.empty() ? "" : " (" + last_.detail + ")");
    }

    std::string send(std::string_view data) {
        auto r = peer_->send_app({reinterpret_cast<const uint8_t*>(data.data()), data.size()}, record_size_);
        if (!r) return fail(r.error());
        sent_ += data.size();
        return "";
    }

    std::string one(const Step& s) {
        const auto& a = s.args;
        if (s.name == "send" || s.name == "request") return send(unescape(a[0]));
        if (s.name == "send-bytes") return send(std::string(std::stoul(a[0]), 'x'));
        if (s.name == "record-size") {
            record_size_ = std::stoul(a[0]);
            return "";
        }
        if (s.name == "sleep") {
            std::this_thread::sleep_for(std::chrono::milliseconds(std::stoul(a[0])));
            return "";
        }
        if (s.name == "type") return type(std::stoul(a[0]), unescape(a[1]));
        if (s.name == "type-for") return type_for(std::stoul(a[0]), std::stod(a[1]));
        if (s.name == "key-update") {
            if (a[0] != "requested" && a[0] != "not-requested") return "key-update:requested|not-requested";
            auto r = peer_->send_key_update(a[0] == "requested");
            return r ? "" : fail(r.error());
        }
        if (s.name == "hostile") {
            auto h = hostile_by_name(a[0]);
            if (!h) return "unknown hostile record " + a[0];
            auto r = peer_->send_hostile(h->kind);
            return r ? "" : fail(r.error());
        }
        if (s.name == "expect") {
            const std::string want = unescape(a[0]);
            auto r = peer_->read_app(want.size());
            const bool same = std::equal(r.data.begin(), r.data.end(), want.begin(), want.end());
            if (auto e = note(std::move(r), want.size()); !e.empty()) return e;
            return same ? "" : "the data differs from what was expected";
        }
        if (s.name == "read") {
            const size_t want = std::stoul(a[0]);
            return note(peer_->read_app(want), want);
        }
        if (s.name == "expect-echo") {
            const size_t want = sent_ - echoed_;
            echoed_ = sent_;
            return note(peer_->read_app(want), want);
        }
        if (s.name == "flood") return flood(std::stoul(a[0]), std::stod(a[1]));
        if (s.name == "get") return get(a[0], std::stoull(a[1]), std::stoul(a[2]));
        if (s.name == "close-notify") {
            auto r = peer_->send_close_notify();
            return r ? "" : fail(r.error());
        }
        if (s.name == "fin") {
            peer_->shutdown_write();
            return "";
        }
        if (s.name == "wait-stdin") {
            char buf[256];
            while (::read(0, buf, sizeof buf) > 0) {
            }
            return "";
        }
        if (s.name == "mark") {
            emit({{"event", "mark"}, {"name", a[0]}, {"conn", index_}});
            return "";
        }
        if (s.name == "read-paced") {
            // A slow reader that never stops: CHUNK bytes every MS, until the proxy ends.
            const size_t chunk = std::stoul(a[0]);
            const auto pause = std::chrono::milliseconds(std::stoul(a[1]));
            while (true) {
                auto r = peer_->read_app(chunk);
                const bool ended = r.data.size() < chunk;
                note(std::move(r), 0);
                if (ended) return "";
                std::this_thread::sleep_for(pause);
            }
        }
        if (s.name == "read-close") {
            note(peer_->read_until_close(), 0);
            return "";
        }
        return "unknown step";
    }

    std::string type(unsigned ms, const std::string& text) {
        for (char c : text) {
            if (auto e = send_one(c); !e.empty()) return e;
            std::this_thread::sleep_for(std::chrono::milliseconds(ms));
        }
        return "";
    }

    std::string send_one(char c) {
        auto r = peer_->send_app({reinterpret_cast<const uint8_t*>(&c), 1}, 1);
        if (!r) return fail(r.error());
        ++sent_;
        return "";
    }

    // Characters a bearer token may hold (RFC 6750 b64token), so the match stays open.
    std::string type_for(unsigned ms, double seconds) {
        static constexpr char kToken[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~+/";
        const auto until = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
        std::uniform_int_distribution<size_t> pick(0, sizeof kToken - 2);
        while (Clock::now() < until) {
            if (auto e = send_one(kToken[pick(rng_)]); !e.empty()) return e;
            std::this_thread::sleep_for(std::chrono::milliseconds(ms));
        }
        return "";
    }

    std::string flood(size_t size, double seconds) {
        if (size == 0 || size > 16384) return "record size must be 1..16384";
        // Records are sealed in batches of ~64 KiB of wire bytes; a batch the proxy does not take
        // waits (bounded by the flood's end), so the flood never outruns the proxy's reading.
        const std::string rec(size, 'A');
        const size_t batch = std::max<size_t>(1, 65536 / (size + 22));
        const auto until = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
        uint64_t records = 0;
        bool blocked = false;
        while (Clock::now() < until) {
            if (peer_->pending_bytes() == 0) {
                for (size_t i = 0; i < batch; ++i) {
                    auto r = peer_->queue_app({reinterpret_cast<const uint8_t*>(rec.data()), size});
                    if (!r) return fail(r.error());
                }
                records += batch;
            }
            auto r = peer_->flush(until);
            if (!r && r.error().code == ETIMEDOUT) {
                blocked = true;
                break;
            }
            if (!r) return fail(r.error());
        }
        emit({{"event", "flood_done"}, {"conn", index_}, {"records", records}, {"bytes", records * size},
              {"unsent_bytes", peer_->pending_bytes()}, {"blocked_at_end", blocked}});
        return "";
    }

    // 1-byte records: at least 64 of them under the current key before our next KeyUpdate, which
    // the proxy's KeyUpdate flood limit asks for (crypto/record_layer.hpp).
    std::string request(const std::string& path, uint64_t size) {
        std::string req = "GET " + path + "/" + std::to_string(size) + " HTTP/1.1\r\nHost: hostile\r\nX-Pad: ";
        req += std::string(80, 'p') + "\r\n\r\n";
        const unsigned saved = record_size_;
        record_size_ = 1;
        auto e = send(req);
        record_size_ = saved;
        return e;
    }

    std::string read_head() {
        std::string head;
        while (head.size() < 4 || head.compare(head.size() - 4, 4, "\r\n\r\n") != 0) {
            if (auto err = note(peer_->read_app(1), 1); !err.empty()) return "response head: " + err;
            head += static_cast<char>(last_.data[0]);
            if (head.size() > 8192) return "response head over 8 KiB";
        }
        if (head.rfind("HTTP/1.1 200", 0) != 0) return "response is not 200: " + head.substr(0, head.find('\r'));
        return "";
    }

    // Issue 12 case 1 needs the proxy idle towards the client (waiting on the backend) with the
    // client's socket full, then our KeyUpdate(update_requested): the proxy's KeyUpdate send stays
    // in flight while the backend's next answer arrives. So at a random byte of each answer: stop
    // reading for a while (with --stall-ms: the proxy pushes what it can into the socket buffers),
    // send the KeyUpdate with the next request pipelined right behind it, stop again (the next
    // answer reaches the proxy), then read on.
    std::string get(const std::string& path, uint64_t size, unsigned count) {
        std::uniform_int_distribution<size_t> piece(1, std::max<size_t>(1, o_.read_max));
        std::uniform_int_distribution<unsigned> pause(0, o_.pace_ms);
        std::uniform_int_distribution<unsigned> stall(o_.stall_ms / 2, o_.stall_ms);
        std::bernoulli_distribution pause_now(0.05);
        if (auto e = request(path, size); !e.empty()) return e;
        for (unsigned n = 0; n < count; ++n) {
            if (auto e = read_head(); !e.empty()) return e;
            const uint64_t ku_at =
                o_.key_updates ? std::uniform_int_distribution<uint64_t>(0, size ? size - 1 : 0)(rng_) : UINT64_MAX;
            PatternChecker check;
            bool next_sent = n + 1 == count;
            while (check.offset() < size) {
                // At most one KeyUpdate per kKeyUpdateGap: the proxy rightly closes a connection that
                // sends more than 8 a second (KeyUpdateLimiter). A skipped one is not made up.
                if (!next_sent && check.offset() >= ku_at) {
                    if (o_.stall_ms) std::this_thread::sleep_for(std::chrono::milliseconds(stall(rng_)));
                    if (Clock::now() - last_ku_ >= kKeyUpdateGap) {
                        last_ku_ = Clock::now();
                        auto r = peer_->send_key_update(true);
                        if (!r) return "KeyUpdate at byte " + std::to_string(check.offset()) + ": " + fail(r.error());
                    }
                    if (auto e = request(path, size); !e.empty()) return e;
                    next_sent = true;
                    if (o_.stall_ms) std::this_thread::sleep_for(std::chrono::milliseconds(stall(rng_)));
                }
                const size_t want = std::min<uint64_t>(piece(rng_), size - check.offset());
                auto r = peer_->read_app(want);
                const bool intact = check.feed(r.data);
                verified_ += r.data.size();
                if (auto err = note(std::move(r), want); !err.empty())
                    return "answer " + std::to_string(n) + " at byte " + std::to_string(check.offset()) + ": " + err;
                if (!intact)
                    return "answer " + std::to_string(n) + ": pattern differs at byte " + std::to_string(*check.first_mismatch);
                if (o_.pace_ms && pause_now(rng_)) std::this_thread::sleep_for(std::chrono::milliseconds(pause(rng_)));
            }
            if (!next_sent)
                if (auto e = request(path, size); !e.empty()) return e;
        }
        return "";
    }

    static constexpr auto kKeyUpdateGap = std::chrono::milliseconds(200);
    Clock::time_point last_ku_{};
    const Options& o_;
    unsigned index_;
    std::mt19937_64 rng_;
    std::unique_ptr<HostilePeer> peer_;
    ReadResult last_;
    unsigned record_size_ = 16384;
    uint64_t sent_ = 0, echoed_ = 0, app_bytes_ = 0, verified_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"hostile TLS client for ztproxy's tests"};
    Options o;
    std::string connect, tls = "1.3", cipher;
    std::vector<std::string> raw_steps;
    bool list = false;
    int timeout_s = 15;
    app.add_option("--connect", connect, "HOST:PORT of the proxy");
    app.add_option("--sni", o.peer.sni, "server name");
    app.add_option("--cafile", o.peer.cafile, "CA to verify the proxy's certificate");
    app.add_option("--tls", tls, "1.2 or 1.3")->check(CLI::IsMember({"1.2", "1.3"}));
    app.add_option("--cipher", cipher, "aes128, aes256 or chacha")->check(CLI::IsMember({"aes128", "aes256", "chacha"}));
    app.add_option("--rcvbuf", o.peer.rcvbuf, "SO_RCVBUF in bytes");
    app.add_option("--timeout", timeout_s, "seconds any single wait on the socket may take");
    app.add_option("--connections", o.connections, "connections, each running every step (in threads)");
    app.add_option("--seed", o.seed, "random seed (connection i uses seed+i)");
    app.add_option("--read-max", o.read_max, "get: largest read, in bytes");
    app.add_option("--pace-ms", o.pace_ms, "get: longest random pause between reads");
    app.add_option("--stall-ms", o.stall_ms, "get: longest stop of reading before and after each KeyUpdate");
    app.add_flag("--key-updates", o.key_updates, "get: one KeyUpdate(update_requested) per answer");
    app.add_flag("--list", list, "list the hostile records and their RFC 8446 alerts");
    app.add_option("steps", raw_steps, "steps (see the source's header)");
    CLI11_PARSE(app, argc, argv);

    if (list) {
        for (const auto& h : hostile_records())
            emit({{"name", h.name}, {"expected_alert", h.expected_alert ? json(alert_name(h.expected_alert)) : json()},
                  {"tls12", h.tls12}});
        return 0;
    }
    const size_t colon = connect.rfind(':');
    if (colon == std::string::npos) {
        std::cerr << "hostile_peer: --connect HOST:PORT is required\n";
        return 2;
    }
    o.peer.host = connect.substr(0, colon);
    try {
        o.peer.port = static_cast<uint16_t>(std::stoul(connect.substr(colon + 1)));
    } catch (const std::exception&) {
        std::cerr << "hostile_peer: bad port in --connect\n";
        return 2;
    }
    o.peer.version = tls == "1.2" ? config::TlsVersion::tls1_2 : config::TlsVersion::tls1_3;
    if (cipher == "aes128") o.peer.cipher = config::Cipher::aes_128_gcm;
    if (cipher == "aes256") o.peer.cipher = config::Cipher::aes_256_gcm;
    if (cipher == "chacha") o.peer.cipher = config::Cipher::chacha20_poly1305;
    o.peer.timeout = std::chrono::seconds(timeout_s);
    std::vector<Step> steps;
    for (const auto& s : raw_steps) {
        auto st = parse_step(s);
        if (!st) {
            std::cerr << "hostile_peer: bad step '" << s << "'\n";
            return 2;
        }
        steps.push_back(*st);
    }
    emit({{"event", "start"}, {"seed", o.seed}, {"connections", o.connections}});
    std::vector<json> results(o.connections);
    std::vector<std::thread> threads;
    for (unsigned i = 0; i < o.connections; ++i)
        threads.emplace_back([&, i] {
            Runner r(o, i);
            results[i] = r.run(steps);
            emit(results[i]);
        });
    for (auto& t : threads) t.join();
    return std::all_of(results.begin(), results.end(), [](const json& j) { return j["ok"] == true; }) ? 0 : 1;
}
