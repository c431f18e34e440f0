// `ztproxy probe [--json]`: what this kernel offers ztproxy (kTLS per version × cipher and
// direction, io_uring opcodes and features, BPF), measured by trying, not by reading version
// numbers. A missing feature is information: the command succeeds whenever the probe ran.
#pragma once

namespace ztp::app {

int probe_command(bool json);

}  // namespace ztp::app
