// Result<T>: the data plane's error channel. GCC 12 in C++20 mode has no std::expected, so this is
// a small stand-in carrying either a value or an Error (errno plus an optional static context).
#pragma once

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <variant>

namespace ztp {

struct Error {
    int code = 0;                   // positive errno value
    const char* what = "";          // static string: where it happened (never payload or keys)

    std::string message() const {
        std::string m = what;
        if (code != 0) {
            if (!m.empty()) m += ": ";
            m += std::strerror(code);
        }
        return m;
    }
};

inline Error errno_error(const char* what) { return Error{errno, what}; }
inline Error make_error(int code, const char* what) { return Error{code < 0 ? -code : code, what}; }

template <typename T>
class [[nodiscard]] Result {
public:
    Result(T value) : v_(std::move(value)) {}
    Result(Error e) : v_(e) {}

    bool ok() const { return v_.index() == 0; }
    explicit operator bool() const { return ok(); }

    T& value() & { return std::get<0>(v_); }
    const T& value() const& { return std::get<0>(v_); }
    T&& value() && { return std::get<0>(std::move(v_)); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    T& operator*() & { return value(); }

    const Error& error() const { return std::get<1>(v_); }

private:
    std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
public:
    Result() = default;
    Result(Error e) : err_(e), ok_(false) {}

    bool ok() const { return ok_; }
    explicit operator bool() const { return ok_; }
    const Error& error() const { return err_; }

private:
    Error err_{};
    bool ok_ = true;
};

inline Result<void> ok_result() { return {}; }

}  // namespace ztp
