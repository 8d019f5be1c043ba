// The data-parallel training loop of one rank, independent of how the process was
// started: give it a communicator, a model and the data, and it trains the spec's
// epochs. Tests run several trainers as threads; shoal-worker runs one per process.
#pragma once

#include <atomic>
#include <functional>
#include <vector>

#include "checkpoint/async_writer.h"
#include "collectives/communicator.h"
#include "control.pb.h"
#include "datapipe/idx.h"
#include "datapipe/loader.h"
#include "jobspec.pb.h"
#include "worker/models/model.h"

namespace shoal {

struct TrainerHooks {
  // Called after every step with cumulative and windowed figures (heartbeat source).
  std::function<void(const WorkerMetrics&)> on_metrics;
  // Called at each epoch end with the reduced test accuracy (all ranks).
  std::function<void(int epoch, double accuracy)> on_epoch;
  // Polled once per step: a true answer aborts training with kCancelled.
  std::function<bool()> should_stop;
};

struct TrainerInputs {
  const JobSpec* spec = nullptr;
  const InMemoryDataset* train = nullptr;   // in-memory records (IDX input), or
  Loader* loader = nullptr;                  // verified shards, admitted records only, prefetched
  const InMemoryDataset* test = nullptr;     // may be null: no evaluation
  const TrainerSnapshot* resume = nullptr;   // verified checkpoint state to start from
  AsyncCheckpointer* checkpointer = nullptr; // saves every checkpoint.every_steps and at the end
  std::string job_id;
};

// Trains on `comm`'s world. Rank 0's result is the job's result; every rank returns one.
StatusOr<JobResult> Train(const TrainerInputs& in, Communicator* comm, Model* model, const TrainerHooks& hooks);

// Test accuracy of `model` over `test`, each rank evaluating its slice, counts reduced.
StatusOr<EvalResult> EvaluateDistributed(Model* model, const InMemoryDataset& test, Communicator* comm,
                                         const CollectiveOptions& opts);

}  // namespace shoal
