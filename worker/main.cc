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
#include <optional>

#include "collectives/factory.h"
#include "collectives/mpi/mpi_communicator.h"
#include "common/log.h"
#include "coordinator/client.h"
#include "common/file_util.h"
#include "datapipe/idx.h"
#include "datapipe/loader.h"
#include "worker/coordinator_kv.h"
#include "worker/heartbeat.h"
#include "worker/launcher_env.h"
#include "worker/models/mlp.h"
#include "worker/checkpoint_glue.h"
#include "worker/trainer.h"
#include "common/clock.h"
#include "shoal/config.h"
#if SHOAL_HAVE_CUDA
#include "common/nvml/nvml.h"
#include "worker/models/cuda/cuda_mlp.h"
#endif

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

// model.device: cpu, cuda (a GPU or an error) or auto (a GPU when there is one).
StatusOr<std::unique_ptr<Model>> MakeModel(const JobSpec& spec, int local_rank) {
  std::vector<int> layers(spec.model().layers().begin(), spec.model().layers().end());
  const std::string& device = spec.model().device();
#if SHOAL_HAVE_CUDA
  if (device != "cpu") {
    auto gpu = CudaMlpModel::Create(layers, spec.training().seed(), std::max(0, local_rank));
    if (gpu.ok()) return std::unique_ptr<Model>(std::move(*gpu));
    if (device == "cuda") return gpu.status().WithContext("model.device is cuda");
    SHOAL_LOG_INFO("model on the CPU: {}", gpu.status().message());
  }
#else
  if (device == "cuda") return FailedPrecondition("model.device is cuda but this build has no CUDA support");
#endif
  return MakeMlp(layers, spec.training().seed());
}

// Tells the coordinator's checkpoint registry about a commit (runs on the writer thread).
void RegisterCheckpoint(const std::string& endpoint, const std::string& job_id, const CommitInfo& info) {
  ControlClient client(endpoint);
  Request r;
  CheckpointRecord* rec = r.mutable_checkpoint_commit()->mutable_record();
  rec->set_job_id(job_id);
  rec->set_step(info.step);
  rec->set_path(info.dir);
  rec->set_manifest_digest(info.manifest_digest);
  rec->set_signer_key_id(info.signer_key_id);
  auto resp = client.Call(r, std::chrono::seconds(5));
  if (!resp.ok()) SHOAL_LOG_WARN("checkpoint registry: {}", resp.status().ToString());
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
    // A collective aborted because the coordinator ended the job, or training stopped
    // by SIGINT/SIGTERM, is the stop that was asked for, not a fault of this worker.
    if ((s.code() == StatusCode::kAborted && heartbeat.stop_requested()) ||
        (s.code() == StatusCode::kCancelled && g_signalled.load())) {
      SHOAL_LOG_INFO("stopped: {}", s.ToString());
    } else {
      SHOAL_LOG_ERROR("{}", s.ToString());
    }
    ReportFinish(client, member_id, s, nullptr, last_metrics);
    return kExitFailed;
  };

  SetBlasThreads(blas_threads);
  auto model = MakeModel(spec, launcher.local_rank);
  if (!model.ok()) return fail(model.status());

  // A checkpoint to resume from is verified (signature, then every shard) before use.
  std::optional<LoadedCheckpoint> resume;
  if (!spec.checkpoint().resume().empty()) {
    auto loaded = LoadResumeCheckpoint(spec, OwnRankState{assignment->rank(), assignment->world_size()});
    if (!loaded.ok()) return fail(loaded.status().WithContext("resume"));
    SHOAL_LOG_INFO("resuming from {} (step {}, {})", loaded->dir, loaded->snapshot.step,
                   loaded->signature_verified ? "signed by " + loaded->signer_key_id : std::string("unsigned"));
    resume = std::move(*loaded);
  }

  // Training data: a signed dataset folder (verified shards, admitted records only,
  // prefetched) or, for plain IDX files, all records in memory.
  auto trust = TrustFromSpec(spec.data());
  if (!trust.ok()) return fail(trust.status());
  const std::string& dataset = spec.data().dataset();
  const bool shards = spec.data().format() == "shards" ||
                      (spec.data().format() == "auto" && PathExists(dataset + "/manifest.pb"));
  std::unique_ptr<Loader> loader;
  std::optional<InMemoryDataset> train;
  if (shards) {
    const DataFilters& f = spec.data().filters();
    LoaderOptions lo;
    lo.trust = *trust;
    // With filters on, unscanned data must not be trained on: that is the point of them.
    lo.require_scan = f.schema().enabled() || f.exact_duplicates().enabled() || f.near_duplicates().enabled() ||
                      f.outliers().enabled() || f.label_consistency().enabled();
    lo.global_batch = int64_t{spec.training().batch_per_worker()} * assignment->world_size();
    lo.seed = spec.training().seed();
    lo.prefetch_batches = spec.data().prefetch_batches();
    lo.rank = assignment->rank();
    lo.world = assignment->world_size();
    if (resume) {
      lo.epoch = resume->snapshot.epoch;
      lo.cursor = resume->snapshot.cursor;
    }
    auto opened = Loader::Open(dataset, lo);
    if (!opened.ok()) return fail(opened.status().WithContext("training data " + dataset));
    loader = std::move(*opened);
    SHOAL_LOG_INFO("dataset {}: {} admitted, {} quarantined ({})", loader->dataset_name(), loader->size(),
                   loader->quarantined(), loader->provenance());
  } else {
    auto loaded = LoadFashionMnist(dataset, "train");
    if (!loaded.ok()) return fail(loaded.status().WithContext("training data"));
    train = std::move(*loaded);
  }
  const std::string& test_dir = spec.data().test_dataset();
  auto test = PathExists(test_dir + "/manifest.pb") ? LoadAdmittedInMemory(test_dir, trust->trust, trust->allow_unsigned)
                                                    : LoadFashionMnist(test_dir, "t10k");
  if (!test.ok()) return fail(test.status().WithContext("test data"));

  CoordinatorKvStore kv(endpoint);
  CommunicatorConfig cc;
  cc.backend = spec.collectives().backend();
  cc.rank = assignment->rank();
  cc.size = assignment->world_size();
  cc.kv = &kv;
  cc.prefix = assignment->kv_prefix();
  cc.timeout = std::chrono::milliseconds(static_cast<int64_t>(spec.collectives().timeout_s() * 1000));
  cc.interface_or_host = ListenHost(endpoint, listen_flag);
  auto link = LinkEmulationFor(spec.collectives().emulate_bandwidth_mbps(), spec.collectives().emulate_latency_us());
  if (!link.ok()) return fail(link.status().WithContext("link emulation"));
  if (link->enabled()) {
    SHOAL_LOG_INFO("link emulation on: send rate capped at {} Mbit/s (0 = no cap), {} us added per message",
                   link->bandwidth_mbps, link->latency_us);
  }
  cc.link_emulation = *link;
  auto made = MakeCommunicator(cc);
  if (!made.ok()) return fail(made.status().WithContext("building the " + cc.backend + " communicator"));
  {
    std::lock_guard<std::mutex> l(comm_mu);
    comm = std::move(*made);
  }
  SHOAL_LOG_INFO("communicator ready: backend {}, world {}", comm->backend(), comm->size());

  CheckpointerSetup ck;
  ck.job_id = assignment->job_id();
  ck.rank = assignment->rank();
  ck.world = assignment->world_size();
  ck.kv = &kv;
  ck.kv_prefix = assignment->kv_prefix();
  ck.parent_digest = resume ? resume->manifest_digest : "";
  ck.on_commit = [endpoint, job = ck.job_id](const CommitInfo& info) { RegisterCheckpoint(endpoint, job, info); };
  auto checkpointer = MakeCheckpointer(spec, ck);
  if (!checkpointer.ok()) return fail(checkpointer.status().WithContext("checkpointer"));

