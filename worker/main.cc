// shoal-worker: one training process, alive across generations. It registers with the
// coordinator, then loops: assignment -> communicator -> state sync -> train until done
// or until the generation ends -> abort the communicator -> report -> next assignment.
// Model, optimizer, codec, data position and ledger live in one Trainer across
// generations; only the communicator is rebuilt.
//   shoal-worker --coordinator tcp://HOST:PORT --job ID
// Under mpirun/srun the launcher's rank orders the ranks (and backend mpi uses MPI,
// which cannot regroup: there a failure ends the job).
// Signals: the first SIGTERM/SIGINT leaves gracefully at the next step boundary (exit
// 0); a second one exits at once.
#include <CLI/CLI.hpp>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <memory>
#include <optional>
#include <thread>

#include "collectives/factory.h"
#include "collectives/mpi/mpi_communicator.h"
#include "common/clock.h"
#include "common/file_util.h"
#include "common/host_usage.h"
#include "common/log.h"
#include "coordinator/client.h"
#include "datapipe/scan_check.h"
#include "datapipe/idx.h"
#include "datapipe/loader.h"
#include "shoal/config.h"
#include "checkpoint/format.h"
#include "spec/jobspec_loader.h"
#include "spec/trace_paths.h"
#include "worker/checkpoint_glue.h"
#include "worker/coordinator_kv.h"
#include "worker/data_plane.h"
#include "worker/heartbeat.h"
#include "worker/launcher_env.h"
#include "worker/trace.h"
#include "worker/models/mlp.h"
#include "worker/trainer.h"
#if SHOAL_HAVE_CUDA
#include "common/nvml/nvml.h"
#include "worker/models/cuda/cuda_mlp.h"
#endif

namespace shoal {
namespace {

constexpr int kExitOk = 0, kExitFailed = 1, kExitUsage = 2;
// How long a worker waits for an unreachable coordinator between generations (it may be
// restarting) before it gives up.
constexpr double kCoordinatorPatienceSeconds = 300;
std::atomic<int> g_signals{0};


// The address peers use to reach this worker's data-plane sockets: loopback when the
// coordinator is on loopback (one machine), else this host's name, unless overridden.
std::string ListenHost(const std::string& endpoint, const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* env = std::getenv("SHOAL_LISTEN_HOST"); env && *env) return env;
  if (endpoint.find("127.0.0.1") != std::string::npos || endpoint.find("localhost") != std::string::npos) return "127.0.0.1";
  return ThisHostName();
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
void RegisterCheckpoint(const std::string& endpoint, const std::string& member_id, int64_t generation,
                        const std::string& job_id, const CommitInfo& info, const Ledger& history) {
  ControlClient client(endpoint);
  Request r;
  r.mutable_checkpoint_commit()->set_member_id(member_id);
  r.mutable_checkpoint_commit()->set_generation(generation);
  *r.mutable_checkpoint_commit()->mutable_ledger() = history;
  CheckpointRecord* rec = r.mutable_checkpoint_commit()->mutable_record();
  rec->set_job_id(job_id);
  rec->set_step(info.step);
  rec->set_path(info.dir);
  rec->set_manifest_digest(info.manifest_digest);
  rec->set_signer_key_id(info.signer_key_id);
  rec->set_parent_digest(info.parent_digest);
  rec->set_lineage_digest(info.lineage_digest);
  auto resp = client.Call(r, std::chrono::seconds(5));
  if (!resp.ok()) SHOAL_LOG_WARN("checkpoint registry: {}", resp.status().ToString());
}

// A collective or rendezvous failure a regroup can cure (a peer gone, an abort, a
// superseded generation), as opposed to bad input or a bug.
bool Regroupable(const Status& s) {
  return s.code() == StatusCode::kAborted || s.code() == StatusCode::kDeadlineExceeded ||
         s.code() == StatusCode::kUnavailable || s.code() == StatusCode::kInternal;
}

// The training and evaluation data, opened once and kept across generations.
struct WorkerData {
  std::unique_ptr<Loader> loader;
  std::optional<InMemoryDataset> train, test;
};

StatusOr<WorkerData> OpenData(const JobSpec& spec) {
  // Training data: a signed dataset folder (verified shards, admitted records only,
  // prefetched) or, for plain IDX files, all records in memory.
  ASSIGN_OR_RETURN(DatasetTrust trust, TrustFromSpec(spec.data()));
  WorkerData d;
  const std::string& dataset = spec.data().dataset();
  const bool shards = spec.data().format() == "shards" ||
                      (spec.data().format() == "auto" && PathExists(dataset + "/manifest.pb"));
  if (shards) {
    // The spec decides which filters admitted what this job trains on.
    RETURN_IF_ERROR(CheckJobDataMatchesScan(spec));
    const DataFilters& f = spec.data().filters();
    LoaderOptions lo;
    lo.trust = trust;
    // With filters on, unscanned data must not be trained on: that is the point of them.
    lo.require_scan = f.schema().enabled() || f.exact_duplicates().enabled() || f.near_duplicates().enabled() ||
                      f.outliers().enabled() || f.label_consistency().enabled();
    lo.global_batch = spec.training().batch_per_worker();  // set per generation (SetWorld)
    lo.seed = spec.training().seed();
    lo.prefetch_batches = spec.data().prefetch_batches();
    auto opened = Loader::Open(dataset, lo);
    if (!opened.ok()) return opened.status().WithContext("training data " + dataset);
    d.loader = std::move(*opened);
    SHOAL_LOG_INFO("dataset {}: {} admitted, {} quarantined ({})", d.loader->dataset_name(), d.loader->size(),
                   d.loader->quarantined(), d.loader->provenance());
  } else {
    auto loaded = LoadFashionMnist(dataset, "train");
    if (!loaded.ok()) return loaded.status().WithContext("training data");
    d.train = std::move(*loaded);
  }
  const std::string& test_dir = spec.data().test_dataset();
  auto test = PathExists(test_dir + "/manifest.pb") ? LoadAdmittedInMemory(test_dir, trust.trust, trust.allow_unsigned)
                                                    : LoadFashionMnist(test_dir, "t10k");
  if (!test.ok()) return test.status().WithContext("test data");
  d.test = std::move(*test);
  return d;
}

class Worker {
 public:
  Worker(std::string endpoint, std::string job_id, int blas_threads, std::string listen_flag)
      : endpoint_(std::move(endpoint)), job_id_(std::move(job_id)), blas_threads_(blas_threads),
        listen_flag_(std::move(listen_flag)), client_(endpoint_), kv_(endpoint_) {}

