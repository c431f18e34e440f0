// bench_client: the OpenSSL load generator for the proxy benchmarks (tests/bench/run_bench.py).
//
//   bench_client MODE --connect IP:PORT [options]
//
// Modes (each prints ONE JSON object on stdout; exit 0 on success, 1 when the run failed):
//   download BYTES     one TLS connection; read until BYTES arrived (backend: `source BYTES`)
//   upload BYTES       one TLS connection; write BYTES, wait for a 1-byte ack (backend: `sink BYTES`)
//   handshakes N       N full handshakes (no session reuse), spread over --threads; each does one
//                      16-byte echo round trip unless --no-roundtrip (backend: `echo`)
//   idle N             open N TLS connections (handshake done, no application data), print the
//                      JSON line, hold them until stdin closes (or --max-seconds), then close
// Options:
//   --tls 1.2|1.3           exact protocol version (default 1.3)
//   --cipher aes128gcm|aes256gcm|chacha20   the only AEAD offered (default aes128gcm)
//   --threads T             handshakes: client threads (default 1)
//   --duration S            handshakes: stop after S seconds even if N were not done (default 10)
//   --max-seconds S         download/upload/idle: give up after S seconds (default 120)
//   --sni NAME              server name (default localhost)
//   --chunk BYTES           upload write size (default 256 KiB)
//   --file PATH             upload: send this file's bytes (BYTES = its size or less), not 'u's
//   --half-close            upload: send close_notify after the last byte, then wait for the ack
//                           (the proxy sees the end of the client's stream at once)
//   --sha256                download: add the SHA-256 of the received bytes ("sha256") to the JSON
//   --http                  download: send "GET / HTTP/1.0" first, skip the response's headers;
//                           BYTES counts body bytes (an HTTP proxy in front of `httpfile`)
// Certificates are not verified (the bench generates throwaway ones); the handshake still checks the
// server's signature, as every TLS client does. Not a test: a load tool.
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
    std::string mode;
    uint64_t amount = 0;
    sockaddr_in addr{};
    std::string tls = "1.3";
    std::string cipher = "aes128gcm";
    int threads = 1;
    double duration = 10;
    double max_seconds = 120;
    std::string sni = "localhost";
    size_t chunk = 256 * 1024;
    bool roundtrip = true;
    std::string file;
    bool half_close = false;
    bool sha256 = false;
    bool http = false;
};

std::string hex(const unsigned char* p, unsigned n) {
    static const char* d = "0123456789abcdef";
    std::string o;
    for (unsigned i = 0; i < n; ++i) {
        o += d[p[i] >> 4];
        o += d[p[i] & 15];
    }
    return o;
}

[[noreturn]] void usage() {
    std::fprintf(stderr,
                 "usage: bench_client download|upload|handshakes|idle AMOUNT --connect IP:PORT [--tls 1.2|1.3] "
                 "[--cipher aes128gcm|aes256gcm|chacha20] [--threads T] [--duration S] [--max-seconds S] "
                 "[--sni NAME] [--chunk BYTES] [--no-roundtrip] [--file PATH] [--half-close] [--sha256] [--http]\n");
    std::exit(2);
}

std::string ssl_errors() {
    std::string out;
    unsigned long e;
    char buf[256];
    while ((e = ERR_get_error()) != 0) {
        ERR_error_string_n(e, buf, sizeof buf);
        if (!out.empty()) out += "; ";
        out += buf;
    }
    return out;
}

std::string json_escape(const std::string& s) {
    std::string o;
    for (char c : s) {
        if (c == '"' || c == '\\') o += '\\';
        if (static_cast<unsigned char>(c) < 0x20) continue;
        o += c;
    }
    return o;
}

void raise_nofile() {
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
    if (rl.rlim_max < 200000) {
        rlimit big{200000, 200000};
        if (setrlimit(RLIMIT_NOFILE, &big) == 0) return;
    }
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
}

SSL_CTX* make_ctx(const Options& o) {
    SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) return nullptr;
    int v = o.tls == "1.2" ? TLS1_2_VERSION : TLS1_3_VERSION;
    SSL_CTX_set_min_proto_version(ctx, v);
    SSL_CTX_set_max_proto_version(ctx, v);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);  // every handshake is a full one
    const char* suite13 = "TLS_AES_128_GCM_SHA256";
    const char* suite12 = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256";
    if (o.cipher == "aes256gcm") {
        suite13 = "TLS_AES_256_GCM_SHA384";
        suite12 = "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384";
    } else if (o.cipher == "chacha20") {
        suite13 = "TLS_CHACHA20_POLY1305_SHA256";
        suite12 = "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
    } else if (o.cipher != "aes128gcm") {
        std::fprintf(stderr, "unknown --cipher %s\n", o.cipher.c_str());
        std::exit(2);
    }
    if (SSL_CTX_set_ciphersuites(ctx, suite13) != 1 || SSL_CTX_set_cipher_list(ctx, suite12) != 1) {
        std::fprintf(stderr, "cipher setup failed: %s\n", ssl_errors().c_str());
        std::exit(2);
    }
    // Bulk: read ahead into a large buffer so one recv pulls many records; keep the buffers.
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_default_read_buffer_len(ctx, 256 * 1024);
    SSL_CTX_clear_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_mode(ctx, SSL_MODE_AUTO_RETRY);
    return ctx;
}