#if SHOAL_HAVE_CUDA
  GpuMonitor gpu(std::max(0, launcher.local_rank));
  WorkerMetrics gpu_fields;  // the last device reading, merged into every heartbeat
  double last_gpu_sample = 0;
#endif
  TrainerHooks hooks;
  hooks.on_metrics = [&](const WorkerMetrics& metrics) {
    last_metrics = metrics;
#if SHOAL_HAVE_CUDA
    // Device health at most twice a second: NVML reads cost tens of microseconds.
    double now = MonotonicSeconds();
    if (gpu.available() && now - last_gpu_sample >= 0.5) {
      last_gpu_sample = now;
      if (auto h = gpu.Sample(now)) {
        gpu_fields.set_has_gpu(true);
        gpu_fields.set_gpu_device(h->device);
        gpu_fields.set_gpu_utilization_pct(h->utilization_pct);
        gpu_fields.set_gpu_memory_used_bytes(h->memory_used_bytes);
        gpu_fields.set_gpu_memory_total_bytes(h->memory_total_bytes);
        gpu_fields.set_gpu_power_watts(h->power_watts);
        gpu_fields.set_gpu_temperature_c(h->temperature_c);
        gpu_fields.set_gpu_energy_joules(gpu.usage().joules());
        gpu_fields.set_gpu_seconds(gpu.usage().gpu_seconds());
      }
    }
    if (gpu_fields.has_gpu()) last_metrics.MergeFrom(gpu_fields);
#endif
    heartbeat.Update(last_metrics);
  };
  hooks.should_stop = [&] { return heartbeat.stop_requested() || g_signalled.load(); };
  hooks.on_epoch = [&](int epoch, double acc) {
    if (assignment->rank() == 0) SHOAL_LOG_INFO("epoch {}: test accuracy {:.4f}", epoch + 1, acc);
  };
  TrainerInputs in;
  in.spec = &spec;
  in.train = train ? &*train : nullptr;
  in.loader = loader.get();
  in.test = &*test;
  in.resume = resume ? &resume->snapshot : nullptr;
  in.checkpointer = checkpointer->get();
  in.job_id = assignment->job_id();
  auto result = Train(in, comm.get(), model->get(), hooks);
  if (!result.ok()) return fail(result.status());
  if (*checkpointer) {
    Status s = (*checkpointer)->Wait();
    if (!s.ok()) return fail(s.WithContext("checkpoint"));
  }
  result->set_gpu_seconds(last_metrics.gpu_seconds());
  result->set_energy_joules(last_metrics.gpu_energy_joules());
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
