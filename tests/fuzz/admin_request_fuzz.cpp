// The admin endpoint's request parser on arbitrary bytes: never crashes, and whatever it accepts
// has a token method and a path that starts with '/' and holds no space or control byte.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "proxy/app/admin_request.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view head(reinterpret_cast<const char*>(data), size);
    auto r = ztp::app::parse_admin_request(head);
    if (!r) return 0;
    if (r->method.empty() || r->path.empty() || r->path.front() != '/') std::abort();
    for (char c : r->path)
        if (c <= 0x20 || c >= 0x7f) std::abort();
    return 0;
}