  int Run();
  // Writes the timeline trace if the spec has one and its range did not end yet (the
  // job ended first, or this worker is leaving).
  void FlushTrace();

 private:
  // A regroup phase [begin, end] (MonotonicSeconds) on the trace, if it is recording.
  void TracePhase(const char* name, double begin, double end, int64_t generation);
  StatusOr<std::string> Register();
  StatusOr<Assignment> AwaitAssignment();
  Status Prepare(const JobSpec& spec, const std::string& job_id);
  // Builds the generation's communicator and brings every member to the same state.
  Status Join(const Assignment& a);
  void ReportFinish(const Status& status, const JobResult* result);
  int Fail(const Status& s);
  void AbortGeneration(int64_t generation);
  void DropCommunicator();
  TrainerHooks Hooks(const Assignment& a);

  const std::string endpoint_, job_id_;
  const int blas_threads_;
  const std::string listen_flag_;
  LauncherEnv launcher_;
  ControlClient client_;
  CoordinatorKvStore kv_;
  std::string member_id_;
  bool elastic_ = true;
  std::string backend_;
  bool pick_by_hosts_ = false;
  std::unique_ptr<HeartbeatThread> heartbeat_;

  std::mutex comm_mu_;  // guards comm_ and comm_generation_ against the heartbeat thread
  std::unique_ptr<Communicator> comm_;
  int64_t comm_generation_ = 0;

  JobSpec spec_;
  std::unique_ptr<Model> model_;
  WorkerData data_;
  std::unique_ptr<Trainer> trainer_;
  bool has_state_ = false;
  std::string parent_digest_;
  std::unique_ptr<AsyncCheckpointer> checkpointer_;
  double stall_of_earlier_checkpointers_ = 0;  // one checkpointer per generation
  WorkerMetrics last_metrics_;
  // What this process uses of its host (CPU time, memory, RAPL energy), for the job's
  // cost; sampled at most twice a second and merged into every heartbeat.
  std::unique_ptr<RaplMeter> rapl_ = RaplMeter::Open();
  WorkerMetrics usage_fields_;
  double last_usage_sample_ = -1;
  std::unique_ptr<TraceRecorder> trace_;  // null unless the spec traces a range of steps

