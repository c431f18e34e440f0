// The io_uring operations ztproxy submits, named: the one list behind both the event loop's ring
// restriction (IORING_REGISTER_RESTRICTIONS, where the kernel completes anything else with
// -EACCES) and the opcodes `ztproxy probe` reports, so the probe answers for exactly what runs.
#pragma once

#include <liburing.h>

#include <cstdint>

namespace ztp::io {

struct UringOp {
    const char* name;  // IORING_OP_<name>
    uint8_t opcode;
};

// Every EventLoop method's opcode; a new kind of operation must be added here.
inline constexpr UringOp kUringOps[] = {
    {"POLL_ADD", IORING_OP_POLL_ADD},
    {"RECV", IORING_OP_RECV},
    {"SEND", IORING_OP_SEND},
    {"SENDMSG", IORING_OP_SENDMSG},
    {"RECVMSG", IORING_OP_RECVMSG},
    {"READ", IORING_OP_READ},
    {"CONNECT", IORING_OP_CONNECT},
    {"LINK_TIMEOUT", IORING_OP_LINK_TIMEOUT},
    {"ACCEPT", IORING_OP_ACCEPT},
    {"TIMEOUT", IORING_OP_TIMEOUT},
    {"ASYNC_CANCEL", IORING_OP_ASYNC_CANCEL},
};

}  // namespace ztp::io
