// probe_uring(): which io_uring features this kernel (and its seccomp/sysctl policy) gives us. The
// opcode list comes from the kernel's own probe; features without an opcode of their own
// (multishot accept, provided-buffer rings) are tried for real, because the opcode existing says
// nothing about its flags.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace ztp::io {

struct UringProbe {
    bool available = false;                         // a ring could be created
    std::string why_not;                            // set when !available
    std::vector<std::pair<std::string, bool>> ops;  // kUringOps, in its order: supported or not
    bool multishot_accept = false;                  // IORING_ACCEPT_MULTISHOT accepted a connection
    bool buf_ring = false;                          // io_uring_register_buf_ring worked
};

UringProbe probe_uring();

}  // namespace ztp::io
