// shoal-coordinator: the long-running service. State lives in RocksDB under --state-dir,
// so restarting it (same dir) brings back every job. With keys in --auth-dir (made by
// `shoalctl auth init`) the control plane is CurveZMQ and admits only registered keys.
#include <CLI/CLI.hpp>
#include <csignal>

#include "common/log.h"
#include "coordinator/curve_keys.h"
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
  options.auth_dir = shoal::DefaultAuthDir();
  app.add_option("--bind", options.bind, "ZeroMQ endpoint to listen on (tcp://HOST:PORT, port * picks one)")
      ->capture_default_str();
  app.add_option("--state-dir", options.state_dir, "RocksDB state directory")->capture_default_str();
  app.add_option("--auth-dir", options.auth_dir,
                 "keys: coordinator.key (CurveZMQ), coordinator-signing.key (signs the audit log), admin.pub (the "
                 "first admin); `shoalctl auth init --dir DIR` makes them (default: $SHOAL_AUTH_DIR or .shoal/auth)")
      ->capture_default_str();
  app.add_flag("--insecure", options.insecure,
               "no CurveZMQ and no access control: anyone who reaches the port is admin (needed to bind a "
               "non-loopback address without keys)");
  app.add_option("--rate-limit", options.requests_per_second_per_key, "requests per second per key (0: no limit)")
      ->capture_default_str();
  app.add_option("--max-parked", options.max_parked_per_connection, "long polls one connection may have waiting")
      ->capture_default_str();
  app.add_option("--openlineage-file", options.openlineage_file,
                 "append OpenLineage run events (JSON lines) here (default: STATE_DIR/openlineage.jsonl; - for none)");
  app.add_option("--openlineage-url", options.openlineage_url,
                 "also POST them to this OpenLineage collector, http://HOST:PORT (default: $OPENLINEAGE_URL; the "
                 "endpoint path is $OPENLINEAGE_ENDPOINT or api/v1/lineage, a bearer key $OPENLINEAGE_API_KEY)");
  std::string endpoint_file, http_file;
  app.add_option("--endpoint-file", endpoint_file, "write the bound endpoint to this file once listening");
  app.add_option("--http", options.http,
                 "serve read-only HTTP on HOST:PORT (port 0 picks one): /metrics (Prometheus), / and /job/ID "
                 "(dashboard), /api/job/ID (JSON). Unauthenticated: keep it on loopback or behind a proxy");
  app.add_option("--http-address-file", http_file, "write the HTTP endpoint's HOST:PORT to this file once listening");
  CLI11_PARSE(app, argc, argv);

  shoal::InitLogging("coordinator");
  auto server = shoal::CoordinatorServer::Create(options);
  if (!server.ok()) {
    SHOAL_LOG_ERROR("{}", server.status().ToString());
    return server.status().code() == shoal::StatusCode::kFailedPrecondition ? 2 : 1;
  }
  g_server = server->get();
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  SHOAL_LOG_INFO("listening on {} ({}; state in {})", (*server)->endpoint(),
                 (*server)->secure() ? "CurveZMQ, keys from " + options.auth_dir : "no keys: insecure",
                 options.state_dir);
  if (!(*server)->http_address().empty())
    SHOAL_LOG_INFO("HTTP (metrics, dashboard) on http://{}/ (read-only, unauthenticated)", (*server)->http_address());
  auto write_line = [](const std::string& path, const std::string& line) {
    if (path.empty()) return;
    FILE* f = std::fopen(path.c_str(), "w");
    if (f) {
      std::fprintf(f, "%s\n", line.c_str());
      std::fclose(f);
    }
  };
  write_line(http_file, (*server)->http_address());  // before the endpoint: tests wait for that one
  write_line(endpoint_file, (*server)->endpoint());
  (*server)->Run();
  SHOAL_LOG_INFO("stopped");
  return 0;
}
