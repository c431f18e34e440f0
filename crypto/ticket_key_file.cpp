#include "crypto/ticket_key_file.hpp"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>

#include "proxy/base/unique_fd.hpp"

namespace ztp::crypto {

namespace {

// Far more than any sensible key list (a key line is 109 bytes); stops a mistaken path such as
// a log file or /dev/zero from being read into memory.
constexpr size_t kMaxFileBytes = 64 * 1024;
// 80 bytes in base64: 27 groups of 4 characters, the last one padded with one '='.
constexpr size_t kKeyBase64Chars = (kTicketKeyBytes + 2) / 3 * 4;

// Text holding key material: scrubbed when it goes.
struct ScrubbedText {
    std::string text;
    ~ScrubbedText() { OPENSSL_cleanse(text.data(), text.size()); }
};

bool is_base64_char(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

std::string at_line(size_t line) { return "line " + std::to_string(line); }

std::string too_large() { return "larger than " + std::to_string(kMaxFileBytes / 1024) + " KiB: not a key file"; }

// Checks one line's base64 (strict: no whitespace inside, '=' only as the final padding, whole
// groups of four) and returns the length it decodes to; an error message otherwise. `column` is
// where the text starts on its line (1-based).
std::string check_base64(std::string_view s, size_t line, size_t column, size_t& decoded) {
    size_t pad = 0;
    for (size_t i = 0; i < s.size(); ++i) {
        const bool padding = s[i] == '=' && s.size() - i <= 2;
        if (padding) {
            ++pad;
        } else if (pad != 0 || !is_base64_char(s[i])) {
            return at_line(line) + ", column " + std::to_string(column + i) + ": not base64";
        }
    }
    if (s.size() % 4 != 0)
        return at_line(line) + ": base64 text cut short (" + std::to_string(s.size()) +
               " characters, not a multiple of 4)";
    decoded = s.size() / 4 * 3 - pad;
    return {};
}

}  // namespace

TicketKeyFile parse_ticket_key_file(std::string_view text) {
    TicketKeyFile out;
    std::vector<size_t> key_lines;  // parallel to out.keys, for the repeated-name message
    size_t line_no = 0;
    for (size_t pos = 0; pos < text.size();) {
        size_t end = text.find('\n', pos);
        if (end == std::string_view::npos) end = text.size();
        std::string_view line = text.substr(pos, end - pos);
        pos = end + 1;
        ++line_no;
        const size_t first = line.find_first_not_of(" \t\r");
        if (first == std::string_view::npos || line[first] == '#') continue;
        line = line.substr(first, line.find_last_not_of(" \t\r") + 1 - first);
        size_t decoded = 0;
        if (auto e = check_base64(line, line_no, first + 1, decoded); !e.empty()) {
            out.error = std::move(e);
            break;
        }
        if (decoded != kTicketKeyBytes) {
            out.error = at_line(line_no) + ": key is " + std::to_string(decoded) + " bytes, expected " +
                        std::to_string(kTicketKeyBytes) +
                        " (16-byte name, 32-byte HMAC key, 32-byte AES-256 key; openssl rand 80 | base64 -w0)";
            break;
        }
        // Decoded in full groups: the one padding '=' of a key line decodes to a trailing zero.
        std::array<uint8_t, kKeyBase64Chars / 4 * 3> raw{};
        const int n = EVP_DecodeBlock(raw.data(), reinterpret_cast<const unsigned char*>(line.data()),
                                      static_cast<int>(line.size()));
        if (n < static_cast<int>(kTicketKeyBytes)) {
            OPENSSL_cleanse(raw.data(), raw.size());
            out.error = at_line(line_no) + ": not base64";
            break;
        }
        auto key = TicketKey::from_bytes(std::span<const uint8_t, kTicketKeyBytes>(raw.data(), kTicketKeyBytes));
        OPENSSL_cleanse(raw.data(), raw.size());
        // Decryption picks the key by name: two keys with one name would make tickets of one of
        // them unreadable (or, worse, checked against the wrong key).
        for (size_t i = 0; i < out.keys.size(); ++i) {
            if (out.keys[i]->name == key.name) {
                out.error = at_line(line_no) + ": key name (its first 16 bytes) repeats line " +
                            std::to_string(key_lines[i]) + "'s";
                break;
            }
        }
        if (!out.error.empty()) break;
        out.keys.push_back(std::make_shared<const TicketKey>(std::move(key)));
        key_lines.push_back(line_no);
    }
    if (out.error.empty() && out.keys.empty())
        out.error = "no key in the file (one base64 key of 80 bytes per line; openssl rand 80 | base64 -w0)";
    if (!out.error.empty()) out.keys.clear();
    return out;
}

TicketKeyFile load_ticket_key_file(const std::string& path) {
    TicketKeyFile out;
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
    struct stat st {};
    if (!fd || ::fstat(fd.get(), &st) != 0) {
        out.error = std::string("cannot read: ") + std::strerror(errno);
        return out;
    }
    if (!S_ISREG(st.st_mode)) {
        out.error = "not a regular file";
        return out;
    }
    if (static_cast<size_t>(st.st_size) > kMaxFileBytes) {
        out.error = too_large();
        return out;
    }
    ScrubbedText buf;
    // Sized once (no reallocation leaves an unscrubbed copy); one byte more tells a file that grew.
    buf.text.resize(kMaxFileBytes + 1);
    size_t got = 0;
    for (;;) {
        const ssize_t n = ::read(fd.get(), buf.text.data() + got, buf.text.size() - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            out.error = std::string("cannot read: ") + std::strerror(errno);
            return out;
        }
        if (n == 0) break;
        got += static_cast<size_t>(n);
        if (got > kMaxFileBytes) {
            out.error = too_large();
            return out;
        }
    }
    out = parse_ticket_key_file(std::string_view(buf.text.data(), got));
    out.world_readable = (st.st_mode & S_IROTH) != 0;
    return out;
}

}  // namespace ztp::crypto
