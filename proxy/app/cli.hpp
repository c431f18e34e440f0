#pragma once

namespace ztp::app {

// Parses the command line (CLI11) and runs the chosen subcommand; returns the exit code.
int main_cli(int argc, char** argv);

}  // namespace ztp::app
