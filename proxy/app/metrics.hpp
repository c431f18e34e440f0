// Prometheus metrics: the proxy's counters (conn::stats(), relaxed atomics updated by the workers)
// rendered in the text exposition format at scrape time. Nothing on the data path knows about
// Prometheus; prometheus-cpp does the format.
#pragma once

#include <string>

namespace ztp::app {

std::string render_metrics();

}  // namespace ztp::app
