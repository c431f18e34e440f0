// probe_bpf(): can this process load BPF programs, and does the kernel describe itself with BTF
// (needed for CO-RE programs built against vmlinux.h)?
#pragma once

#include <string>

namespace ztp::bpf {

struct BpfProbe {
    bool prog_load = false;    // a trivial socket filter passed the verifier
    std::string why_not;       // set when !prog_load
    bool btf_vmlinux = false;  // /sys/kernel/btf/vmlinux is readable
};

BpfProbe probe_bpf();

}  // namespace ztp::bpf
