#include "bpf/libbpf_log.hpp"

#include <bpf/libbpf.h>

#include <cstdarg>
#include <cstdio>
#include <mutex>
#include <string>

#include "proxy/base/log.hpp"

namespace ztp::bpf {

namespace {

int print(enum libbpf_print_level level, const char* fmt, va_list args) {
    if (level == LIBBPF_DEBUG) return 0;  // libbpf's debug level is very chatty (every relocation)
    char buf[1024];
    int n = std::vsnprintf(buf, sizeof buf, fmt, args);
    std::string line(buf, n < 0 ? 0 : std::min<size_t>(static_cast<size_t>(n), sizeof buf - 1));
    while (!line.empty() && line.back() == '\n') line.pop_back();
    log::main().debug("libbpf: {}", line);
    return n;
}

}  // namespace

void route_libbpf_logs() {
    static std::once_flag once;
    std::call_once(once, [] { libbpf_set_print(print); });
}

}  // namespace ztp::bpf
