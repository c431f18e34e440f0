#include "proxy/app/probe_command.hpp"

#include <sys/utsname.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "bpf/bpf_probe.hpp"
#include "crypto/ktls_probe.hpp"
#include "proxy/io/uring_probe.hpp"

namespace ztp::app {

namespace {

struct Report {
    std::string sysname, release, machine;
    crypto::KtlsProbe ktls;
    io::UringProbe uring;
    bpf::BpfProbe bpf;
};

Report run_probes() {
    Report r;
    utsname u{};
    if (::uname(&u) == 0) {
        r.sysname = u.sysname;
        r.release = u.release;
        r.machine = u.machine;
    }
    r.ktls = crypto::probe_ktls();
    r.uring = io::probe_uring();
    r.bpf = bpf::probe_bpf();
    return r;
}

const char* yes_no(bool b) { return b ? "yes" : "no"; }

nlohmann::json to_json(const Report& r) {
    nlohmann::json j;
    j["kernel"] = {{"sysname", r.sysname}, {"release", r.release}, {"machine", r.machine}};

    auto entries = nlohmann::json::array();
    bool any_tx = false, any_rx = false;
    for (const auto& e : r.ktls.entries) {
        entries.push_back({{"version", config::to_string(e.version)},
                           {"cipher", config::to_string(e.cipher)},
                           {"tx", e.tx},
                           {"rx", e.rx},
                           {"error", e.error}});
        any_tx |= e.tx;
        any_rx |= e.rx;
    }
    j["ktls"] = {{"available", any_tx || any_rx},
                 {"ulp_available", r.ktls.ulp_available},
                 {"why_not", r.ktls.why_not},
                 {"entries", entries}};

    auto ops = nlohmann::json::object();
    for (const auto& [name, ok] : r.uring.ops) ops[name] = ok;
    j["io_uring"] = {{"available", r.uring.available},
                     {"why_not", r.uring.why_not},
                     {"ops", ops},
                     {"multishot_accept", r.uring.multishot_accept},
                     {"buf_ring", r.uring.buf_ring}};

    j["bpf"] = {{"prog_load", r.bpf.prog_load},         {"why_not", r.bpf.why_not},
                {"btf_vmlinux", r.bpf.btf_vmlinux},     {"socket_attach", r.bpf.socket_attach},
                {"admission", r.bpf.admission},         {"steering", r.bpf.steering},
                {"features_why_not", r.bpf.features_why}};
    return j;
}

void print_text(const Report& r) {
    std::printf("kernel    %s %s %s\n", r.sysname.c_str(), r.release.c_str(), r.machine.c_str());

    bool any = false;
    for (const auto& e : r.ktls.entries) any |= e.tx || e.rx;
    if (!r.ktls.ulp_available) {
        std::printf("kTLS      unavailable: %s\n", r.ktls.why_not.c_str());
    } else {
        std::printf("kTLS      %s\n", any ? "available" : "ULP present, but no version/cipher works");
        std::printf("          %-7s %-20s %-4s %s\n", "version", "cipher", "TX", "RX");
        for (const auto& e : r.ktls.entries) {
            std::printf("          TLS %-3s %-20s %-4s %-3s%s%s\n", config::to_string(e.version),
                        config::to_string(e.cipher), yes_no(e.tx), yes_no(e.rx), e.error.empty() ? "" : " ",
                        e.error.c_str());
        }
    }

    if (!r.uring.available) {
        std::printf("io_uring  unavailable: %s\n", r.uring.why_not.c_str());
    } else {
        std::printf("io_uring  available; multishot accept: %s, buffer rings: %s\n",
                    yes_no(r.uring.multishot_accept), yes_no(r.uring.buf_ring));
        std::string line = "          ops:";
        for (const auto& [name, ok] : r.uring.ops) {
            std::string item = " " + name + (ok ? "" : "(no)");
            if (line.size() + item.size() > 100) {
                std::printf("%s\n", line.c_str());
                line = "              ";
            }
            line += item;
        }
        std::printf("%s\n", line.c_str());
    }

    if (r.bpf.prog_load) {
        std::printf("BPF       program load: yes; BTF (/sys/kernel/btf/vmlinux): %s\n",
                    yes_no(r.bpf.btf_vmlinux));
        std::printf("          admission in the kernel (socket filter): %s; worker steering (SK_REUSEPORT): %s%s%s\n",
                    yes_no(r.bpf.admission && r.bpf.socket_attach), yes_no(r.bpf.steering),
                    r.bpf.features_why.empty() ? "" : "; ", r.bpf.features_why.c_str());
    } else {
        std::printf("BPF       program load: no (%s); BTF (/sys/kernel/btf/vmlinux): %s\n",
                    r.bpf.why_not.c_str(), yes_no(r.bpf.btf_vmlinux));
        std::printf("          admission is enforced in user space after accept; the kernel's hash spreads "
                    "connections\n");
    }
}

}  // namespace

int probe_command(bool json) {
    const Report r = run_probes();
    if (json) {
        // Replace rather than throw on invalid UTF-8: the strings come from strerror and uname.
        std::printf("%s\n", to_json(r).dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    } else {
        print_text(r);
    }
    std::fflush(stdout);
    return 0;
}

}  // namespace ztp::app