int tcp_connect(const sockaddr_in& addr, double timeout_s) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(timeout_s);
    tv.tv_usec = static_cast<suseconds_t>((timeout_s - static_cast<double>(tv.tv_sec)) * 1e6);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
        ::close(fd);
        return -1;
    }
    return fd;
}

struct Tls {
    SSL* ssl = nullptr;
    int fd = -1;
    void reset() {
        if (ssl) SSL_free(ssl);
        if (fd >= 0) ::close(fd);
        ssl = nullptr;
        fd = -1;
    }
};

// Connect + full handshake. On failure returns false with `why` set.
bool open_tls(SSL_CTX* ctx, const Options& o, Tls& t, std::string& why, double timeout_s) {
    t.fd = tcp_connect(o.addr, timeout_s);
    if (t.fd < 0) {
        why = std::string("connect: ") + std::strerror(errno);
        return false;
    }
    t.ssl = SSL_new(ctx);
    SSL_set_fd(t.ssl, t.fd);
    SSL_set_tlsext_host_name(t.ssl, o.sni.c_str());
    if (SSL_connect(t.ssl) != 1) {
        why = "handshake: " + ssl_errors();
        if (why == "handshake: ") why += std::strerror(errno);
        t.reset();
        return false;
    }
    return true;
}

std::string negotiated(SSL* ssl) {
    return std::string("\"version\":\"") + SSL_get_version(ssl) + "\",\"cipher\":\"" + SSL_get_cipher_name(ssl) + "\"";
}

// Orderly close: close_notify, FIN, then wait (bounded) for the peer to finish.
void close_tls(Tls& t) {
    if (t.ssl) SSL_shutdown(t.ssl);
    if (t.fd >= 0) {
        ::shutdown(t.fd, SHUT_WR);
        char tmp[4096];
        for (int i = 0; i < 64; ++i) {
            ssize_t r = ::recv(t.fd, tmp, sizeof tmp, 0);
            if (r <= 0) break;
        }
    }
    t.reset();
}

