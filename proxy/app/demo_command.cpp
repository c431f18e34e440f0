#include "proxy/app/demo_command.hpp"

#include <filesystem>
#include <iostream>

#include "proxy/app/demo_backend.hpp"
#include "proxy/app/demo_certs.hpp"
#include "proxy/app/run_command.hpp"
#include "proxy/base/log.hpp"

namespace ztp::app {

int demo_command(const std::string& workdir, const std::string& listen) {
    std::string why;
    auto listen_addr = SocketAddress::parse(listen, &why);
    if (!listen_addr) {
        std::cerr << "ztproxy demo: --listen '" << listen << "': " << why << "\n";
        return 1;
    }
    std::error_code ec;
    auto dir = std::filesystem::absolute(workdir);
    std::filesystem::create_directories(dir, ec);
    if (ec) {
        std::cerr << "ztproxy demo: cannot create " << dir << ": " << ec.message() << "\n";
        return 1;
    }
    auto certs = generate_demo_certs(dir);
    if (!certs) {
        std::cerr << "ztproxy demo: cannot create certificates: " << certs.error().message() << "\n";
        return 1;
    }
    auto backend = DemoBackend::start();
    if (!backend) {
        std::cerr << "ztproxy demo: cannot start the demo backend: " << backend.error().message() << "\n";
        return 1;
    }
    log::main().info("demo backend listening on {}", (*backend)->address().to_string());

    config::Policy p;
    p.source = "<demo>";
    config::Listener l;
    l.name = "demo";
    l.address = *listen_addr;
    config::Certificate cert;
    cert.name = "demo";
    cert.cert_file = certs->server_cert.string();
    cert.key_file = certs->server_key.string();
    cert.server_names = {"localhost"};
    l.tls.certificates.push_back(cert);
    l.tls.alpn = {"http/1.1"};
    p.listeners.push_back(l);
    p.backends.push_back({"demo", {(*backend)->address()}, {}});
    config::Route r;
    r.is_default = true;
    r.backend = "demo";
    p.routes.push_back(r);

    std::string ca = certs->ca_cert.string();
    RunOptions options;
    options.on_listening = [ca](const std::vector<BoundListener>& bound) {
        uint16_t port = bound.front().address.port();
        std::cout << "\nztproxy demo is serving. Try it:\n\n"
                  << "curl --cacert " << ca << " https://localhost:" << port << "/\n\n"
                  << "(Ctrl-C stops it.)" << std::endl;
    };
    return run_policy(std::move(p), options);
}

}  // namespace ztp::app
