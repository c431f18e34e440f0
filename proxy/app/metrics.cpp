#include "proxy/app/metrics.hpp"

#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>

#include <iterator>
#include <limits>
#include <sstream>
#include <vector>

#include "crypto/client_cert.hpp"
#include "crypto/kernel_record_path.hpp"
#include "proxy/conn/stats.hpp"
#include "proxy/redact/redact_metrics.hpp"

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

// Successful backend connects: how long from connect() to established, in seconds.
MetricFamily connect_histogram(const conn::Stats& s) {
    ClientMetric m;
    m.histogram.sample_sum = static_cast<double>(s.backend_connect_micros.load(std::memory_order_relaxed)) / 1e6;
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= std::size(conn::Stats::kConnectBuckets); ++i) {
        cumulative += s.backend_connect_bucket[i].load(std::memory_order_relaxed);
        ClientMetric::Bucket b;
        b.cumulative_count = cumulative;
        b.upper_bound = i < std::size(conn::Stats::kConnectBuckets) ? conn::Stats::kConnectBuckets[i]
                                                                     : std::numeric_limits<double>::infinity();
        m.histogram.bucket.push_back(b);
    }
    m.histogram.sample_count = cumulative;  // equal to +Inf's count even while workers observe
    return family("ztproxy_backend_connect_duration_seconds", "Time to establish a backend connection",
                  MetricType::Histogram, {m});
}

// Redaction: matches per rule, and per direction what the engine inspected and what the rewrite
// wrote or copied.
void redaction_families(std::vector<MetricFamily>& f) {
    using C = MetricType;
    auto& rm = redact::RedactMetrics::process();
    std::vector<ClientMetric> matches, pause_masks;
    for (const auto& row : rm.rules()) {
        const std::vector<ClientMetric::Label> labels{{"direction", config::to_string(row.direction)},
                                                      {"rule", row.id}};
        matches.push_back(value(static_cast<double>(row.matches), C::Counter, labels));
        pause_masks.push_back(value(static_cast<double>(row.pause_masks), C::Counter, labels));
    }
    f.push_back(family("ztproxy_redaction_matches_total", "Redaction rule matches, by rule id and direction",
                       C::Counter, std::move(matches)));
    f.push_back(family("ztproxy_redaction_pause_masks_total",
                       "Pauses at which held bytes a pending match could cover were sent masked (on_pause = mask)",
                       C::Counter, std::move(pause_masks)));
    struct Field {
        const char* name;
        const char* help;
        std::atomic<uint64_t> redact::DirectionTotals::*member;
    };
    const Field fields[] = {
        {"ztproxy_redaction_inspected_bytes_total", "Plaintext bytes scanned by the redaction engine",
         &redact::DirectionTotals::bytes_inspected},
        {"ztproxy_redaction_replacement_bytes_total", "Bytes ztproxy wrote in place of matches (masks, replacements)",
         &redact::DirectionTotals::replacement_bytes},
        {"ztproxy_redaction_copied_bytes_total",
         "Verified plaintext bytes the rewrite copied (0: it references them in place)",
         &redact::DirectionTotals::verified_bytes_copied},
        {"ztproxy_redaction_late_matches_total",
         "Matches that reached into bytes already released in clear at a pause (on_pause = release)",
         &redact::DirectionTotals::late_matches},
    };
    for (const Field& field : fields) {
        std::vector<ClientMetric> by_direction;
        for (auto d : {config::RuleDirection::request, config::RuleDirection::response})
            by_direction.push_back(value(load(rm.totals(d).*field.member), C::Counter,
                                         {{"direction", config::to_string(d)}}));
        f.push_back(family(field.name, field.help, C::Counter, std::move(by_direction)));
    }
}

// Admission (per listener): what was refused, by reason and by deny rule, and where it is enforced.
void admission_families(std::vector<MetricFamily>& f,
                        const std::vector<std::shared_ptr<conn::ListenerAdmission>>& admissions) {
    using C = MetricType;
    std::vector<ClientMetric> decisions, by_rule, enforced;
    for (const auto& a : admissions) {
        const auto c = a->counters();
        const std::string& l = a->listener();
        decisions.push_back(value(static_cast<double>(c.admitted), C::Counter, {{"listener", l}, {"result", "admitted"}}));
        decisions.push_back(value(static_cast<double>(c.denied), C::Counter, {{"listener", l}, {"result", "denied"}}));
        decisions.push_back(value(static_cast<double>(c.not_allowed), C::Counter,
                                  {{"listener", l}, {"result", "not_allowed"}}));
        decisions.push_back(value(static_cast<double>(c.rate_limited), C::Counter,
                                  {{"listener", l}, {"result", "rate_limited"}}));
        decisions.push_back(value(static_cast<double>(c.unparsed), C::Counter,
                                  {{"listener", l}, {"result", "unparsed"}}));
        const auto rules = a->deny_rules();
        for (size_t i = 0; i < rules.size() && i < c.per_deny_rule.size(); ++i)
            by_rule.push_back(value(static_cast<double>(c.per_deny_rule[i]), C::Counter,
                                    {{"listener", l}, {"rule", rules[i]}}));
        enforced.push_back(value(1, C::Gauge, {{"enforcement", conn::to_string(a->enforcement())}, {"listener", l}}));
    }
    f.push_back(family("ztproxy_admission_decisions_total",
                       "New connections judged by [listener.admission], by result (kernel: SYNs; user space: accepts; "
                       "unparsed: packets dropped because their headers could not be parsed)",
                       C::Counter, std::move(decisions)));
    f.push_back(family("ztproxy_admission_deny_rule_drops_total", "New connections dropped, by the deny rule that matched",
                       C::Counter, std::move(by_rule)));
    f.push_back(family("ztproxy_admission_enforcement", "Where each listener's admission runs (kernel, userspace, none)",
                       C::Gauge, std::move(enforced)));
}

}  // namespace

