#include "bpf/bpf_probe.hpp"

#include <bpf/bpf.h>
#include <linux/bpf.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <sys/socket.h>

#include "bpf/admission.hpp"
#include "bpf/steering.hpp"
#include "proxy/base/unique_fd.hpp"

namespace ztp::bpf {

namespace {

std::string load_failure(int err) {
    std::string s = "bpf_prog_load(BPF_PROG_TYPE_SOCKET_FILTER): ";
    s += std::strerror(err);
    if (err == EPERM)
        s += " (needs CAP_BPF or CAP_SYS_ADMIN, or kernel.unprivileged_bpf_disabled=0; seccomp may "
             "also block bpf(2))";
    else if (err == ENOSYS)
        s += " (kernel built without CONFIG_BPF_SYSCALL)";
    return s;
}

}  // namespace

BpfProbe probe_bpf() {
    BpfProbe p;
    // "r0 = 0; exit": the smallest program the verifier accepts. SOCKET_FILTER is the one program
    // type every BPF-enabled kernel has, and it needs no attach point, so a successful load proves
    // the bpf(2) syscall, the verifier and our privileges, nothing more.
    const bpf_insn insns[] = {
        {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .src_reg = 0, .off = 0, .imm = 0},
        {.code = BPF_JMP | BPF_EXIT, .dst_reg = 0, .src_reg = 0, .off = 0, .imm = 0},
    };
    // libbpf >= 1.0 returns -errno directly (and also sets errno).
    const int fd = bpf_prog_load(BPF_PROG_TYPE_SOCKET_FILTER, "ztp_probe", "GPL", insns,
                                 sizeof insns / sizeof insns[0], nullptr);
    if (fd >= 0) {
        UniqueFd owner(fd);
        p.prog_load = true;
        auto note = [&](const std::string& why) {
            if (p.features_why.empty()) p.features_why = why;
        };
        // Attaching needs no privilege beyond owning the socket, but seccomp or LSMs may refuse
        // setsockopt(SO_ATTACH_BPF); a TCP socket that never binds is enough to find out.
        UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        const int prog = owner.get();
        if (s && ::setsockopt(s.get(), SOL_SOCKET, SO_ATTACH_BPF, &prog, sizeof prog) == 0)
            p.socket_attach = true;
        else
            note(std::string("setsockopt(SO_ATTACH_BPF): ") + std::strerror(errno));
        if (auto a = Admission::load({}); a.ok())
            p.admission = true;
        else
            note(a.error().message());
        if (auto st = Steering::load(1); st.ok())
            p.steering = true;
        else
            note(st.error().message());
    } else {
        p.why_not = load_failure(-fd);
    }
    // The kernel exposes its own type information here when built with CONFIG_DEBUG_INFO_BTF.
    p.btf_vmlinux = ::access("/sys/kernel/btf/vmlinux", R_OK) == 0;
    return p;
}

}  // namespace ztp::bpf
