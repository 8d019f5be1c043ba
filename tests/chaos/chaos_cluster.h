// The chaos harness's cluster: a coordinator on host 0 and one worker on each of hosts
// 1..N, over network namespaces (tests/netns_cluster.h) or, where those cannot be made,
// loopback; and the fault primitives the driver combines: kill -9 (reaped and reported
// as a launcher does), signals, coordinator kill and restart, partitions, links down,
// a slow link (the workers' own link emulation, switched by a control file).
#pragma once

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "tests/cluster_util.h"
#include "tests/netns_cluster.h"

namespace shoal::testing {

struct ChaosOptions {
  int workers = 4;
  bool netns = true;
  bool report_exits = true;   // the launcher tells the coordinator of each exit (shoalctl run does)
  double heartbeat_timeout_s = 2;
  int epochs = 3;
  int checkpoint_every = 50;
  // harness: this cluster starts, reaps, reports and replaces the workers itself.
  // shoalctl-run: each job is a `shoalctl run` (on the coordinator's host, over its
  // loopback), whose own restarts replace the workers this harness kills; its embedded
  // coordinator is not killed. mixed: every fourth job is a shoalctl run.
  std::string launcher = "mixed";
};

class ChaosCluster {
 public:
  // kFailedPrecondition (the reason) when namespaces were asked for and cannot be made.
  static StatusOr<std::unique_ptr<ChaosCluster>> Create(const ChaosOptions& o);
  ~ChaosCluster();

  // A new job of the example spec (signed checkpoints every checkpoint_every steps);
  // its workers start on every worker host.
  bool StartJob(const std::string& job, bool through_shoalctl_run);
  const std::string& job() const { return job_; }
  std::string CheckpointRoot() const { return dir_ + "/ck/" + job_; }
  const std::string& dir() const { return dir_; }
  const std::string& endpoint() const { return shoalctl_run() ? run_endpoint_ : coord_->endpoint(); }
  bool shoalctl_run() const { return run_mode_; }  // the current job's launcher
  // shoalctl-run: waits for the run to exit, then serves its coordinator's state again
  // (for the ledger and checkpoint checks); the run's summary, or an empty object.
  nlohmann::json EndRun(double timeout_s);
  std::string TrustKey() const { return dir_ + "/keys/ck.pub"; }

  // Reaps exited workers (reporting them) and, while the job runs, starts a
  // replacement on each worker host left without one (a node agent's restart). Returns
  // the pids it started.
  std::vector<int> Replenish();
  void WaitWorkersGone(double timeout_s);  // after the job ended: every worker exited

  int RandomWorker();                     // the pid of a live worker; -1 if none
  int RankZero();                         // rank 0's pid (a random worker if unknown)
  int HostOf(int pid) const;
  // True once the worker `pid` holds a rank in the job's current generation.
  bool Placed(int pid);
  void Kill9(int pid);                    // kill -9, reaped at once and reported
  void Signal(int pid, int sig);

  void KillCoordinator();
  void RestartCoordinator();

  bool netns() const { return static_cast<bool>(net_); }
  Status Partition(const std::vector<int>& hosts);
  Status Heal();
  Status SetLinkUp(int host, bool up);
  void SlowLink(int host, double mbps);   // 0: back to full speed

  nlohmann::json JobStatus();
  int64_t Step();                         // rank 0's committed step; -1 unknown
  std::string State();                    // the job's state ("" unknown)
  // True once the job commits a step past `after` (or ends) within `timeout_s`.
  bool Progress(int64_t after, double timeout_s);
  // Waits until the job trains at full size with no change pending.
  void Settle(double timeout_s);
  std::mt19937_64& rng() { return rng_; }

 private:
  explicit ChaosCluster(const ChaosOptions& o);
  int Start(int host);

  ChaosOptions opt_;
  std::string dir_;
  std::unique_ptr<NetnsCluster> net_;
  std::unique_ptr<CoordinatorProcess> coord_;
  std::string job_;
  std::mt19937_64 rng_;
  int started_ = 0;
  struct Worker {
    std::unique_ptr<BackgroundProcess> proc;
    int host = 0;
  };
  std::map<int, Worker> live_;  // by pid (harness)
  std::unique_ptr<BackgroundProcess> run_;       // shoalctl-run: the current run
  std::unique_ptr<BackgroundProcess> replayed_;  // shoalctl-run: its state served after it
  std::string run_dir_, run_endpoint_;
  bool run_mode_ = false;
  std::vector<int> RunWorkers();                 // shoalctl-run: live members' pids
};

}  // namespace shoal::testing