std::string render_metrics(const std::vector<std::shared_ptr<conn::ListenerAdmission>>& admissions) {
    const auto& s = conn::stats();
    using C = MetricType;
    std::vector<MetricFamily> f;
    f.push_back(family("ztproxy_connections_active", "Client connections open now", C::Gauge,
                       {value(static_cast<double>(s.connections_active.load(std::memory_order_relaxed)), C::Gauge)}));
    f.push_back(counter("ztproxy_connections_total", "Client connections accepted", s.connections_total));
    f.push_back(family("ztproxy_connections_refused_total", "Connections closed at accept, by the limit they hit",
                       C::Counter,
                       {value(load(s.connections_refused_limit), C::Counter, {{"reason", "max_connections"}}),
                        value(load(s.connections_refused_per_source), C::Counter,
                              {{"reason", "max_connections_per_source"}})}));
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
    f.push_back(counter("ztproxy_truncated_closes_total",
                        "Connections ended early with bytes still queued towards the client (closed without close_notify)",
                        s.truncated_closes));
    f.push_back(counter("ztproxy_gated_slot_waits_total",
                        "Times a client was not read for a moment because every gated slot of its worker was busy",
                        s.gated_slot_waits));
    f.push_back(counter("ztproxy_pipe_resize_failures_total",
                        "Splice pipes the kernel would not size to connection_buffer (fs.pipe-max-size, "
                        "fs.pipe-user-pages-soft): relayed at the smaller size they had",
                        s.pipe_resize_failures));
    f.push_back(counter("ztproxy_backend_connect_failures_total", "Connections whose backend could not be reached",
                        s.backend_connect_failures));
    f.push_back(connect_histogram(s));
    std::vector<ClientMetric> failures;
    for (size_t i = 0; i < static_cast<size_t>(crypto::HandshakeFailure::count); ++i)
        failures.push_back(value(load(s.handshake_failures[i]), C::Counter,
                                 {{"reason", crypto::to_string(static_cast<crypto::HandshakeFailure>(i))}}));
    f.push_back(family("ztproxy_handshake_failures_total", "Failed TLS handshakes, by reason", C::Counter,
                       std::move(failures)));
    std::vector<ClientMetric> closed;
    for (size_t i = 0; i < conn::kCloseReasonCount; ++i)
        closed.push_back(value(load(s.connections_closed[i]), C::Counter, {{"reason", conn::kCloseReasons[i]}}));
    f.push_back(family("ztproxy_connections_closed_total",
                       "Client connections ended, by reason (the access log's close=)", C::Counter, std::move(closed)));
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
    f.push_back(family("ztproxy_spliced_bytes_total",
                       "Plaintext bytes moved by splice, never in user space, by direction",
                       C::Counter,
                       {value(load(s.spliced_bytes_up), C::Counter, {{"direction", "client_to_backend"}}),
                        value(load(s.spliced_bytes_down), C::Counter, {{"direction", "backend_to_client"}})}));
    f.push_back(family("ztproxy_copied_bytes_total",
                       "Plaintext bytes copied in user space, by direction", C::Counter,
                       {value(load(s.copied_bytes_up), C::Counter, {{"direction", "client_to_backend"}}),
                        value(load(s.copied_bytes_down), C::Counter, {{"direction", "backend_to_client"}})}));
    f.push_back(counter("ztproxy_bad_records_total", "Client records that failed authentication (never forwarded)",
                        s.bad_records));
    f.push_back(counter("ztproxy_malformed_records_total",
                        "Client records refused at their header: content type, version, length (never forwarded)",
                        s.malformed_records));
    f.push_back(counter("ztproxy_key_updates_total", "Client TLS 1.3 KeyUpdates followed (new keys installed)",
                        s.key_updates));
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
    redaction_families(f);
    admission_families(f, admissions);
    std::ostringstream out;
    prometheus::TextSerializer().Serialize(out, f);
    return out.str();
}

}  // namespace ztp::app