  // What the next AwaitAssignment reports, and the regroup's timings.
  AwaitAssignmentRequest report_;
  double last_commit_time_ = 0, report_time_ = 0, detect_seconds_ = 0;
  double regroup_seconds_ = 0, rendezvous_seconds_ = 0, sync_seconds_ = 0, trained_since_ = 0;
#if SHOAL_HAVE_CUDA
  std::unique_ptr<GpuMonitor> gpu_;
  WorkerMetrics gpu_fields_;  // the last device reading, merged into every heartbeat
  double last_gpu_sample_ = 0;
#endif
};

StatusOr<std::string> Worker::Register() {
  Request reg;
  reg.mutable_register_()->set_job_id(job_id_);
  reg.mutable_register_()->set_host(ThisHostName());
  reg.mutable_register_()->set_pid(::getpid());
  reg.mutable_register_()->set_launcher_rank(launcher_.rank);
  reg.mutable_register_()->set_launcher_size(launcher_.size);
  reg.mutable_register_()->set_elastic(elastic_);
  reg.mutable_register_()->set_code_version(CodeVersion());
  ASSIGN_OR_RETURN(Response r, client_.Call(reg, std::chrono::seconds(10)));
  return r.register_().member_id();
}

StatusOr<Assignment> Worker::AwaitAssignment() {
  const double since = MonotonicSeconds();
  for (;;) {
    if (g_signals > 0 && report_.ended_generation() == 0 && heartbeat_) heartbeat_->RequestLeave();
    Request r;
    *r.mutable_await_assignment() = report_;
    r.mutable_await_assignment()->set_member_id(member_id_);
    r.mutable_await_assignment()->set_leaving(g_signals > 0);
    // Short polls: a restarted coordinator hears the report again within 2 s.
    const double call_start = MonotonicSeconds();
    auto resp = client_.Call(r, std::chrono::seconds(2));
    if (resp.ok()) return resp->assignment();
    if (resp.status().code() != StatusCode::kUnavailable) return resp.status();
    // A coordinator that is gone can fail a call at once (the send queue is full):
    // pace the retries instead of spinning.
    if (MonotonicSeconds() - call_start < 0.5) std::this_thread::sleep_for(std::chrono::milliseconds(250));
    // No answer yet: the generation has not formed, or the coordinator is down (it may
    // restart). Ask again, repeating the report (the newest poll wins). A member that
    // is leaving does not wait for a coordinator that is gone: the others regroup
    // without it either way.
    const double waited = MonotonicSeconds() - since;
    if (g_signals > 0 && waited > 5) {
      Assignment leave;
      leave.set_exit(true);
      leave.set_exit_reason("leaving; the coordinator did not answer for " + std::to_string(static_cast<int>(waited)) + " s");
      return leave;
    }
    if (waited > kCoordinatorPatienceSeconds)
      return Unavailable("no answer from the coordinator at " + endpoint_ + " for " +
                         std::to_string(static_cast<int>(waited)) + " s while waiting for an assignment");
  }
}

void Worker::ReportFinish(const Status& status, const JobResult* result) {
  Request r;
  FinishRequest* f = r.mutable_finish();
  f->set_member_id(member_id_);
  f->set_success(status.ok());
  f->set_error(status.ToString());
  if (result) *f->mutable_result() = *result;
  if (result && trainer_) *f->mutable_ledger() = trainer_->ledger();
  // The job's cost counts this process to its end.
  const ProcessUsage u = ReadProcessUsage();
  last_metrics_.set_cpu_seconds(u.cpu_seconds);
  if (rapl_) {
    last_metrics_.set_cpu_energy_joules(rapl_->Sample(u.cpu_seconds));
    last_metrics_.set_cpu_energy_known(true);
  }
  *f->mutable_metrics() = last_metrics_;
  auto resp = client_.Call(r, std::chrono::seconds(10));
  if (!resp.ok()) SHOAL_LOG_WARN("could not report the result: {}", resp.status().ToString());
}

int Worker::Fail(const Status& s) {
  // A collective aborted because the coordinator ended the job, or a stop that was
  // asked for, is not a fault of this worker.
  if ((heartbeat_ && heartbeat_->stop_requested()) || s.code() == StatusCode::kCancelled)
    SHOAL_LOG_INFO("stopped: {}", s.ToString());
  else
    SHOAL_LOG_ERROR("{}", s.ToString());
  ReportFinish(s, nullptr);
  return kExitFailed;
}

void Worker::AbortGeneration(int64_t generation) {
  std::lock_guard<std::mutex> l(comm_mu_);
  if (comm_ && comm_generation_ == generation) comm_->Abort();  // peers fail fast, no timeout
}

void Worker::DropCommunicator() {
  std::unique_ptr<Communicator> old;
  {
    std::lock_guard<std::mutex> l(comm_mu_);
    if (comm_) comm_->Abort();
    old = std::move(comm_);
    comm_generation_ = 0;
  }
  old.reset();  // outside the lock: closing connections may take a moment
}

// Everything that lives across generations, built before the worker registers (a joiner
// then keeps its peers waiting only for the rendezvous, not for its data loading).
Status Worker::Prepare(const JobSpec& spec, const std::string& job_id) {
  spec_ = spec;
  SetBlasThreads(blas_threads_);
  ASSIGN_OR_RETURN(model_, MakeModel(spec_, launcher_.local_rank));
  ASSIGN_OR_RETURN(data_, OpenData(spec_));
  TrainerInputs in;
  in.spec = &spec_;
  in.train = data_.train ? &*data_.train : nullptr;
  in.loader = data_.loader.get();
  in.test = data_.test ? &*data_.test : nullptr;
  in.job_id = job_id;
  if (TraceEnabled(spec_)) {
    TraceOptions to;
    to.step_begin = spec_.trace().step_begin();
    to.step_end = spec_.trace().step_end();
    to.dir = TraceJobDir(spec_, job_id);
    to.job_id = job_id;
    to.host = ThisHostName();
    // Read when the file is written; the heartbeat thread exists by then.
    to.clock_offset = [this] { return heartbeat_ ? heartbeat_->clock_offset() : ClockOffset{}; };
    trace_ = std::make_unique<TraceRecorder>(std::move(to));
    in.trace = trace_.get();
  }
  ASSIGN_OR_RETURN(trainer_, Trainer::Create(in, model_.get()));
  auto link = LinkEmulationFor(spec_.collectives().emulate_bandwidth_mbps(), spec_.collectives().emulate_latency_us());
  if (!link.ok()) return link.status().WithContext("link emulation");
  if (link->enabled())
    SHOAL_LOG_INFO("link emulation on: send rate capped at {} Mbit/s (0 = no cap), {} us added per message",
                   link->bandwidth_mbps, link->latency_us);
#if SHOAL_HAVE_CUDA
  gpu_ = std::make_unique<GpuMonitor>(std::max(0, launcher_.local_rank));
#endif
  return OkStatus();
}

Status Worker::Join(const Assignment& a) {
  CommunicatorConfig cc;
  cc.backend = pick_by_hosts_ ? "auto" : backend_;
  cc.rank = a.rank();
  cc.size = a.world_size();
  cc.kv = &kv_;
  cc.prefix = a.kv_prefix();
  cc.timeout = RendezvousTimeout(spec_, cc.backend);
  cc.interface_or_host = ListenHost(endpoint_, listen_flag_);
  ASSIGN_OR_RETURN(cc.link_emulation,
                   LinkEmulationFor(spec_.collectives().emulate_bandwidth_mbps(), spec_.collectives().emulate_latency_us()));
  auto made = MakeCommunicator(cc);
  if (!made.ok()) return made.status().WithContext("building the " + cc.backend + " communicator");
  // One source of rank and world: the assignment; the communicator must agree.
  if ((*made)->rank() != a.rank() || (*made)->size() != a.world_size())
    return Internal("the " + cc.backend + " communicator says rank " + std::to_string((*made)->rank()) + " of " +
                    std::to_string((*made)->size()) + ", the assignment rank " + std::to_string(a.rank()) + " of " +
                    std::to_string(a.world_size()));
  {
    std::lock_guard<std::mutex> l(comm_mu_);
    comm_ = std::move(*made);
    comm_generation_ = a.generation();
  }
  return OkStatus();
}

void Worker::TracePhase(const char* name, double begin, double end, int64_t generation) {
  if (!trace_ || !trace_->active()) return;
  trace_->Complete(name, "regroup", "training", TraceMicrosFromMonotonic(begin), TraceMicrosFromMonotonic(end),
                   {{"generation", generation}});
}

void Worker::FlushTrace() {
  if (!trace_ || trace_->flushed()) return;
  Status s = trace_->Finish(trainer_ ? trainer_->position().step : trace_->current_step());
  if (s.ok()) SHOAL_LOG_INFO("timeline trace written to {}", trace_->path());
  else SHOAL_LOG_WARN("timeline trace: {}", s.ToString());
}

TrainerHooks Worker::Hooks(const Assignment& a) {
  TrainerHooks hooks;
  auto first_step = std::make_shared<bool>(true);
  hooks.on_metrics = [this, a, first_step](const WorkerMetrics& metrics) {
    last_metrics_ = metrics;
    last_commit_time_ = MonotonicSeconds();
    if (last_commit_time_ - last_usage_sample_ >= 0.5) {
      last_usage_sample_ = last_commit_time_;
      const ProcessUsage u = ReadProcessUsage();
      usage_fields_.set_cpu_seconds(u.cpu_seconds);
      usage_fields_.set_rss_bytes(u.rss_bytes);
      if (rapl_) {
        usage_fields_.set_cpu_energy_joules(rapl_->Sample(u.cpu_seconds));
        usage_fields_.set_cpu_energy_known(true);
      }
      usage_fields_.set_checkpoint_stall_seconds(stall_of_earlier_checkpointers_ +
                                                 (checkpointer_ ? checkpointer_->stats().total_stall_s : 0));
    }
    last_metrics_.MergeFrom(usage_fields_);
#if SHOAL_HAVE_CUDA
    // Device health at most twice a second: NVML reads cost tens of microseconds.
    double now = MonotonicSeconds();
    if (gpu_ && gpu_->available() && now - last_gpu_sample_ >= 0.5) {
      last_gpu_sample_ = now;
      if (auto h = gpu_->Sample(now)) {
        gpu_fields_.set_has_gpu(true);
        gpu_fields_.set_gpu_device(h->device);
        gpu_fields_.set_gpu_utilization_pct(h->utilization_pct);
        gpu_fields_.set_gpu_memory_used_bytes(h->memory_used_bytes);
        gpu_fields_.set_gpu_memory_total_bytes(h->memory_total_bytes);
        gpu_fields_.set_gpu_power_watts(h->power_watts);
        gpu_fields_.set_gpu_temperature_c(h->temperature_c);
        gpu_fields_.set_gpu_energy_joules(gpu_->usage().joules());
        gpu_fields_.set_gpu_seconds(gpu_->usage().gpu_seconds());
      }
    }
    if (gpu_fields_.has_gpu()) last_metrics_.MergeFrom(gpu_fields_);
#endif
    heartbeat_->Update(last_metrics_);
    if (*first_step) {
      *first_step = false;
      // How long the change took, told once by the new generation's rank 0.
      if (a.rank() == 0 && a.generation() > 1) {
        Request r;
        GenerationReportRequest* g = r.mutable_generation_report();
        g->set_member_id(member_id_);
        g->set_generation(a.generation());
        g->set_detect_seconds(detect_seconds_);
        g->set_regroup_seconds(regroup_seconds_);
        g->set_rendezvous_seconds(rendezvous_seconds_);
        g->set_sync_seconds(sync_seconds_);
        g->set_first_step_seconds(MonotonicSeconds() - trained_since_);
        g->set_first_step_unix_ms(UnixMillis());
        g->set_step(metrics.step());
        auto resp = client_.Call(r, std::chrono::seconds(2));
        if (!resp.ok()) SHOAL_LOG_WARN("generation report: {}", resp.status().ToString());
      }
    }
  };
  if (a.rank() == 0) hooks.on_ledger = [this](const Ledger& l) { heartbeat_->UpdateLedger(l); };
  hooks.should_stop = [this] { return heartbeat_->stop_requested() || heartbeat_->leave_refused() || g_signals > 1; };
  hooks.boundary_requested = [this] { return heartbeat_->boundary_pending() || g_signals > 0 || heartbeat_->fenced(); };
  hooks.on_epoch = [a](int epoch, double acc) {
    if (a.rank() == 0) SHOAL_LOG_INFO("epoch {}: test accuracy {:.4f}", epoch + 1, acc);
  };
  return hooks;
}

int Worker::Run() {
  launcher_ = DetectLauncher();
  InitLogging(launcher_.rank >= 0 ? "worker[" + std::to_string(launcher_.rank) + "]" : "worker");
  // Before any communicator (MPI reads its interface list at MPI_Init): the data plane
  // stays on the interface peers reach this worker on.
  // Only for an address given on purpose (or loopback): a host name may resolve to
  // 127.0.1.1 on Debian, which must not confine NCCL to lo on a real cluster.
  const std::string listen = ListenHost(endpoint_, listen_flag_);
  const bool told = !listen_flag_.empty() || std::getenv("SHOAL_LISTEN_HOST") != nullptr || listen == "127.0.0.1";
  if (auto iface = InterfaceOf(listen); told && iface.ok()) {
    for (const std::string& set : ConfineDataPlane(*iface)) SHOAL_LOG_INFO("data plane confined: {}", set);
  } else if (told) {
    SHOAL_LOG_WARN("data plane not confined to one interface: {}", iface.status().message());
  }
  // The job's backend decides whether this worker can regroup (mpi cannot): look it up
  // before registering. An unknown job is reported by Register itself.
  Request st;
  st.mutable_status()->set_job_id(job_id_);
  auto status = client_.Call(st, std::chrono::seconds(10));
  std::string requested = "auto";
  const bool known = status.ok() && status->status().jobs_size() == 1;
  if (known) requested = status->status().jobs(0).spec().collectives().backend();
  backend_ = ResolveBackend(requested);
  elastic_ = backend_ != "mpi";
  // auto outside mpirun: each generation's factory picks shm, gloo or hierarchical from
  // the hosts its ranks are on.
  pick_by_hosts_ = elastic_ && (requested.empty() || requested == "auto" || requested == "AUTO");
  const JobState job_state = known ? status->status().jobs(0).state() : JOB_STATE_UNSPECIFIED;
  if (job_state == JOB_PENDING || job_state == JOB_RUNNING) {
    Status s = Prepare(status->status().jobs(0).spec(), job_id_);
    if (!s.ok()) {
      SHOAL_LOG_ERROR("{}", s.ToString());
      return s.code() == StatusCode::kInvalidArgument || s.code() == StatusCode::kNotFound ? kExitUsage : kExitFailed;
    }
  }

  auto registered = Register();
  if (!registered.ok()) {
    SHOAL_LOG_ERROR("cannot register with {}: {}", endpoint_, registered.status().ToString());
    return registered.status().code() == StatusCode::kUnavailable ? kExitFailed : kExitUsage;
  }
  member_id_ = *registered;
  double interval = 0.5;
  if (status.ok() && status->status().jobs_size() == 1)
    interval = status->status().jobs(0).spec().workers().heartbeat_interval_s();
  heartbeat_ = std::make_unique<HeartbeatThread>(endpoint_, member_id_, interval,
                                                 [this](int64_t g) { AbortGeneration(g); });
  // A traced job aligns its ranks' clocks with heartbeats: a burst of them at the start
  // finds a short round trip (the offset's uncertainty is half of it).
  if (trace_) heartbeat_->SampleClockSoon(16);
  std::unique_ptr<AsyncCheckpointer> old_checkpointer;

  for (;;) {
    report_time_ = MonotonicSeconds();
    auto assignment = AwaitAssignment();
    if (!assignment.ok() && assignment.status().code() == StatusCode::kFailedPrecondition &&
        assignment.status().message().find("fenced") != std::string::npos && elastic_ && g_signals == 0) {
      // Declared dead while it was away (SIGSTOP, a partition): its state is stale. It
      // comes back as a joiner and takes the state of the generation it joins.
      SHOAL_LOG_WARN("{}; registering again", assignment.status().message());
      auto again = Register();
      if (!again.ok()) return Fail(again.status().WithContext("registering again after being fenced"));
      member_id_ = *again;
      heartbeat_->SetMember(member_id_);
      report_.Clear();
      has_state_ = false;
      continue;
    }
    if (!assignment.ok()) {
      // The job ended (cancelled, failed) while this member waited.
      SHOAL_LOG_WARN("{}", assignment.status().ToString());
      return assignment.status().code() == StatusCode::kAborted ? kExitFailed : Fail(assignment.status());
    }
    old_checkpointer.reset();  // its pending save was answered when its generation's scope was dropped
    if (assignment->exit()) {
      SHOAL_LOG_INFO("exiting: {}", assignment->exit_reason());
      return kExitOk;
    }
    const Assignment& a = *assignment;
    const double assigned_at = MonotonicSeconds();
    regroup_seconds_ = assigned_at - report_time_;
    InitLogging("worker[" + std::to_string(a.rank()) + "]");
    SHOAL_LOG_INFO("{}: generation {}, rank {} of {}{}", member_id_, a.generation(), a.rank(), a.world_size(),
                   a.cause().empty() ? "" : " (" + a.cause() + ")");
    heartbeat_->SetGeneration(a.generation());
    if (!trainer_) {
      Status s = Prepare(a.spec(), a.job_id());
      if (!s.ok()) return Fail(s);
    }
    if (trace_) {
      trace_->SetIdentity(a.rank(), member_id_);
      trace_->AtStep(trainer_->position().step);
      TracePhase("await assignment", report_time_, assigned_at, a.generation());
    }

    Status joined = Join(a);
    rendezvous_seconds_ = MonotonicSeconds() - assigned_at;
    double sync_start = MonotonicSeconds();
    if (joined.ok()) {
      if (a.state_source() >= 0) {
        joined = trainer_->SyncFrom(comm_.get(), a.state_source());
      } else {
        // No member holds state: the spec's resume checkpoint (first generation), the
        // job's latest checkpoint (everyone died), or a fresh start from rank 0's seed.
        JobSpec resume_spec = spec_;
        if (!a.resume_checkpoint().empty()) resume_spec.mutable_checkpoint()->set_resume(a.resume_checkpoint());
        if (!resume_spec.checkpoint().resume().empty()) {
          // The coordinator's choice is its registry's latest checkpoint of this very job.
          auto loaded = LoadResumeCheckpoint(resume_spec, OwnRankState{a.rank(), a.world_size()},
                                             a.resume_checkpoint().empty() ? "" : a.job_id());
          if (!loaded.ok()) return Fail(loaded.status().WithContext("resume"));
          SHOAL_LOG_INFO("resuming from {} (step {}, {})", loaded->dir, loaded->snapshot.step,
                         loaded->signature_verified ? "signed by " + loaded->signer_key_id : std::string("unsigned"));
          // Resuming inside this job (everyone had died): continue its ledger.
          const Ledger* history = !a.resume_checkpoint().empty() ? &a.ledger() : nullptr;
          Status s = trainer_->Restore(loaded->snapshot, a.world_size(), a.rank(), history);
          if (!s.ok()) return Fail(s.WithContext("resume"));
          parent_digest_ = loaded->manifest_digest;
        } else {
          joined = trainer_->SyncFrom(comm_.get(), 0);
        }
      }
    }
    sync_seconds_ = MonotonicSeconds() - sync_start;
    TracePhase("rendezvous", assigned_at, assigned_at + rendezvous_seconds_, a.generation());
    TracePhase("state sync", sync_start, sync_start + sync_seconds_, a.generation());
    if (!joined.ok()) {
      if (!Regroupable(joined) || !elastic_ || heartbeat_->stop_requested()) return Fail(joined);
      // The generation failed before it trained (a member died during the regroup).
      SHOAL_LOG_WARN("generation {} failed to start: {}", a.generation(), joined.ToString());
      DropCommunicator();
      report_.Clear();
      report_.set_ended_generation(a.generation());
      report_.set_committed_step(trainer_->position().step);
      report_.set_has_state(has_state_);
      report_.set_failed(true);
      report_.set_error(joined.ToString());
      detect_seconds_ = 0;
      continue;
    }
    has_state_ = true;
    SHOAL_LOG_INFO("generation {} ready at step {}: backend {}, rendezvous {:.3f} s, sync {:.3f} s", a.generation(),
                   trainer_->position().step, comm_->backend(), rendezvous_seconds_, sync_seconds_);

    CheckpointerSetup ck;
    ck.job_id = a.job_id();
    ck.rank = a.rank();
    ck.world = a.world_size();
    ck.kv = &kv_;
    ck.kv_prefix = a.kv_prefix();
    ck.parent_digest = parent_digest_;
    ck.lineage_digest = a.lineage_digest();
    ck.spec_digest = JobSpecDigest(a.spec());
    ck.trace = trace_.get();
    ck.on_commit = [endpoint = endpoint_, member = member_id_, gen = a.generation(), job = a.job_id(),
                    trainer = trainer_.get()](const CommitInfo& info) {
      RegisterCheckpoint(endpoint, member, gen, job, info, trainer->LedgerBeforeStep(info.step));
    };
    auto checkpointer = MakeCheckpointer(spec_, ck);
    if (!checkpointer.ok()) return Fail(checkpointer.status().WithContext("checkpointer"));
    if (checkpointer_) stall_of_earlier_checkpointers_ += checkpointer_->stats().total_stall_s;
    checkpointer_ = std::move(*checkpointer);

    trained_since_ = MonotonicSeconds();
    last_commit_time_ = trained_since_;
    auto outcome = trainer_->RunGeneration(comm_.get(), a.generation(), checkpointer_.get(), Hooks(a));
    if (!outcome.ok()) {
      DropCommunicator();
      return Fail(outcome.status());
    }
    if (outcome->end == GenerationEnd::kCompleted) {
      if (checkpointer_) {
        Status s = checkpointer_->Wait();
        if (!s.ok()) return Fail(s.WithContext("checkpoint"));
      }
      outcome->result.set_gpu_seconds(last_metrics_.gpu_seconds());
      outcome->result.set_energy_joules(last_metrics_.gpu_energy_joules());
      ReportFinish(OkStatus(), a.rank() == 0 ? &outcome->result : nullptr);
      DropCommunicator();
      if (backend_ == "mpi") FinalizeMpiIfInitialized();
      return kExitOk;
    }
    const bool failed = outcome->end == GenerationEnd::kCommFailed;
    detect_seconds_ = failed ? MonotonicSeconds() - last_commit_time_ : 0;
    if (failed) TracePhase("detect failure", last_commit_time_, last_commit_time_ + detect_seconds_, a.generation());
    DropCommunicator();
    if (heartbeat_->stop_requested() || g_signals > 1) return Fail(Cancelled("stopped: " + outcome->error.ToString()));
    if (failed && !elastic_)
      return Fail(outcome->error.WithContext("backend " + backend_ + " cannot regroup; the job ends"));
    if (failed) SHOAL_LOG_WARN("generation {} failed at step {}: {}", a.generation(), trainer_->position().step,
                               outcome->error.ToString());
    else SHOAL_LOG_INFO("generation {} ends after step {} (planned change)", a.generation(), trainer_->position().step);
    // The checkpoint still being written is kept until the next assignment: if a peer
    // died, its shard exchange is answered when this generation's scope is dropped.
    old_checkpointer = std::move(checkpointer_);
    report_.Clear();
    report_.set_ended_generation(a.generation());
    report_.set_committed_step(trainer_->position().step);
    report_.set_has_state(true);
    report_.set_failed(failed);
    if (failed) report_.set_error(outcome->error.ToString());
    *report_.mutable_ledger() = trainer_->ledger();
  }
}

}  // namespace
}  // namespace shoal