int run_bulk(const Options& o, bool download) {
    SSL_CTX* ctx = make_ctx(o);
    Tls t;
    std::string why;
    if (!open_tls(ctx, o, t, why, o.max_seconds)) {
        std::printf("{\"ok\":false,\"error\":\"%s\"}\n", json_escape(why).c_str());
        return 1;
    }
    std::vector<char> buf(256 * 1024, 'u');
    std::string file;
    if (!o.file.empty()) {
        FILE* f = std::fopen(o.file.c_str(), "rb");
        if (!f) {
            std::printf("{\"ok\":false,\"error\":\"cannot open %s\"}\n", json_escape(o.file).c_str());
            return 1;
        }
        char tmp[1 << 16];
        size_t n;
        while ((n = std::fread(tmp, 1, sizeof tmp, f)) > 0) file.append(tmp, n);
        std::fclose(f);
        if (file.size() < o.amount) {
            std::printf("{\"ok\":false,\"error\":\"file shorter than BYTES\"}\n");
            return 1;
        }
    }
    std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> sha(o.sha256 ? EVP_MD_CTX_new() : nullptr, EVP_MD_CTX_free);
    if (sha) EVP_DigestInit_ex(sha.get(), EVP_sha256(), nullptr);
    auto start = Clock::now();
    auto deadline = start + std::chrono::duration<double>(o.max_seconds);
    uint64_t done = 0;
    std::string error;
    std::string head;  // --http: response header bytes
    bool in_body = !o.http;
    if (download && o.http) {
        std::string req = "GET / HTTP/1.0\r\nHost: " + o.sni + "\r\n\r\n";
        if (SSL_write(t.ssl, req.data(), static_cast<int>(req.size())) != static_cast<int>(req.size()))
            error = "sending the request failed: " + ssl_errors();
    }
    if (download && error.empty()) {
        while (done < o.amount) {
            int r = SSL_read(t.ssl, buf.data(), static_cast<int>(buf.size()));
            if (r > 0 && !in_body) {  // --http: strip the response header
                head.append(buf.data(), static_cast<size_t>(r));
                size_t end = head.find("\r\n\r\n");
                if (end == std::string::npos) {
                    if (head.size() > 65536) {
                        error = "no end of the response header";
                        break;
                    }
                    continue;
                }
                in_body = true;
                size_t body = head.size() - (end + 4);
                if (head.compare(0, 12, "HTTP/1.1 200") != 0 && head.compare(0, 12, "HTTP/1.0 200") != 0) {
                    error = "response status: " + head.substr(0, head.find("\r\n"));
                    break;
                }
                if (sha) EVP_DigestUpdate(sha.get(), head.data() + end + 4, body);
                done += body;
                continue;
            }
            if (r > 0 && sha) EVP_DigestUpdate(sha.get(), buf.data(), static_cast<size_t>(r));
            if (r <= 0) {
                int e = SSL_get_error(t.ssl, r);
                error = e == SSL_ERROR_ZERO_RETURN ? "close_notify before all bytes arrived"
                                                   : "SSL_read error " + std::to_string(e) + " " + ssl_errors() +
                                                         (errno ? std::string(" errno: ") + std::strerror(errno) : "");
                break;
            }
            done += static_cast<uint64_t>(r);
            if ((done & ((1u << 26) - 1)) < static_cast<uint64_t>(r) && Clock::now() > deadline) {
                error = "timed out";
                break;
            }
        }
    } else if (!download) {
        while (done < o.amount) {
            size_t n = std::min<uint64_t>(o.chunk, o.amount - done);
            n = std::min(n, buf.size());
            const char* src = file.empty() ? buf.data() : file.data() + done;
            int w = SSL_write(t.ssl, src, static_cast<int>(n));
            if (w <= 0) {
                error = "SSL_write error " + std::to_string(SSL_get_error(t.ssl, w)) + " " + ssl_errors();
                break;
            }
            done += static_cast<uint64_t>(w);
            if ((done & ((1u << 26) - 1)) < static_cast<uint64_t>(w) && Clock::now() > deadline) {
                error = "timed out";
                break;
            }
        }
        if (error.empty() && o.half_close) {
            if (SSL_shutdown(t.ssl) < 0) error = "SSL_shutdown failed: " + ssl_errors();
        }
        if (error.empty()) {  // wait for the backend's ack: every byte went through the proxy
            char k = 0;
            int r = SSL_read(t.ssl, &k, 1);
            if (r != 1 || k != 'K') error = "no ack from the backend (" + ssl_errors() + ")";
        }
    }
    double secs = std::chrono::duration<double>(Clock::now() - start).count();
    std::string neg = negotiated(t.ssl);
    if (sha) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned len = 0;
        EVP_DigestFinal_ex(sha.get(), md, &len);
        neg += ",\"sha256\":\"" + hex(md, len) + "\"";
    }
    close_tls(t);
    SSL_CTX_free(ctx);
    std::printf("{\"ok\":%s,\"bytes\":%llu,\"seconds\":%.6f,\"gbps\":%.4f,%s%s}\n", error.empty() ? "true" : "false",
                (unsigned long long)done, secs, secs > 0 ? double(done) * 8 / secs / 1e9 : 0.0, neg.c_str(),
                error.empty() ? "" : (",\"error\":\"" + json_escape(error) + "\"").c_str());
    return error.empty() ? 0 : 1;
}

int run_handshakes(const Options& o) {
    SSL_CTX* ctx = make_ctx(o);
    std::atomic<uint64_t> next{0}, ok{0}, failed{0};
    std::mutex mu;
    std::string first_error, neg;
    auto start = Clock::now();
    auto deadline = start + std::chrono::duration<double>(o.duration);
    auto worker = [&] {
        char msg[16];
        std::memset(msg, 'p', sizeof msg);
        while (next.fetch_add(1) < o.amount && Clock::now() < deadline) {
            Tls t;
            std::string why;
            if (!open_tls(ctx, o, t, why, 5.0)) {
                ++failed;
                std::lock_guard<std::mutex> g(mu);
                if (first_error.empty()) first_error = why;
                continue;
            }
            if (o.roundtrip) {
                char got[16];
                int have = 0;
                if (SSL_write(t.ssl, msg, sizeof msg) != static_cast<int>(sizeof msg)) have = -1;
                while (have >= 0 && have < static_cast<int>(sizeof got)) {
                    int r = SSL_read(t.ssl, got + have, static_cast<int>(sizeof got) - have);
                    if (r <= 0) {
                        have = -1;
                        break;
                    }
                    have += r;
                }
                if (have < 0) {
                    ++failed;
                    std::lock_guard<std::mutex> g(mu);
                    if (first_error.empty()) first_error = "echo round trip failed: " + ssl_errors();
                    t.reset();
                    continue;
                }
            }
            {
                std::lock_guard<std::mutex> g(mu);
                if (neg.empty()) neg = negotiated(t.ssl);
            }
            close_tls(t);
            ++ok;
        }
    };
    std::vector<std::thread> threads;
    for (int i = 0; i < o.threads; ++i) threads.emplace_back(worker);
    for (auto& th : threads) th.join();
    double secs = std::chrono::duration<double>(Clock::now() - start).count();
    std::printf("{\"ok\":%s,\"handshakes\":%llu,\"failed\":%llu,\"seconds\":%.6f,\"per_second\":%.1f%s%s%s}\n",
                failed == 0 && ok > 0 ? "true" : "false", (unsigned long long)ok.load(),
                (unsigned long long)failed.load(), secs, secs > 0 ? double(ok) / secs : 0.0, neg.empty() ? "" : ",",
                neg.c_str(), first_error.empty() ? "" : (",\"error\":\"" + json_escape(first_error) + "\"").c_str());
    SSL_CTX_free(ctx);
    return failed == 0 && ok > 0 ? 0 : 1;
}

