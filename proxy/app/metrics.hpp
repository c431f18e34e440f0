// Prometheus metrics: the proxy's counters (conn::stats(), relaxed atomics updated by the workers)
// rendered in the text exposition format at scrape time. Nothing on the data path knows about
// Prometheus; prometheus-cpp does the format.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "proxy/conn/listener_admission.hpp"

namespace ztp::app {

// `admissions`: one per listener (the admission drop counters are read from them).
std::string render_metrics(const std::vector<std::shared_ptr<conn::ListenerAdmission>>& admissions);

}  // namespace ztp::app