int main(int argc, char** argv) {
  CLI::App app{"shoal-worker: one Shoal training process (usually started by shoalctl run, mpirun or srun)"};
  std::string endpoint, job;
  int blas_threads = 1;
  std::string listen_host;
  app.add_option("--coordinator", endpoint, "coordinator endpoint, tcp://HOST:PORT")->required();
  app.add_option("--job", job, "job id to join (shoalctl submit prints it); a running job takes it at its next step boundary")
      ->required();
  app.add_option("--blas-threads", blas_threads, "OpenBLAS threads for this worker")->capture_default_str()->check(CLI::Range(1, 256));
  app.add_option("--listen-host", listen_host,
                 "address peers reach this worker on for the data plane (default: $SHOAL_LISTEN_HOST, loopback "
                 "if the coordinator is on loopback, else the host name)");
  app.footer("Signals: SIGTERM or SIGINT leaves the job at the next step boundary and exits 0; a second one exits at once.");
  CLI11_PARSE(app, argc, argv);
  // First signal: leave gracefully. Second: exit now (async-signal-safe: _exit only).
  auto on_signal = [](int) {
    if (shoal::g_signals.fetch_add(1) >= 1) ::_exit(143);
  };
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  // A peer that is gone must be an error on the socket, not SIGPIPE killing this worker
  // (a member woken from SIGSTOP writes to connections its old peers closed).
  std::signal(SIGPIPE, SIG_IGN);
  shoal::Worker worker(endpoint, job, blas_threads, listen_host);
  const int rc = worker.Run();
  worker.FlushTrace();
  return rc;
}
