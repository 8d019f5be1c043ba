// `shoalctl run SPEC`: the embedded default. Starts a coordinator on loopback with its
// state under ./.shoal/, spawns the workers as child processes, shows progress, prints
// a summary, and exits 0 only if the job completed.
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "cli/commands.h"
#include "cli/console.h"
#include "cli/output_pump.h"
#include "cli/format.h"
#include "cli/worker_launch.h"
#include "checkpoint/reader.h"
#include "common/clock.h"
#include "common/file_util.h"
#include "common/log.h"
#include "coordinator/client.h"
#include "lineage/dataset_lineage.h"
#include "coordinator/coordinator.h"
#include "coordinator/curve_keys.h"
#include "coordinator/server.h"
#include "datapipe/scan_check.h"
#include "spec/jobspec_loader.h"

namespace shoal {

namespace {

std::atomic<bool> g_interrupted{false};

struct RunOptions {
  std::string spec_path;
  int workers = 0;
  std::string summary_path;
  std::vector<std::string> overrides;
  std::string state_dir = ".shoal";
  bool json = false;
  bool quiet = false;
  std::string resume;
  bool allow_unsigned = false;
  bool allow_rollback = false;
  bool rescan = false;
  std::string auth_dir;  // default: $SHOAL_AUTH_DIR, else <state_dir>/auth
  std::string http = "127.0.0.1:0";  // the embedded coordinator's dashboard and metrics; "off": none
};

// The control plane of a run is CurveZMQ with no set-up step: keys are made under the
// auth dir on first use (kept for the next run, and for `shoalctl status` there), this
// process is admin, and the job's workers get a key of their own that serves only this
// job (role worker), handed over in their environment.
struct RunKeys {
  std::string dir;
  ClientKeys admin;
};

StatusOr<RunKeys> SetUpRunKeys(const RunOptions& o) {
  RunKeys k;
  const char* env = std::getenv("SHOAL_AUTH_DIR");
  k.dir = !o.auth_dir.empty() ? o.auth_dir : (env && *env) ? env : o.state_dir + "/auth";
  RETURN_IF_ERROR(InitAuthDir(k.dir).status());
  ASSIGN_OR_RETURN(k.admin, LoadClientKeys(k.dir + "/admin.key", k.dir + "/coordinator.pub"));
  return k;
}

// A worker key for `job_id`, admitted by the coordinator; returns the workers' environment.
StatusOr<std::vector<std::string>> AdmitWorkerKey(ControlClient& admin, const RunKeys& keys, const std::string& job_id) {
  const std::string dir = keys.dir + "/workers";
  std::string name = ("worker-" + job_id).substr(0, 56);
  const CurveKeyPair pair = NewCurveKeyPair();
  if (PathExists(dir + "/" + name + ".key")) name += "-" + CurveKeyFingerprint(pair.public_key).substr(0, 6);
  RETURN_IF_ERROR(WriteCurveKeyPair(pair, dir, name));
  Request add;
  AuthKey* k = add.mutable_auth_add()->mutable_key();
  k->set_name(name);
  k->set_public_key(pair.public_key);
  k->set_role(ROLE_WORKER);
  k->add_jobs(job_id);
  RETURN_IF_ERROR(admin.Call(add, std::chrono::seconds(10)).status());
  return std::vector<std::string>{"SHOAL_KEY=" + std::filesystem::absolute(dir + "/" + name + ".key").string(),
                                  "SHOAL_COORDINATOR_KEY=" +
                                      std::filesystem::absolute(keys.dir + "/coordinator.pub").string()};
}

// "--resume latest": the newest committed checkpoint of any earlier job with this spec's
// name under checkpoint.dir (job ids are "<name>-<random>"). The worker then follows
// that job directory's `latest` pointer and verifies what it finds. A path is checked
// here to name a checkpoint, so that a typo is bad input (exit 2) before any worker
// starts; the workers verify it.
StatusOr<std::string> ResolveResume(const JobSpec& spec, const std::string& resume) {
  if (resume != "latest") {
    auto dir = ResolveCheckpointDir(resume);
    if (!dir.ok()) return dir.status().WithContext("--resume " + resume);
    return resume;
  }
  const std::string& dir = spec.checkpoint().dir();
  if (dir.empty()) return InvalidArgument("--resume latest needs checkpoint.dir in the spec");
  std::error_code ec;
  std::filesystem::path best;
  std::filesystem::file_time_type best_time;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    std::string name = entry.path().filename().string();
    if (!entry.is_directory() || name.rfind(spec.name() + "-", 0) != 0) continue;
    auto latest = entry.path() / "latest";
    if (!std::filesystem::exists(latest)) continue;
    auto t = std::filesystem::last_write_time(latest, ec);
    if (best.empty() || t > best_time) {
      best = entry.path();
      best_time = t;
    }
  }
  if (best.empty()) return NotFound("--resume latest: no checkpoint of a job named " + spec.name() + " under " + dir);
  return best.string();
}

// Before any worker starts, what the workers' load would refuse without reading a
// shard: the signature, a renamed or substituted checkpoint, a turned-back `latest` or an
// older step than the newest in its job directory (without --allow-rollback). The
// workers check all of it again, and every shard.
Status PrecheckResume(const JobSpec& spec) {
  TrustStore trust;
  for (const std::string& path : spec.checkpoint().trust())
    RETURN_IF_ERROR(trust.AddFile(path).WithContext("checkpoint.trust"));
  LoadOptions o;
  o.allow_unsigned = spec.checkpoint().allow_unsigned();
  o.job_from_directory = true;
  o.resume = true;
  o.allow_rollback = spec.checkpoint().allow_rollback();
  auto checked = PrecheckCheckpoint(spec.checkpoint().resume(), trust, o);
  if (!checked.ok()) return checked.status().WithContext("--resume " + spec.checkpoint().resume());
  return OkStatus();
}

// The coordinator's registry is another witness of a job's newest checkpoint: it
// outlives a step directory that was deleted or replaced, which the job directory cannot
// show. Resuming from an older step than it records for the job needs --allow-rollback.
// A checkpoint outside the <dir>/<job>/step-<N> layout, or a job the registry does not
// know (another --state-dir), has nothing to look up.
Status CheckResumeAgainstRegistry(ControlClient& client, const JobSpec& spec) {
  ASSIGN_OR_RETURN(std::string dir, ResolveCheckpointDir(spec.checkpoint().resume()));
  const std::optional<int64_t> step = ParseStepDirName(std::filesystem::path(dir).filename().string());
  const std::string job = std::filesystem::path(dir).parent_path().filename().string();
  if (!step || job.empty()) return OkStatus();
  Request list;
  list.mutable_checkpoint_list()->set_job_id(job);
  auto resp = client.Call(list, std::chrono::seconds(10));
  if (!resp.ok()) return resp.status().WithContext("asking the coordinator's registry for the checkpoints of job " + job);
  int64_t newest = -1;
  for (const CheckpointRecord& rec : resp->checkpoint_list().records()) newest = std::max(newest, rec.step());
  if (newest <= *step) return OkStatus();
  return RefuseRollback(dir + " (job " + job + ")", *step, newest,
                        "the coordinator's registry records a checkpoint of job " + job + " at step " +
                            std::to_string(newest),
                        spec.checkpoint().allow_rollback())
      .WithContext("--resume");
}

// Waits for `pid` to exit until `deadline` (MonotonicSeconds); true once it is reaped
// (or was already, by Watch).
bool ReapBy(pid_t pid, double deadline) {
  while (::waitpid(pid, nullptr, WNOHANG) == 0) {
    if (MonotonicSeconds() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return true;
}

StatusOr<Job> FetchJob(ControlClient& client, const std::string& job_id, StatusResponse* full) {
  Request r;
  r.mutable_status()->set_job_id(job_id);
  ASSIGN_OR_RETURN(Response resp, client.Call(r, std::chrono::seconds(5)));
  if (resp.status().jobs_size() != 1) return NotFound("job " + job_id + " vanished");
  if (full) *full = resp.status();
  return resp.status().jobs(0);
}

// The worker processes of a run, and how many replacements it may still start.
struct WorkerPool {
  WorkerLaunch launch;               // the spec's; one process at a time for replacements
  std::vector<LaunchedProcess> live;
  int restarts_left = 0;
  int started = 0;
  Console* console = nullptr;  // every line to stderr goes through it
  OutputPump* pump = nullptr;  // reads the processes' output pipes

  void Adopt(std::vector<LaunchedProcess> got) {
    for (LaunchedProcess& p : got) {
      pump->Add(p.output);
      live.push_back(std::move(p));
    }
  }

  // Starts one more worker (elastic backends only): it joins at the next boundary.
  Status StartOne(const std::string& why, bool quiet) {
    WorkerLaunch one = launch;
    one.workers = 1;
    ASSIGN_OR_RETURN(std::vector<LaunchedProcess> got, LaunchWorkers(one));
    for (LaunchedProcess& p : got) {
      p.what = "worker " + std::to_string(started++);
      if (!quiet) console->Line("shoalctl: started " + p.what + " (pid " + std::to_string(p.pid) + "): " + why);
    }
    Adopt(std::move(got));
    return OkStatus();
  }
};

// Prints progress until the job ends; returns the final job record. Reaps the launched
// processes as they exit: one that fails is reported at once and, while the spec's
// workers.max_restarts allow, replaced by a new worker that joins the running job;
// `shoalctl scale` up is met the same way. With mpi, which cannot regroup, a failed
// mpirun is started again whole once the coordinator has restarted the job. When none is left before the job ended,
// nothing can finish it, so the job is cancelled and the run fails.
StatusOr<Job> Watch(ControlClient& client, const std::string& job_id, WorkerPool& pool, bool quiet) {
  Console& console = *pool.console;
  const bool tty = console.tty();
  const bool elastic = pool.launch.backend != "mpi";
  int last_epoch_printed = -1;
  double last_line = 0, restart_wait_since = 0;
  bool cancel_sent = false;
  for (;;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    if (g_interrupted && !cancel_sent) {
      Request c;
      c.mutable_cancel()->set_job_id(job_id);
      c.mutable_cancel()->set_reason("interrupted (Ctrl-C)");
      (void)client.Call(c, std::chrono::seconds(5));
      cancel_sent = true;
    }
    StatusResponse status;
    ASSIGN_OR_RETURN(Job job, FetchJob(client, job_id, &status));
    WorkerMetrics rank0;
    if (const Member* m = CurrentRankZero(status, job)) rank0 = m->metrics();
    if (!quiet && job.state() == JOB_RUNNING && rank0.step() > 0) {
      std::string line = ProgressLine(job, rank0) + "  world " + std::to_string(job.world_size());
      // An epoch's last progress line stays on screen; the next epoch gets a fresh one.
      if (tty && rank0.epoch() != last_epoch_printed && last_epoch_printed >= 0) console.KeepProgress();
      if (tty) {
        console.Progress(line);
      } else if (rank0.epoch() != last_epoch_printed || MonotonicSeconds() - last_line > 10) {
        console.Line(line);
        last_line = MonotonicSeconds();
      }
      last_epoch_printed = rank0.epoch();
    }
    if (IsTerminal(job.state())) {
      if (!quiet && tty) console.KeepProgress();
      return job;
    }
    std::string last_exit;
    int failed = 0;
    for (auto it = pool.live.begin(); it != pool.live.end();) {
      int st;
      if (::waitpid(it->pid, &st, WNOHANG) != it->pid) {
        ++it;
        continue;
      }
      last_exit = it->what + " (pid " + std::to_string(it->pid) + ") " + DescribeExit(st);
      if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        console.Line("shoalctl: " + last_exit);
        ++failed;
        // The coordinator need not wait for the heartbeats to stop (mpirun's pid matches
        // no member: its ranks are found by their heartbeats).
        auto reported = ReportWorkerExit(client, job_id, it->pid, DescribeExit(st));
        if (!reported.ok()) console.Line("shoalctl: could not report the exit: " + reported.status().ToString());
      }
      it = pool.live.erase(it);
    }
    if (elastic && !cancel_sent && job.state() == JOB_RUNNING) {
      for (; failed > 0 && pool.restarts_left > 0; --failed) {
        --pool.restarts_left;
        RETURN_IF_ERROR(pool.StartOne("replacing a worker that died (" + std::to_string(pool.restarts_left) +
                                          " restart(s) left)", quiet));
      }
      // shoalctl scale up: as many processes as the target size.
      for (int k = static_cast<int>(pool.live.size()); k < job.target_size(); ++k)
        RETURN_IF_ERROR(pool.StartOne("the job was scaled to " + std::to_string(job.target_size()), quiet));
    }
    if (pool.live.empty() && !elastic && !cancel_sent && job.state() == JOB_RUNNING && pool.restarts_left > 0) {
      // mpi cannot regroup: the coordinator restarts the job from its latest checkpoint
      // once it knows of the failure (a report, or the heartbeat timeout); then a whole
      // new mpirun starts.
      if (job.regroup() != REGROUP_NONE) {
        --pool.restarts_left;
        console.Line("shoalctl: restarting all " + std::to_string(pool.launch.workers) +
                     " worker(s) from the latest checkpoint (" + std::to_string(pool.restarts_left) +
                     " restart(s) left)");
        ASSIGN_OR_RETURN(std::vector<LaunchedProcess> again, LaunchWorkers(pool.launch));
        pool.live.clear();
        pool.Adopt(std::move(again));
        restart_wait_since = 0;
        continue;
      }
      if (restart_wait_since == 0) restart_wait_since = MonotonicSeconds();
      if (MonotonicSeconds() - restart_wait_since < job.spec().workers().heartbeat_timeout_s() + 5) continue;
    }
    if (pool.live.empty()) {
      // Exited workers may have reported the job's end just now: look once more.
      ASSIGN_OR_RETURN(Job again, FetchJob(client, job_id, nullptr));
      if (IsTerminal(again.state())) return again;
      const std::string why = "every worker process exited before the job ended; the last: " + last_exit;
      Request c;
      c.mutable_cancel()->set_job_id(job_id);
      c.mutable_cancel()->set_reason(why);
      (void)client.Call(c, std::chrono::seconds(5));
      ASSIGN_OR_RETURN(Job cancelled, FetchJob(client, job_id, nullptr));
      if (IsTerminal(cancelled.state())) return cancelled;  // its reason says why
      return Aborted("job " + job_id + ": " + why);
    }
  }
}

int DoRun(const RunOptions& o) {
  auto spec = LoadJobSpecFile(o.spec_path, o.overrides);
  if (!spec.ok()) return ReportError(spec.status());
  if (o.workers > 0) {
    WorkersSpec* w = spec->mutable_workers();
    w->set_initial(o.workers);
    w->set_min(std::min(w->min(), o.workers));
    w->set_max(std::max(w->max(), o.workers));
  }
  if (!o.resume.empty()) {
    auto resume = ResolveResume(*spec, o.resume);
    if (!resume.ok()) return ReportError(resume.status());
    spec->mutable_checkpoint()->set_resume(std::filesystem::absolute(*resume).string());
  }
  if (o.allow_unsigned) spec->mutable_checkpoint()->set_allow_unsigned(true);
  if (o.allow_rollback) spec->mutable_checkpoint()->set_allow_rollback(true);
  if (!spec->checkpoint().resume().empty()) {
    if (Status s = PrecheckResume(*spec); !s.ok()) return ReportError(s);
  }
  if (!PathExists(spec->data().dataset()))
    return ReportError(NotFound("data.dataset: folder " + spec->data().dataset() +
                                " does not exist (on Debian: apt-get install dataset-fashion-mnist)"));
  if (o.rescan) {
    auto scanned = RescanForSpec(*spec);
    if (!scanned.ok()) return ReportError(scanned.status().WithContext("--rescan"));
    if (!o.quiet)
      std::fprintf(stderr, "shoalctl: re-scanned %s with the spec's filters: %lld admitted, %lld quarantined\n",
                   spec->data().dataset().c_str(), static_cast<long long>(scanned->admitted),
                   static_cast<long long>(scanned->quarantined));
  }
  // The spec decides which filters admitted the data: a scan that ran others is refused
  // here, before any worker starts, with the command that fixes it (or --rescan).
  if (Status s = CheckJobDataMatchesScan(*spec); !s.ok())
    return ReportError(Status(s.code(), s.message() + " (or: shoalctl run --rescan)"));

  InitLogging("shoalctl");
  spdlog::set_level(spdlog::level::warn);  // the progress bar is the user interface here
  auto keys = SetUpRunKeys(o);
  if (!keys.ok()) return ReportError(keys.status().WithContext("setting up the control plane's keys"));
  ServerOptions so;
  so.bind = "tcp://127.0.0.1:*";
  so.state_dir = o.state_dir + "/coordinator";
  so.auth_dir = keys->dir;
  if (o.http != "off") so.http = o.http;
  auto server = CoordinatorServer::Create(so);
  if (!server.ok()) return ReportError(server.status());
  (*server)->Start();
  const std::string endpoint = (*server)->endpoint();
  ControlClient client(endpoint, keys->admin);
  if (!spec->checkpoint().resume().empty()) {
    if (Status s = CheckResumeAgainstRegistry(client, *spec); !s.ok()) return ReportError(s);
  }
  (void)WriteFileAtomic(o.state_dir + "/endpoint", endpoint + "\n");

  Request submit;
  *submit.mutable_submit()->mutable_spec() = *spec;
  *submit.mutable_submit()->mutable_lineage() = SubmitterLineage(*spec);
  auto submitted = client.Call(submit, std::chrono::seconds(10));
  if (!submitted.ok()) return ReportError(submitted.status());
  const std::string job_id = submitted->submit().job_id();
  const int n = spec->workers().initial();
  if (!o.quiet)
    std::fprintf(stderr, "shoalctl: job %s, %d worker(s), backend %s, coordinator %s%s\n", job_id.c_str(), n,
                 spec->collectives().backend().c_str(), endpoint.c_str(),
                 (*server)->http_address().empty()
                     ? ""
                     : (", dashboard http://" + (*server)->http_address() + "/job/" + job_id).c_str());

  auto worker_env = AdmitWorkerKey(client, *keys, job_id);
  if (!worker_env.ok()) return ReportError(worker_env.status().WithContext("admitting the workers' key"));
  int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  WorkerLaunch launch{spec->collectives().backend(), n, endpoint, job_id, std::max(1, cores / n), *worker_env};
  // The workers' output comes through pipes, so that their log lines never land in the
  // middle of the progress line: one writer prints both (cli/console.h).
  launch.capture_output = true;
  winsize ws{};
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  const int width = tty && ::ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 ? ws.ws_col : 0;
  Console console([](std::string_view s) { (void)std::fwrite(s.data(), 1, s.size(), stderr); }, tty, width);
  OutputPump pump(&console);
  auto launched = LaunchWorkers(launch);
  if (!launched.ok()) return ReportError(launched.status());
  WorkerPool pool{launch, {}, spec->workers().max_restarts(), static_cast<int>(launched->size()), &console, &pump};
  pool.Adopt(std::move(*launched));

  auto job = Watch(client, job_id, pool, o.quiet);
  // Workers exit on their own once the job ends; give them a moment, then insist:
  // SIGTERM first (mpirun forwards it to its ranks), SIGKILL 5 s later.
  double deadline = MonotonicSeconds() + 15;
  for (const LaunchedProcess& p : pool.live) {
    if (ReapBy(p.pid, deadline)) continue;
    ::kill(p.pid, SIGTERM);
    deadline = MonotonicSeconds() + 5;
    if (ReapBy(p.pid, deadline)) continue;
    ::kill(p.pid, SIGKILL);
    ::waitpid(p.pid, nullptr, 0);
  }
  // Every process is gone: what they wrote last (mpirun's own farewell included) is
  // still in the pipes. A grandchild that outlived them (none should) cannot hold us.
  pump.Drain(5);
  console.ClearProgress();
  // The embedded coordinator stops with us: do not point later `status` calls at it.
  std::filesystem::remove(o.state_dir + "/endpoint");
  if (!job.ok()) return ReportError(job.status());

  nlohmann::json summary = SummaryJson(*job);
  // Which filters admitted the data the job trained on (the scan the spec was checked
  // against before any worker started).
  const auto scan = ReadScanReport(spec->data().dataset());
  if (scan.ok()) {
    nlohmann::json filters = nlohmann::json::array();
    for (const FilterReport& f : scan->filters)
      filters.push_back({{"name", f.name}, {"enabled", f.enabled}, {"threshold", f.threshold},
                         {"version", f.version}, {"flagged", f.flagged}});
    summary["data_filters"] = filters;
    summary["data_scan"] = {{"records", scan->records}, {"admitted", scan->admitted},
                            {"quarantined", scan->quarantined}, {"manifest_sha256", scan->manifest_sha256}};
  }
  if (!o.summary_path.empty()) {
    Status s = WriteFileAtomic(o.summary_path, summary.dump(2) + "\n");
    if (!s.ok()) return ReportError(s);
  }
  if (o.json) {
    std::cout << summary.dump(2) << std::endl;
  } else {
    std::printf("job %s %s\n", job->id().c_str(), JobStateName(job->state()).c_str());
    if (!job->failure_reason().empty()) std::printf("  reason: %s\n", job->failure_reason().c_str());
    if (job->state() == JOB_COMPLETED) {
      const JobResult& r = job->result();
      std::printf("  %lld steps, %d epoch(s) completed, world size %d, backend %s\n", static_cast<long long>(r.steps()),
                  r.epochs(), r.world_size(), r.backend().c_str());
      std::printf("  final test accuracy %.4f, final loss %.4f\n", r.final_test_accuracy(), r.final_loss());
      if (scan.ok()) {
        std::string on;
        for (const FilterReport& f : scan->filters)
          if (f.enabled) on += (on.empty() ? "" : ", ") + f.name + " v" + std::to_string(f.version);
        std::printf("  data: %lld of %lld records admitted by the filters %s (%lld quarantined)\n",
                    static_cast<long long>(scan->admitted), static_cast<long long>(scan->records),
                    on.empty() ? "(none on)" : on.c_str(), static_cast<long long>(scan->quarantined));
      }
      std::printf("  %.0f samples/s, %.1f s wall, %.1f MiB sent per worker\n", r.samples_per_second(), r.wall_seconds(),
                  r.bytes_sent_per_worker() / 1048576.0);
      double per_rank = r.wall_seconds() > 0 ? 1.0 / r.wall_seconds() : 0;
      if (r.resumed_from_step() > 0) std::printf("  resumed from step %lld\n", static_cast<long long>(r.resumed_from_step()));
      if (job->generation() > 1)
        std::printf("  %lld generations: membership changed %lld time(s) (shoalctl events %s lists why)\n",
                    static_cast<long long>(job->generation()), static_cast<long long>(job->generation() - 1),
                    job->id().c_str());
      if (r.checkpoints_saved() > 0)
        std::printf("  %lld checkpoint(s) saved, training stalled %.3f s for the asynchronous ones (the final, "
                    "synchronous save took %.3f s)\n",
                    static_cast<long long>(r.checkpoints_saved()), r.checkpoint_stall_seconds(),
                    r.checkpoint_final_save_seconds());
      if (r.codec() != "none" && r.bytes_uncompressed_per_worker() > 0) {
        // Gradient bytes against gradient bytes; older results lack the gradient share.
        const int64_t sent = r.gradient_bytes_sent_per_worker() > 0 ? r.gradient_bytes_sent_per_worker()
                                                                    : r.bytes_sent_per_worker();
        std::printf("  codec %s: %.1fx fewer gradient bytes than uncompressed, %.2f s of codec compute\n",
                    r.codec().c_str(),
                    static_cast<double>(r.bytes_uncompressed_per_worker()) / std::max<int64_t>(1, sent),
                    r.codec_compute_seconds());
      }
      std::printf("  time share: sgemm %.0f%%, communication %.0f%%, rest of compute %.0f%%\n",
                  100 * r.sgemm_seconds() * per_rank, 100 * r.comm_seconds() * per_rank,
                  100 * (r.compute_seconds() - r.sgemm_seconds()) * per_rank);
    }
  }
  if (g_interrupted) return kExitInterrupted;
  return job->state() == JOB_COMPLETED ? kExitOk : kExitFailed;
}

}  // namespace

void RegisterRunCommand(CLI::App& app, int* exit_code) {
  auto opts = std::make_shared<RunOptions>();
  CLI::App* run = app.add_subcommand(
      "run", "Run a job here: embedded coordinator on loopback, workers as child processes (through mpirun for "
             "collectives.backend=mpi)");
  run->add_option("spec", opts->spec_path, "job spec YAML file")->required();
  run->add_option("--workers", opts->workers, "number of workers (overrides workers.initial)")->check(CLI::Range(1, 256));
  run->add_option("--summary", opts->summary_path, "write the run summary as JSON to this file");
  run->add_option("--set", opts->overrides, "override a spec field: path.to.field=value (repeatable)");
  run->add_option("--state-dir", opts->state_dir, "where the embedded coordinator keeps its state")->capture_default_str();
  run->add_option("--resume", opts->resume, "start from a checkpoint: 'latest' (of this spec's job name) or a path");
  run->add_flag("--allow-unsigned", opts->allow_unsigned, "load a checkpoint without a trusted signature (digests are still checked)");
  run->add_flag("--allow-rollback", opts->allow_rollback,
                "resume from a checkpoint older than the newest one known for its job (a newer one in its job "
                "directory that verifies, a turned-back `latest`, or the coordinator's registry), with a warning "
                "naming both steps; without it that is refused (spec: checkpoint.allow_rollback)");
  run->add_flag("--rescan", opts->rescan,
                "scan the dataset again with the spec's data.filters first (without it, a scan that ran other "
                "filters is refused)");
  run->add_option("--auth-dir", opts->auth_dir,
                  "control-plane keys, made on first use (default: $SHOAL_AUTH_DIR, else STATE_DIR/auth)");
  run->add_option("--http", opts->http,
                  "HOST:PORT of the embedded coordinator's read-only dashboard and /metrics (port 0 picks one; "
                  "\"off\": none)")
      ->capture_default_str();
  run->add_flag("--json", opts->json, "print the summary as JSON on stdout");
  run->add_flag("--quiet", opts->quiet, "no progress output");
  run->callback([opts, exit_code] {
    struct sigaction sa = {};
    sa.sa_handler = [](int) { g_interrupted = true; };
    ::sigaction(SIGINT, &sa, nullptr);
    ::sigaction(SIGTERM, &sa, nullptr);
    *exit_code = DoRun(*opts);
  });
}

}  // namespace shoal
