// probe_bpf(): can this process load BPF programs, and does the kernel describe itself with BTF
// (needed for CO-RE programs built against vmlinux.h)?
#pragma once

#include <string>

namespace ztp::bpf {

struct BpfProbe {
    bool prog_load = false;    // a trivial socket filter passed the verifier
    std::string why_not;       // set when !prog_load
    bool btf_vmlinux = false;  // /sys/kernel/btf/vmlinux is readable
    // The features ztproxy uses (checked only when prog_load):
    bool socket_attach = false;  // SO_ATTACH_BPF of that filter to a TCP socket worked
    bool admission = false;      // bpf/admission.bpf.c loads (LPM tries, LRU table, per-CPU array)
    bool steering = false;       // bpf/steering.bpf.c loads (SK_REUSEPORT, REUSEPORT_SOCKARRAY)
    std::string features_why;    // the first failure among the three, if any
};

BpfProbe probe_bpf();

}  // namespace ztp::bpf
