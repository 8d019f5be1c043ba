// End-to-end tests with real processes over real sockets: the cluster path
// (shoal-coordinator + shoalctl submit + workers by hand or by mpirun), `shoalctl run`,
// a coordinator restart, and bad input that must get a clear error, never a crash.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "checkpoint/reader.h"
#include "common/file_util.h"
#include "tests/cluster_util.h"

namespace shoal::testing {
namespace {

// A short job: 150 steps of 2 x 64 records then an evaluation on the full test set.
std::vector<std::string> ShortJobArgs(const std::string& backend) {
  return {"--set", "training.max_steps=150", "--set", "collectives.backend=" + backend, "--set", "workers.initial=2"};
}

void SubmitJob(const std::string& endpoint, const std::string& job, const std::string& backend) {
  std::vector<std::string> argv = {kBin + "/shoalctl", "submit", kSpec, "--coordinator", endpoint, "--job-id", job};
  for (auto& a : ShortJobArgs(backend)) argv.push_back(a);
  auto r = RunCommand(argv, 20);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, job + "\n");
}

TEST(ClusterPath, CoordinatorSubmitAndTwoWorkersByHandTrainAboveChance) {
  if (!HaveDataset()) GTEST_SKIP() << "dataset-fashion-mnist not installed";
  std::string dir = TempDir("cluster");
  CoordinatorProcess coord(dir);
  ASSERT_FALSE(coord.endpoint().empty()) << coord.log();
  SubmitJob(coord.endpoint(), "byhand", "gloo");
  BackgroundProcess w0({kBin + "/shoal-worker", "--coordinator", coord.endpoint(), "--job", "byhand"}, dir + "/w0.log");
  BackgroundProcess w1({kBin + "/shoal-worker", "--coordinator", coord.endpoint(), "--job", "byhand"}, dir + "/w1.log");
  EXPECT_EQ(w0.Wait(240), 0) << ReadText(dir + "/w0.log");
  EXPECT_EQ(w1.Wait(60), 0) << ReadText(dir + "/w1.log");
  auto st = StatusJson(coord.endpoint(), "byhand");
  EXPECT_EQ(st["state"], "completed") << st.dump(2);
  EXPECT_EQ(st["world_size"], 2);
  ASSERT_EQ(st["members"].size(), 2u);
  for (auto& m : st["members"]) {
    EXPECT_EQ(m["step"], 150);
    EXPECT_GT(m["test_accuracy"].get<double>(), 0.5) << "chance is 0.1";
    EXPECT_GT(m["bytes_sent"].get<int64_t>(), 0);
  }
}

// `shoalctl checkpoint list JOB` finds the job's checkpoints through the coordinator's
// registry; an unknown job is bad input (2), an unreachable coordinator 3.
TEST(ClusterPath, CheckpointListFindsAJobThroughTheRegistry) {
  if (!HaveDataset()) GTEST_SKIP() << "dataset-fashion-mnist not installed";
  std::string dir = TempDir("ckpt-list");
  CoordinatorProcess coord(dir);
  ASSERT_FALSE(coord.endpoint().empty()) << coord.log();
  auto r = RunCommand({kBin + "/shoalctl", "submit", kSpec, "--coordinator", coord.endpoint(), "--job-id", "ckjob",
                       "--set", "training.max_steps=60", "--set", "collectives.backend=gloo", "--set", "workers.initial=2",
                       "--set", "checkpoint.dir=" + dir + "/ck", "--set", "checkpoint.every_steps=30"},
                      20);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  BackgroundProcess w0({kBin + "/shoal-worker", "--coordinator", coord.endpoint(), "--job", "ckjob"}, dir + "/w0.log");
  BackgroundProcess w1({kBin + "/shoal-worker", "--coordinator", coord.endpoint(), "--job", "ckjob"}, dir + "/w1.log");
  ASSERT_EQ(w0.Wait(240), 0) << ReadText(dir + "/w0.log");
  ASSERT_EQ(w1.Wait(60), 0) << ReadText(dir + "/w1.log");

  auto list = RunCommand({kBin + "/shoalctl", "checkpoint", "list", "ckjob", "--coordinator", coord.endpoint(),
                          "--allow-unsigned", "--json"}, 30);
  ASSERT_EQ(list.exit_code, 0) << list.out << list.err;
  auto js = nlohmann::json::parse(list.out, nullptr, false);
  ASSERT_FALSE(js.is_discarded()) << list.out;
  EXPECT_EQ(js["job_dir"], dir + "/ck/ckjob");
  std::vector<int64_t> steps;
  for (auto& c : js["checkpoints"]) {
    steps.push_back(c["step"].get<int64_t>());
    EXPECT_TRUE(c["verified"].get<bool>()) << c.dump();
  }
  EXPECT_EQ(steps, (std::vector<int64_t>{30, 60}));

  auto unknown = RunCommand({kBin + "/shoalctl", "checkpoint", "list", "nosuchjob", "--coordinator", coord.endpoint()}, 30);
  EXPECT_EQ(unknown.exit_code, 2) << unknown.err;
  EXPECT_NE(unknown.err.find("nosuchjob"), std::string::npos) << unknown.err;
  auto away = RunCommand({kBin + "/shoalctl", "checkpoint", "list", "ckjob", "--coordinator", "tcp://127.0.0.1:9"}, 30);
  EXPECT_EQ(away.exit_code, 3) << away.err;
}

TEST(ClusterPath, MpirunLaunchesWorkersThatReduceWithMpi) {
  if (!HaveDataset()) GTEST_SKIP() << "dataset-fashion-mnist not installed";
  std::string dir = TempDir("mpirun");
  CoordinatorProcess coord(dir);
  ASSERT_FALSE(coord.endpoint().empty()) << coord.log();
  SubmitJob(coord.endpoint(), "viampi", "mpi");
  auto r = RunCommand({SHOAL_MPIEXEC, "--allow-run-as-root", "--oversubscribe", "-np", "2", kBin + "/shoal-worker",
                       "--coordinator", coord.endpoint(), "--job", "viampi"},
                      240);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  auto st = StatusJson(coord.endpoint(), "viampi");
  EXPECT_EQ(st["state"], "completed") << st.dump(2);
  for (auto& m : st["members"]) EXPECT_GT(m["test_accuracy"].get<double>(), 0.5);
  EXPECT_NE(r.err.find("backend mpi"), std::string::npos) << r.err;
}

TEST(ClusterPath, RestartedCoordinatorProcessStillListsTheJob) {
  std::string dir = TempDir("restart");
  CoordinatorProcess coord(dir);
  ASSERT_FALSE(coord.endpoint().empty()) << coord.log();
  SubmitJob(coord.endpoint(), "survivor", "gloo");
  coord.Stop();
  coord.Start();
  auto st = StatusJson(coord.endpoint(), "survivor");
  EXPECT_EQ(st["job"], "survivor");
  EXPECT_EQ(st["state"], "pending");
}

TEST(ShoalctlRun, TrainsTwoWorkersAndWritesTheSummary) {
  if (!HaveDataset()) GTEST_SKIP() << "dataset-fashion-mnist not installed";
  std::string dir = TempDir("run");
  std::vector<std::string> argv = {kBin + "/shoalctl", "run", kSpec, "--workers", "2", "--summary", dir + "/summary.json",
                                   "--set", "training.max_steps=150"};
  auto r = RunCommand(argv, 240, dir);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  auto s = nlohmann::json::parse(ReadText(dir + "/summary.json"), nullptr, false);
  ASSERT_FALSE(s.is_discarded());
  for (const char* key : {"job", "state", "epochs", "steps", "world_size", "final_test_accuracy", "samples_per_second",
                          "wall_seconds", "bytes_sent_per_worker"})
    EXPECT_TRUE(s.contains(key)) << key;
  EXPECT_EQ(s["state"], "completed");
  EXPECT_EQ(s["steps"], 150);
  EXPECT_EQ(s["world_size"], 2);
  EXPECT_GT(s["final_test_accuracy"].get<double>(), 0.5);
  EXPECT_TRUE(std::filesystem::exists(dir + "/.shoal/coordinator")) << "state under ./.shoal/";

  // After the run, in its directory, the stopped run's store answers usage and lineage
  // (no coordinator is named or running).
  auto usage = RunCommand({kBin + "/shoalctl", "usage", "--by", "job", "--json"}, 30, dir);
  ASSERT_EQ(usage.exit_code, 0) << usage.err;
  auto rows = nlohmann::json::parse(usage.out, nullptr, false);
  ASSERT_EQ(rows.size(), 1u) << usage.out;
  EXPECT_EQ(rows[0]["job"], s["job"]);
  EXPECT_GT(rows[0]["cpu_seconds"].get<double>(), 0);
  EXPECT_EQ(rows[0]["samples"], 150 * 2 * 64);
  auto lineage = RunCommand({kBin + "/shoalctl", "lineage", "show", s["job"].get<std::string>(), "--json"}, 30, dir);
  ASSERT_EQ(lineage.exit_code, 0) << lineage.err;
  auto l = nlohmann::json::parse(lineage.out, nullptr, false);
  ASSERT_FALSE(l.is_discarded()) << lineage.out;
  std::vector<std::string> test_files;
  for (const auto& f : l["jobs"][0]["job"]["test_dataset"]["shards"]) test_files.push_back(f["file"]);
  EXPECT_EQ(test_files, (std::vector<std::string>{"t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}))
      << "the test set is the t10k split, not every file of its folder";
  EXPECT_EQ(l["jobs"][0]["generations"][0]["members"].size(), 2u);
}

// collectives.backend=mpi: `run` starts its workers through one mpirun, and they reduce
// with MPI.
TEST(ShoalctlRun, MpiBackendStartsTheWorkersThroughMpirun) {
  if (!HaveDataset()) GTEST_SKIP() << "dataset-fashion-mnist not installed";
  std::string dir = TempDir("run-mpi");
  auto r = RunCommand({kBin + "/shoalctl", "run", kSpec, "--workers", "2", "--json", "--set", "training.max_steps=40",
                       "--set", "training.evaluate=false", "--set", "collectives.backend=mpi"},
                      240, dir);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  auto s = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_FALSE(s.is_discarded()) << r.out;
  EXPECT_EQ(s["state"], "completed");
  EXPECT_EQ(s["backend"], "mpi");
  EXPECT_EQ(s["world_size"], 2);
  EXPECT_EQ(s["steps"], 40);
  EXPECT_GT(s["bytes_sent_per_worker"].get<int64_t>(), 0);
  // The summary says which filters admitted the data (the example dataset is scanned).
  ASSERT_TRUE(s.contains("data_filters")) << r.out;
  ASSERT_FALSE(s["data_filters"].empty());
  for (const auto& f : s["data_filters"]) {
    EXPECT_TRUE(f.contains("name") && f.contains("enabled") && f.contains("version")) << f.dump();
  }
  EXPECT_EQ(s["data_scan"]["admitted"].get<int64_t>() + s["data_scan"]["quarantined"].get<int64_t>(),
            s["data_scan"]["records"].get<int64_t>());
}

// collectives.emulate_bandwidth_mbps reaches the workers' communicators: each worker's
// gradient bytes take at least bytes / rate on the wire (less a 64 KiB burst per
// message; half the bound leaves room for that), where unthrottled they take
// milliseconds. A correctness bound of the token bucket, not a performance threshold.
TEST(ShoalctlRun, SpecLinkEmulationCapsTheWorkersSends) {
  if (!HaveDataset()) GTEST_SKIP() << "dataset-fashion-mnist not installed";
  std::string dir = TempDir("run-capped");
  auto r = RunCommand({kBin + "/shoalctl", "run", kSpec, "--workers", "2", "--json", "--set", "training.max_steps=10",
                       "--set", "training.evaluate=false", "--set", "collectives.backend=gloo", "--set",
                       "collectives.emulate_bandwidth_mbps=40"},
                      240, dir);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  auto s = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_FALSE(s.is_discarded()) << r.out;
  const double bytes = s["gradient_bytes_sent_per_worker"].get<double>();
  EXPECT_GT(bytes, 1e6) << r.out;
  EXPECT_GE(s["comm_seconds"].get<double>(), 0.5 * bytes / 5e6) << r.out;  // 40 Mbit/s = 5 MB/s
  EXPECT_NE(r.err.find("link emulation on: send rate capped at 40 Mbit/s"), std::string::npos) << r.err;
}

// Worker processes that all exit before the job ends (here a worker binary that cannot
// work) fail the run at once, with the reason, instead of leaving it waiting forever.
TEST(ShoalctlRun, WorkersThatAllExitEarlyFailTheRunInsteadOfHanging) {
  if (!HaveDataset()) GTEST_SKIP() << "dataset-fashion-mnist not installed";
  std::string dir = TempDir("run-noworker");
  auto r = RunCommand({"/usr/bin/env", "SHOAL_WORKER=/bin/false", kBin + "/shoalctl", "run", kSpec, "--workers", "2",
                       "--json", "--set", "training.max_steps=40"},
                      60, dir);
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  auto s = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_FALSE(s.is_discarded()) << r.out << r.err;
  EXPECT_EQ(s["state"], "cancelled");
  EXPECT_NE(r.err.find("worker 0"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("exited with code 1"), std::string::npos) << r.err;
}

// A long `shoalctl run` in the background, logging to DIR/run.log; returns once its
// workers train (the job id read from the log), or with an empty id after 60 s.
std::string StartLongRun(const std::string& dir, std::unique_ptr<BackgroundProcess>* run) {
  *run = std::make_unique<BackgroundProcess>(
      std::vector<std::string>{kBin + "/shoalctl", "run", kSpec, "--workers", "2", "--state-dir", dir + "/.shoal",
                               "--set", "training.epochs=200"},
      dir + "/run.log");
  for (int i = 0; i < 600; ++i) {
    const std::string log = ReadText(dir + "/run.log");
    const size_t at = log.find("shoalctl: job ");
    if (at != std::string::npos && log.find("samples/s") != std::string::npos) {
      const size_t start = at + std::string("shoalctl: job ").size();
      return log.substr(start, log.find(',', start) - start);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return "";
}

bool WorkersOfJobRunning(const std::string& job) {
  return RunCommand({"pgrep", "-f", "shoal-worker.*--job " + job}, 10).exit_code == 0;
}

// Ctrl-C reaches shoalctl (the workers have a process group of their own): it cancels
// the job, every worker stops through the coordinator, and the run exits 130.
TEST(ShoalctlRun, InterruptCancelsTheJobAndEveryWorkerStops) {
  if (!HaveDataset()) GTEST_SKIP() << "dataset-fashion-mnist not installed";
  std::string dir = TempDir("run-interrupt");
  std::unique_ptr<BackgroundProcess> run;
  const std::string job = StartLongRun(dir, &run);
  ASSERT_FALSE(job.empty()) << ReadText(dir + "/run.log");
  ASSERT_TRUE(WorkersOfJobRunning(job));
  run->Kill(SIGINT);
  EXPECT_EQ(run->Wait(60), 130) << ReadText(dir + "/run.log");
  const std::string log = ReadText(dir + "/run.log");
  EXPECT_NE(log.find("job " + job + " cancelled"), std::string::npos) << log;
  EXPECT_NE(log.find("interrupted (Ctrl-C)"), std::string::npos) << log;
  EXPECT_FALSE(WorkersOfJobRunning(job));
}

// shoalctl killed outright: its workers are sent SIGTERM and do not outlive it.
TEST(ShoalctlRun, WorkersDoNotOutliveAKilledShoalctl) {
  if (!HaveDataset()) GTEST_SKIP() << "dataset-fashion-mnist not installed";
  std::string dir = TempDir("run-killed");
  std::unique_ptr<BackgroundProcess> run;
  const std::string job = StartLongRun(dir, &run);
  ASSERT_FALSE(job.empty()) << ReadText(dir + "/run.log");
  ASSERT_TRUE(WorkersOfJobRunning(job));
  run->Kill(SIGKILL);
  run->Wait(10);
  bool gone = false;
  for (int i = 0; i < 300 && !gone; ++i) {  // they may first try to report to the dead coordinator
    gone = !WorkersOfJobRunning(job);
    if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(gone) << "workers of " << job << " still running 30 s after shoalctl was killed";
}

// The only job directory under a run's checkpoint.dir.
std::string OnlyJobDir(const std::string& ckpt_dir) {
  std::vector<std::string> jobs;
  for (const auto& e : std::filesystem::directory_iterator(ckpt_dir)) jobs.push_back(e.path().string());
  EXPECT_EQ(jobs.size(), 1u) << ckpt_dir;
  return jobs.empty() ? "" : jobs[0];
}

// Exact resume across processes, with a codec whose state differs per rank: 2 workers,
// PowerSGD, signed checkpoints. 20 steps, then `--resume` to 40, equals 40 steps in one
// run: parameters, momentum and each rank's codec state, bit for bit.
TEST(ShoalctlRun, ResumeContinuesBitForBitWithEachRanksCodecState) {
  if (!HaveDataset()) GTEST_SKIP() << "dataset-fashion-mnist not installed";
  std::string dir = TempDir("resume");
  auto keygen = RunCommand({kBin + "/shoalctl", "keygen", "--out", dir + "/keys"}, 30);
  ASSERT_EQ(keygen.exit_code, 0) << keygen.err;
  auto run = [&](const std::string& ckpt, int steps, const std::string& resume) {
    std::vector<std::string> argv = {kBin + "/shoalctl", "run", kSpec, "--workers", "2", "--json",
                                     "--set", "model.layers=[784,64,10]", "--set", "training.evaluate=false",
                                     "--set", "collectives.codec=powersgd", "--set", "collectives.powersgd_warmup_steps=3",
                                     "--set", "training.max_steps=" + std::to_string(steps),
                                     "--set", "checkpoint.dir=" + ckpt, "--set", "checkpoint.every_steps=20",
                                     "--set", "checkpoint.sign_key=" + dir + "/keys/shoal.key",
                                     "--set", "checkpoint.trust=[" + dir + "/keys/shoal.pub]"};
    if (!resume.empty()) argv.insert(argv.end(), {"--resume", resume});
    auto r = RunCommand(argv, 240, dir);
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    return nlohmann::json::parse(r.out, nullptr, false);
  };
  run(dir + "/full", 40, "");
  run(dir + "/part", 20, "");
  const std::string part_job = OnlyJobDir(dir + "/part");
  auto resumed = run(dir + "/part", 40, part_job + "/step-20");
  ASSERT_FALSE(resumed.is_discarded());
  EXPECT_EQ(resumed.dump().find("\"resumed_from_step\":20") != std::string::npos, true) << resumed.dump();

  // The resumed run's spec differs (max_steps, resume), and so does its job id.
  std::string resumed_job;
  for (const auto& e : std::filesystem::directory_iterator(dir + "/part"))
    if (e.path().string() != part_job) resumed_job = e.path().string();
  ASSERT_FALSE(resumed_job.empty());

  TrustStore trust;
  ASSERT_TRUE(trust.AddFile(dir + "/keys/shoal.pub").ok());
  auto full = LoadCheckpoint(OnlyJobDir(dir + "/full") + "/step-40", trust, false);
  auto again = LoadCheckpoint(resumed_job + "/step-40", trust, false);
  auto parent = VerifyCheckpoint(part_job + "/step-20", trust, false);
  ASSERT_TRUE(full.ok()) << full.status().ToString();
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  ASSERT_TRUE(parent.ok());
  EXPECT_EQ(again->manifest.parent_digest(), parent->manifest_digest);  // lineage: step-20 is its parent
  ASSERT_EQ(full->manifest.rank_states_size(), 2);
  ASSERT_EQ(full->snapshot.tensors.size(), again->snapshot.tensors.size());
  for (size_t i = 0; i < full->snapshot.tensors.size(); ++i)
    EXPECT_TRUE(full->snapshot.tensors[i].bytes == again->snapshot.tensors[i].bytes) << full->snapshot.tensors[i].name;
  ASSERT_EQ(full->snapshot.rank_tensors.size(), 2u);
  ASSERT_EQ(again->snapshot.rank_tensors.size(), 2u);
  for (int r = 0; r < 2; ++r) {
    EXPECT_TRUE(full->snapshot.rank_tensors[r].bytes == again->snapshot.rank_tensors[r].bytes) << "rank " << r;
  }
  EXPECT_FALSE(full->snapshot.rank_tensors[0].bytes == full->snapshot.rank_tensors[1].bytes)
      << "the ranks' residuals should differ";
}

// Resuming from an older checkpoint than the newest known for its job is refused before
// any worker starts, naming both steps, whether the newer one is in the job directory,
// behind a turned-back `latest`, or known only to the coordinator's registry (its
// directory deleted); --allow-rollback resumes from it with a warning naming both.
TEST(ShoalctlRun, ResumingFromAnOlderCheckpointNeedsAllowRollback) {
  if (!HaveDataset()) GTEST_SKIP() << "dataset-fashion-mnist not installed";
  std::string dir = TempDir("rollback");
  ASSERT_EQ(RunCommand({kBin + "/shoalctl", "keygen", "--out", dir + "/keys"}, 30).exit_code, 0);
  auto run = [&](const std::vector<std::string>& extra) {
    std::vector<std::string> argv = {kBin + "/shoalctl", "run", kSpec, "--workers", "1", "--json",
                                     "--set", "model.layers=[784,32,10]", "--set", "training.evaluate=false",
                                     "--set", "training.max_steps=40", "--set", "checkpoint.dir=" + dir + "/ck",
                                     "--set", "checkpoint.every_steps=20",
                                     "--set", "checkpoint.sign_key=" + dir + "/keys/shoal.key",
                                     "--set", "checkpoint.trust=[" + dir + "/keys/shoal.pub]"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return RunCommand(argv, 240, dir);
  };
  auto first = run({});
  ASSERT_EQ(first.exit_code, 0) << first.err;
  const std::string job = OnlyJobDir(dir + "/ck");
  ASSERT_TRUE(std::filesystem::exists(job + "/step-20") && std::filesystem::exists(job + "/step-40")) << job;

  auto older = run({"--resume", job + "/step-20"});
  EXPECT_EQ(older.exit_code, 2) << older.err;
  EXPECT_NE(older.err.find("step 20 is older than step 40"), std::string::npos) << older.err;
  EXPECT_NE(older.err.find("--allow-rollback"), std::string::npos) << older.err;
  EXPECT_EQ(older.err.find("worker["), std::string::npos) << "no worker should have started: " << older.err;

  ASSERT_TRUE(WriteFileAtomic(job + "/latest", "step-20\n").ok());
  auto turned_back = run({"--resume", job});
  EXPECT_EQ(turned_back.exit_code, 2) << turned_back.err;
  EXPECT_NE(turned_back.err.find("latest is turned back"), std::string::npos) << turned_back.err;

  // With step-40 gone from the disk, the coordinator's registry still knows it.
  std::filesystem::remove_all(job + "/step-40");
  auto registry = run({"--resume", job + "/step-20"});
  EXPECT_EQ(registry.exit_code, 2) << registry.err;
  EXPECT_NE(registry.err.find("the coordinator's registry records a checkpoint"), std::string::npos) << registry.err;
  EXPECT_NE(registry.err.find("step 20 is older than step 40"), std::string::npos) << registry.err;

  auto allowed = run({"--resume", job + "/step-20", "--allow-rollback"});
  ASSERT_EQ(allowed.exit_code, 0) << allowed.err;
  EXPECT_NE(allowed.err.find("loading step 20 although step 40 is newer"), std::string::npos) << allowed.err;
  auto summary = nlohmann::json::parse(allowed.out, nullptr, false);
  ASSERT_FALSE(summary.is_discarded()) << allowed.out;
  EXPECT_EQ(summary["resumed_from_step"], 20) << allowed.out;
}

// ---- bad input: a clear error and a non-zero exit, never a crash --------------------

std::string WriteSpec(const std::string& dir, const std::string& text) {
  std::string p = dir + "/spec.yaml";
  FILE* f = std::fopen(p.c_str(), "w");
  std::fputs(text.c_str(), f);
  std::fclose(f);
  return p;
}

TEST(BadInput, MalformedYamlUnknownFieldNegativeBatch) {
  std::string dir = TempDir("bad");
  struct Case {
    std::string yaml, must_mention;
  } cases[] = {
      {"name: x\ntraining: {epochs: 2\n", "line"},
      {"name: x\ntrainng:\n  epochs: 2\n", "trainng"},
      {"name: x\ntraining:\n  batch_per_worker: -4\n", "training.batch_per_worker"},
  };
  for (const auto& c : cases) {
    std::string spec = WriteSpec(dir, c.yaml);
    for (const char* cmd : {"validate", "run"}) {
      auto r = RunCommand({kBin + "/shoalctl", cmd, spec}, 30, dir);
      EXPECT_EQ(r.exit_code, 2) << cmd << " " << c.yaml << r.err;
      EXPECT_NE(r.err.find(c.must_mention), std::string::npos) << r.err;
    }
  }
  auto neg = RunCommand({kBin + "/shoalctl", "validate", WriteSpec(dir, "training:\n  batch_per_worker: -4\n")}, 30);
  EXPECT_NE(neg.err.find("line 2"), std::string::npos) << neg.err;
}

TEST(BadInput, MissingDatasetFolder) {
  std::string dir = TempDir("nodata");
  auto r = RunCommand({kBin + "/shoalctl", "run", kSpec, "--set", "data.dataset=/nonexistent/fmnist"}, 30, dir);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("/nonexistent/fmnist"), std::string::npos) << r.err;
}

// The spec decides which filters admitted the data: a job whose data.filters differ from
// the scan's is refused before any worker starts, naming the difference and the command;
// --rescan scans again with the spec's filters and the job trains on what they admit.
// A worker started by hand refuses the same job itself. On a copy of the dataset, so the
// shared scan is not rewritten under other tests.
TEST(BadInput, AJobWhoseFiltersDifferFromTheScanIsRefusedOrRescanned) {
  const std::string data = std::string(SHOAL_SOURCE_DIR) + "/data/fashion-mnist";
  if (!std::filesystem::exists(data + "/scan/report.json")) GTEST_SKIP() << "no scanned dataset (scripts/prepare-data.sh)";
  std::string dir = TempDir("filters-differ");
  std::filesystem::copy(data, dir + "/data", std::filesystem::copy_options::recursive);
  const std::vector<std::string> common = {"--set", "data.dataset=" + dir + "/data", "--set",
                                           "data.filters.label_consistency.enabled=false"};
  std::vector<std::string> argv = {kBin + "/shoalctl", "run", kSpec, "--workers", "1", "--json", "--set",
                                   "training.max_steps=20", "--set", "training.evaluate=false"};
  argv.insert(argv.end(), common.begin(), common.end());
  auto refused = RunCommand(argv, 60, dir);
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("data.filters.label_consistency"), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("shoalctl data scan"), std::string::npos) << refused.err;

  // A worker given the same job by hand refuses it too, never training on the old scan.
  CoordinatorProcess coord(dir);
  std::vector<std::string> submit = {kBin + "/shoalctl", "submit", kSpec, "--coordinator", coord.endpoint(),
                                     "--job-id", "f", "--set", "workers.initial=1"};
  submit.insert(submit.end(), common.begin(), common.end());
  ASSERT_EQ(RunCommand(submit, 20).exit_code, 0);
  auto worker = RunCommand({kBin + "/shoal-worker", "--coordinator", coord.endpoint(), "--job", "f"}, 60);
  EXPECT_NE(worker.exit_code, 0);
  EXPECT_NE((worker.out + worker.err).find("data.filters.label_consistency"), std::string::npos) << worker.err;

  argv.push_back("--rescan");
  auto rescanned = RunCommand(argv, 120, dir);
  ASSERT_EQ(rescanned.exit_code, 0) << rescanned.err;
  EXPECT_EQ(nlohmann::json::parse(rescanned.out, nullptr, false)["state"], "completed") << rescanned.out;
  const std::string report = ReadText(dir + "/data/scan/report.json");
  EXPECT_NE(report.find("\"label\""), std::string::npos);
  auto j = nlohmann::json::parse(report, nullptr, false);
  for (auto& f : j["filters"])
    if (f["name"] == "label") EXPECT_FALSE(f["enabled"].get<bool>()) << report;
}

// A --resume path that names no checkpoint is bad input, refused before any worker starts.
TEST(BadInput, ResumeFromAPathWithNoCheckpoint) {
  std::string dir = TempDir("noresume");
  auto r = RunCommand({kBin + "/shoalctl", "run", kSpec, "--resume", dir + "/missing"}, 30, dir);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--resume " + dir + "/missing"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("worker["), std::string::npos) << "no worker should have started: " << r.err;
}

TEST(BadInput, UnreachableCoordinator) {
  auto r = RunCommand({kBin + "/shoalctl", "status", "--coordinator", "tcp://127.0.0.1:1", "--timeout", "0.5"}, 30);
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.err.find("did not answer"), std::string::npos) << r.err;
  auto s = RunCommand({kBin + "/shoalctl", "submit", kSpec, "--coordinator", "tcp://127.0.0.1:1", "--timeout", "0.5"}, 30);
  EXPECT_EQ(s.exit_code, 3);
}

TEST(BadInput, WorkerPointedAtUnknownJob) {
  std::string dir = TempDir("unknownjob");
  CoordinatorProcess coord(dir);
  ASSERT_FALSE(coord.endpoint().empty());
  auto r = RunCommand({kBin + "/shoal-worker", "--coordinator", coord.endpoint(), "--job", "no-such-job"}, 30);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown job 'no-such-job'"), std::string::npos) << r.err;
}

TEST(BadInput, HostileBytesDoNotCrashTheCoordinator) {
  std::string dir = TempDir("hostile");
  CoordinatorProcess coord(dir);
  ASSERT_FALSE(coord.endpoint().empty());
  // Raw TCP garbage at the ZeroMQ port: the ZMTP handshake fails, the peer is dropped.
  std::string port = coord.endpoint().substr(coord.endpoint().rfind(':') + 1);
  RunCommand({"bash", "-c", "head -c 100000 /dev/urandom > /dev/tcp/127.0.0.1/" + port}, 10);
  auto st = RunCommand({kBin + "/shoalctl", "status", "--coordinator", coord.endpoint()}, 10);
  EXPECT_EQ(st.exit_code, 0) << "coordinator survived: " << st.err << coord.log();
}

}  // namespace
}  // namespace shoal::testing
