#include "proxy/app/cli.hpp"

int main(int argc, char** argv) { return ztp::app::main_cli(argc, argv); }
