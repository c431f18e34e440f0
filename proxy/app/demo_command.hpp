#pragma once

#include <string>

namespace ztp::app {

// `ztproxy demo`: a throwaway CA and certificate in `workdir`, the embedded demo backend, and
// the proxy in front of it on `listen`; prints a curl command line that works, then serves.
int demo_command(const std::string& workdir, const std::string& listen);

}  // namespace ztp::app