int run_idle(const Options& o) {
    SSL_CTX* ctx = make_ctx(o);
    SSL_CTX_set_default_read_buffer_len(ctx, 0);  // many connections: default-size buffers
    SSL_CTX_set_read_ahead(ctx, 0);
    std::vector<Tls> conns(o.amount);
    std::atomic<uint64_t> next{0}, ok{0}, failed{0};
    std::mutex mu;
    std::string first_error;
    auto start = Clock::now();
    auto deadline = start + std::chrono::duration<double>(o.max_seconds);
    auto worker = [&] {
        for (uint64_t i; (i = next.fetch_add(1)) < o.amount && Clock::now() < deadline;) {
            std::string why;
            if (open_tls(ctx, o, conns[i], why, 10.0)) {
                ++ok;
            } else {
                ++failed;
                std::lock_guard<std::mutex> g(mu);
                if (first_error.empty()) first_error = why;
            }
        }
    };
    std::vector<std::thread> threads;
    for (int i = 0; i < o.threads; ++i) threads.emplace_back(worker);
    for (auto& th : threads) th.join();
    double secs = std::chrono::duration<double>(Clock::now() - start).count();
    std::printf("{\"ok\":%s,\"open\":%llu,\"failed\":%llu,\"seconds\":%.3f%s}\n", failed == 0 ? "true" : "false",
                (unsigned long long)ok.load(), (unsigned long long)failed.load(), secs,
                first_error.empty() ? "" : (",\"error\":\"" + json_escape(first_error) + "\"").c_str());
    std::fflush(stdout);
    // Hold until stdin closes (bounded by --max-seconds).
    auto hold_deadline = Clock::now() + std::chrono::duration<double>(o.max_seconds);
    char tmp[256];
    while (Clock::now() < hold_deadline) {
        pollfd p{0, POLLIN, 0};
        int n = poll(&p, 1, 200);
        if (n > 0) {
            ssize_t r = ::read(0, tmp, sizeof tmp);
            if (r <= 0) break;
        }
    }
    for (auto& t : conns) t.reset();  // abortive close is fine: we only measured memory
    SSL_CTX_free(ctx);
    return failed == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 3) usage();
    Options o;
    o.mode = argv[1];
    o.amount = std::strtoull(argv[2], nullptr, 10);
    bool have_addr = false;
    for (int i = 3; i < argc; ++i) {
        std::string a = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) usage();
            return argv[++i];
        };
        if (a == "--connect") {
            std::string s = next();
            auto colon = s.rfind(':');
            if (colon == std::string::npos) usage();
            o.addr.sin_family = AF_INET;
            o.addr.sin_port = htons(static_cast<uint16_t>(std::atoi(s.c_str() + colon + 1)));
            if (inet_pton(AF_INET, s.substr(0, colon).c_str(), &o.addr.sin_addr) != 1) usage();
            have_addr = true;
        } else if (a == "--tls") o.tls = next();
        else if (a == "--cipher") o.cipher = next();
        else if (a == "--threads") o.threads = std::max(1, std::atoi(next().c_str()));
        else if (a == "--duration") o.duration = std::atof(next().c_str());
        else if (a == "--max-seconds") o.max_seconds = std::atof(next().c_str());
        else if (a == "--sni") o.sni = next();
        else if (a == "--chunk") o.chunk = std::strtoull(next().c_str(), nullptr, 10);
        else if (a == "--no-roundtrip") o.roundtrip = false;
        else if (a == "--file") o.file = next();
        else if (a == "--half-close") o.half_close = true;
        else if (a == "--sha256") o.sha256 = true;
        else if (a == "--http") o.http = true;
        else usage();
    }
    if (!have_addr || (o.tls != "1.2" && o.tls != "1.3")) usage();
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    if (o.mode == "download") return run_bulk(o, true);
    if (o.mode == "upload") return run_bulk(o, false);
    if (o.mode == "handshakes") return run_handshakes(o);
    if (o.mode == "idle") return run_idle(o);
    usage();
}
