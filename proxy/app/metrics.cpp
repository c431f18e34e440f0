#include "proxy/app/metrics.hpp"

#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>

#include <sstream>
#include <vector>

#include "crypto/client_cert.hpp"
#include "crypto/kernel_record_path.hpp"
#include "proxy/conn/stats.hpp"

namespace ztp::app {

namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

double load(const std::atomic<uint64_t>& a) { return static_cast<double>(a.load(std::memory_order_relaxed)); }

ClientMetric value(double v, MetricType type, std::vector<ClientMetric::Label> labels = {}) {
    ClientMetric m;
    m.label = std::move(labels);
    if (type == MetricType::Gauge) m.gauge.value = v;
    else m.counter.value = v;
    return m;
}

MetricFamily family(std::string name, std::string help, MetricType type, std::vector<ClientMetric> metrics) {
    return MetricFamily{std::move(name), std::move(help), type, std::move(metrics)};
}

MetricFamily counter(std::string name, std::string help, const std::atomic<uint64_t>& a) {
    return family(std::move(name), std::move(help), MetricType::Counter, {value(load(a), MetricType::Counter)});
}

}  // namespace

std::string render_metrics() {
    const auto& s = conn::stats();
    using C = MetricType;
    std::vector<MetricFamily> f;
    f.push_back(family("ztproxy_connections_active", "Client connections open now", C::Gauge,
                       {value(static_cast<double>(s.connections_active.load(std::memory_order_relaxed)), C::Gauge)}));
    f.push_back(counter("ztproxy_connections_total", "Client connections accepted", s.connections_total));
    f.push_back(counter("ztproxy_connections_refused_total", "Connections closed at accept: over max_connections",
                        s.connections_refused_limit));
    f.push_back(family("ztproxy_handshakes_total", "TLS handshakes by result", C::Counter,
                       {value(load(s.handshakes_ok), C::Counter, {{"result", "ok"}}),
                        value(load(s.handshakes_failed), C::Counter, {{"result", "failed"}}),
                        value(load(s.handshake_timeouts), C::Counter, {{"result", "timeout"}})}));
    f.push_back(counter("ztproxy_client_certs_verified_total",
                        "Handshakes whose client certificate verified (mTLS, resumed sessions included)",
                        s.client_certs_verified));
    std::vector<ClientMetric> cert_failures;
    for (size_t i = 0; i < static_cast<size_t>(crypto::ClientCertFailure::count); ++i)
        cert_failures.push_back(value(load(s.client_cert_failures[i]), C::Counter,
                                      {{"reason", crypto::to_string(static_cast<crypto::ClientCertFailure>(i))}}));
    f.push_back(family("ztproxy_client_cert_failures_total",
                       "Handshakes refused because of the client certificate, by reason", C::Counter,
                       std::move(cert_failures)));
    f.push_back(counter("ztproxy_idle_timeouts_total", "Connections closed after idle_timeout", s.idle_timeouts));
    f.push_back(counter("ztproxy_backend_connect_failures_total", "Connections whose backend could not be reached",
                        s.backend_connect_failures));
    std::vector<ClientMetric> by_path;
    for (size_t i = 0; i < 3; ++i) {
        by_path.push_back(value(load(s.bytes_up_by_path[i]), C::Counter,
                                {{"direction", "client_to_backend"}, {"record_path", conn::kRecordPaths[i]}}));
        by_path.push_back(value(load(s.bytes_down_by_path[i]), C::Counter,
                                {{"direction", "backend_to_client"}, {"record_path", conn::kRecordPaths[i]}}));
    }
    f.push_back(family("ztproxy_plaintext_bytes_total",
                       "Plaintext bytes relayed, by direction and record path (counted when a connection ends)",
                       C::Counter, std::move(by_path)));
    f.push_back(counter("ztproxy_spliced_bytes_total", "Plaintext bytes moved by splice, never in user space",
                        s.spliced_bytes));
    f.push_back(counter("ztproxy_copied_bytes_total", "Plaintext bytes copied in user space", s.copied_bytes));
    f.push_back(counter("ztproxy_bad_records_total", "Client records that failed authentication (never forwarded)",
                        s.bad_records));
    f.push_back(counter("ztproxy_key_updates_total", "Client TLS 1.3 KeyUpdates followed", s.key_updates));
    f.push_back(counter("ztproxy_ktls_installs_total", "Sessions whose record crypto moved into the kernel",
                        s.ktls_installs));
    std::vector<ClientMetric> fallbacks;
    for (size_t i = 0; i < static_cast<size_t>(crypto::KtlsFallback::count); ++i)
        fallbacks.push_back(value(load(s.ktls_fallbacks[i]), C::Counter,
                                  {{"reason", crypto::to_string(static_cast<crypto::KtlsFallback>(i))}}));
    f.push_back(family("ztproxy_ktls_fallbacks_total", "Sessions kTLS could not take, by reason", C::Counter,
                       std::move(fallbacks)));
    f.push_back(counter("ztproxy_ktls_key_update_closes_total",
                        "Connections closed on a client KeyUpdate the kernel cannot follow", s.ktls_key_update_closes));
    f.push_back(family("ztproxy_reloads_total", "Policy reloads by outcome", C::Counter,
                       {value(load(s.reloads_ok), C::Counter, {{"result", "ok"}}),
                        value(load(s.reloads_failed), C::Counter, {{"result", "failed"}})}));
    std::ostringstream out;
    prometheus::TextSerializer().Serialize(out, f);
    return out.str();
}

}  // namespace ztp::app
