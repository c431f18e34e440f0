// libbpf prints its diagnostics (verifier logs, "operation not permitted") through a process-wide
// callback, stderr by default. The loaders send them to the "main" logger at debug level instead:
// the failure itself comes back as a Result and is logged once by the caller.
#pragma once

namespace ztp::bpf {

void route_libbpf_logs();  // idempotent

}  // namespace ztp::bpf
