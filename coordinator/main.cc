// shoal-coordinator: the long-running service. State lives in RocksDB under --state-dir,
// so restarting it (same dir) brings back every job.
#include <CLI/CLI.hpp>
#include <csignal>

#include "common/log.h"
#include "coordinator/server.h"

namespace {
shoal::CoordinatorServer* g_server = nullptr;
void OnSignal(int) {
  if (g_server) g_server->Stop();
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"shoal-coordinator: jobs, membership, rendezvous and heartbeats for Shoal workers"};
  shoal::ServerOptions options;
  options.bind = "tcp://0.0.0.0:7400";
  app.add_option("--bind", options.bind, "ZeroMQ endpoint to listen on (tcp://HOST:PORT, port * picks one)")
      ->capture_default_str();
  app.add_option("--state-dir", options.state_dir, "RocksDB state directory")->capture_default_str();
  std::string endpoint_file;
  app.add_option("--endpoint-file", endpoint_file, "write the bound endpoint to this file once listening");
  CLI11_PARSE(app, argc, argv);

  shoal::InitLogging("coordinator");
  auto server = shoal::CoordinatorServer::Create(options);
  if (!server.ok()) {
    SHOAL_LOG_ERROR("{}", server.status().ToString());
    return 1;
  }
  g_server = server->get();
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  SHOAL_LOG_INFO("listening on {} (state in {})", (*server)->endpoint(), options.state_dir);
  if (!endpoint_file.empty()) {
    FILE* f = std::fopen(endpoint_file.c_str(), "w");
    if (f) {
      std::fprintf(f, "%s\n", (*server)->endpoint().c_str());
      std::fclose(f);
    }
  }
  (*server)->Run();
  SHOAL_LOG_INFO("stopped");
  return 0;
}
