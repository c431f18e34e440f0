#include "bpf/bpf_probe.hpp"

#include <bpf/bpf.h>
#include <linux/bpf.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

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
    } else {
        p.why_not = load_failure(-fd);
    }
    // The kernel exposes its own type information here when built with CONFIG_DEBUG_INFO_BTF.
    p.btf_vmlinux = ::access("/sys/kernel/btf/vmlinux", R_OK) == 0;
    return p;
}

}  // namespace ztp::bpf
