// The admin endpoint's request parser on arbitrary bytes: never crashes, and whatever it accepts
// has a token method, a path that starts with '/' and holds no space or control byte, and an
// Authorization value without line breaks whose bearer token (if any) is non-empty and inside it.
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
    if (r->authorization) {
        const std::string_view value = *r->authorization;
        if (value.find("\r\n") != std::string_view::npos) std::abort();
        if (auto token = ztp::app::bearer_token(value)) {
            if (token->empty() || token->data() < value.data() || token->data() + token->size() > value.data() + value.size())
                std::abort();
        }
    }
    return 0;
}
