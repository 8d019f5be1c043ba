// shoal-worker: one training process. Registers with the coordinator, waits for its
// assignment (generation, rank, world), builds the communicator through the
// coordinator's key-value store, trains, and reports its result.
//   shoal-worker --coordinator tcp://HOST:PORT --job ID
// Under mpirun/srun the launcher's rank orders the ranks (and backend mpi uses MPI).
#include <CLI/CLI.hpp>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <memory>

#include "collectives/factory.h"
#include "collectives/mpi/mpi_communicator.h"
#include "common/log.h"
#include "coordinator/client.h"
#include "datapipe/idx.h"
#include "worker/coordinator_kv.h"
#include "worker/heartbeat.h"
#include "worker/launcher_env.h"
#include "worker/models/mlp.h"
#include "worker/trainer.h"

namespace shoal {
namespace {

constexpr int kExitOk = 0, kExitFailed = 1, kExitUsage = 2;
std::atomic<bool> g_signalled{false};

std::string HostName() {
  char buf[256] = {};
  ::gethostname(buf, sizeof(buf) - 1);
  return buf;
}

StatusOr<Assignment> AwaitAssignment(ControlClient& client, const std::string& member_id) {
  for (;;) {
    if (g_signalled) return Cancelled("interrupted while waiting for an assignment");
    Request r;
    r.mutable_await_assignment()->set_member_id(member_id);
    auto resp = client.Call(r, std::chrono::seconds(5));
    if (resp.ok()) return resp->assignment();
    if (resp.status().code() != StatusCode::kUnavailable) return resp.status();
    // No answer yet: the generation has not formed. Ask again (the newest poll wins).
  }
}

void ReportFinish(ControlClient& client, const std::string& member_id, const Status& status, const JobResult* result,
                  const WorkerMetrics& metrics) {
  Request r;
  FinishRequest* f = r.mutable_finish();
  f->set_member_id(member_id);
  f->set_success(status.ok());
  f->set_error(status.ToString());
  if (result) *f->mutable_result() = *result;
  *f->mutable_metrics() = metrics;
  auto resp = client.Call(r, std::chrono::seconds(10));
  if (!resp.ok()) SHOAL_LOG_WARN("could not report the result: {}", resp.status().ToString());
}

// The address peers use to reach this worker's data-plane sockets: loopback when the
// coordinator is on loopback (one machine), else this host's name, unless overridden.
std::string ListenHost(const std::string& endpoint, const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* env = std::getenv("SHOAL_LISTEN_HOST"); env && *env) return env;
  if (endpoint.find("127.0.0.1") != std::string::npos || endpoint.find("localhost") != std::string::npos) return "127.0.0.1";
  return HostName();
}

int Run(const std::string& endpoint, const std::string& job_id, int blas_threads, const std::string& listen_flag) {
  LauncherEnv launcher = DetectLauncher();
  InitLogging(launcher.rank >= 0 ? "worker[" + std::to_string(launcher.rank) + "]" : "worker");
  ControlClient client(endpoint);

  Request reg;
  reg.mutable_register_()->set_job_id(job_id);
  reg.mutable_register_()->set_host(HostName());
  reg.mutable_register_()->set_pid(::getpid());
  reg.mutable_register_()->set_launcher_rank(launcher.rank);
  reg.mutable_register_()->set_launcher_size(launcher.size);
  auto registered = client.Call(reg, std::chrono::seconds(10));
  if (!registered.ok()) {
    SHOAL_LOG_ERROR("cannot register with {}: {}", endpoint, registered.status().ToString());
    return registered.status().code() == StatusCode::kUnavailable ? kExitFailed : kExitUsage;
  }
  const std::string member_id = registered->register_().member_id();

  std::unique_ptr<Communicator> comm;
  std::mutex comm_mu;
  HeartbeatThread heartbeat(endpoint, member_id, registered->register_().heartbeat_interval_s(), [&] {
    std::lock_guard<std::mutex> l(comm_mu);
    if (comm) comm->Abort();  // peers stuck in a collective fail fast instead of timing out
  });

  auto assignment = AwaitAssignment(client, member_id);
  if (!assignment.ok()) {
    SHOAL_LOG_ERROR("{}", assignment.status().ToString());
    ReportFinish(client, member_id, assignment.status(), nullptr, {});
    return kExitFailed;
  }
  const JobSpec& spec = assignment->spec();
  InitLogging("worker[" + std::to_string(assignment->rank()) + "]");
  SHOAL_LOG_INFO("{}: generation {}, rank {} of {}", member_id, assignment->generation(), assignment->rank(),
                 assignment->world_size());

  WorkerMetrics last_metrics;
  auto fail = [&](const Status& s) {
    SHOAL_LOG_ERROR("{}", s.ToString());
    ReportFinish(client, member_id, s, nullptr, last_metrics);
    return kExitFailed;
  };

  SetBlasThreads(blas_threads);
  auto train = LoadFashionMnist(spec.data().dataset(), "train");
  if (!train.ok()) return fail(train.status().WithContext("training data"));
  auto test = LoadFashionMnist(spec.data().dataset(), "t10k");
  if (!test.ok()) return fail(test.status().WithContext("test data"));

  std::vector<int> layers(spec.model().layers().begin(), spec.model().layers().end());
  auto model = MakeMlp(layers, spec.training().seed());
  if (!model.ok()) return fail(model.status());

  CoordinatorKvStore kv(endpoint);
  CommunicatorConfig cc;
  cc.backend = spec.collectives().backend();
  cc.rank = assignment->rank();
  cc.size = assignment->world_size();
  cc.kv = &kv;
  cc.prefix = assignment->kv_prefix();
  cc.timeout = std::chrono::milliseconds(static_cast<int64_t>(spec.collectives().timeout_s() * 1000));
  cc.interface_or_host = ListenHost(endpoint, listen_flag);
  auto made = MakeCommunicator(cc);
  if (!made.ok()) return fail(made.status().WithContext("building the " + cc.backend + " communicator"));
  {
    std::lock_guard<std::mutex> l(comm_mu);
    comm = std::move(*made);
  }
  SHOAL_LOG_INFO("communicator ready: backend {}, world {}", comm->backend(), comm->size());

  TrainerHooks hooks;
  hooks.on_metrics = [&](const WorkerMetrics& m) {
    last_metrics = m;
    heartbeat.Update(m);
  };
  hooks.should_stop = [&] { return heartbeat.stop_requested() || g_signalled.load(); };
  hooks.on_epoch = [&](int epoch, double acc) {
    if (assignment->rank() == 0) SHOAL_LOG_INFO("epoch {}: test accuracy {:.4f}", epoch + 1, acc);
  };
  TrainerInputs in{&spec, &*train, &*test};
  auto result = Train(in, comm.get(), model->get(), hooks);
  if (!result.ok()) return fail(result.status());
  ReportFinish(client, member_id, OkStatus(), assignment->rank() == 0 ? &*result : nullptr, last_metrics);
  {
    std::lock_guard<std::mutex> l(comm_mu);
    comm.reset();
  }
  if (cc.backend == "mpi" || (cc.backend == "auto" && launcher.launcher == "mpirun")) FinalizeMpiIfInitialized();
  return kExitOk;
}

}  // namespace
}  // namespace shoal

int main(int argc, char** argv) {
  CLI::App app{"shoal-worker: one Shoal training process (usually started by shoalctl run, mpirun or srun)"};
  std::string endpoint, job;
  int blas_threads = 1;
  std::string listen_host;
  app.add_option("--coordinator", endpoint, "coordinator endpoint, tcp://HOST:PORT")->required();
  app.add_option("--job", job, "job id to join (shoalctl submit prints it)")->required();
  app.add_option("--blas-threads", blas_threads, "OpenBLAS threads for this worker")->capture_default_str()->check(CLI::Range(1, 256));
  app.add_option("--listen-host", listen_host,
                 "address peers reach this worker on for the data plane (default: $SHOAL_LISTEN_HOST, loopback "
                 "if the coordinator is on loopback, else the host name)");
  CLI11_PARSE(app, argc, argv);
  std::signal(SIGINT, [](int) { shoal::g_signalled = true; });
  std::signal(SIGTERM, [](int) { shoal::g_signalled = true; });
  return shoal::Run(endpoint, job, blas_threads, listen_host);
}
