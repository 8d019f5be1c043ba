// The data-parallel training loop of one rank, independent of how the process was
// started. A Trainer owns everything that must outlive a generation (model reference,
// optimizer, codec, data position, ledger, cumulative figures); RunGeneration trains
// on one generation's communicator until the job is done, the members agree that the
// generation ends (a planned change), or a collective fails. Tests run several
// trainers as threads; shoal-worker runs one per process across generations.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "checkpoint/async_writer.h"
#include "collectives/communicator.h"
#include "collectives/compression/codec.h"
#include "control.pb.h"
#include "datapipe/idx.h"
#include "datapipe/loader.h"
#include "jobspec.pb.h"
#include "worker/models/model.h"
#include "worker/optim/sgd.h"
#include "worker/trace.h"
#include "worker/trainer_state.h"

namespace shoal {

struct TrainerHooks {
  // Called after every step with cumulative and windowed figures (heartbeat source).
  std::function<void(const WorkerMetrics&)> on_metrics;
  // Called after every committed step with the ledger so far (rank 0 reports it).
  std::function<void(const Ledger&)> on_ledger;
  // Called at each epoch end with the reduced test accuracy (all ranks).
  std::function<void(int epoch, double accuracy)> on_epoch;
  // Polled once per step: a true answer aborts training with kCancelled.
  std::function<bool()> should_stop;
  // Polled at each boundary exchange: true when this member knows of a planned
  // membership change (a heartbeat said so, or it is leaving). The step whose
  // exchange carries a true from any rank is the generation's last.
  std::function<bool()> boundary_requested;
};

struct TrainerInputs {
  const JobSpec* spec = nullptr;
  const InMemoryDataset* train = nullptr;   // in-memory records (IDX input), or
  Loader* loader = nullptr;                  // verified shards, admitted records only, prefetched
  const InMemoryDataset* test = nullptr;     // may be null: no evaluation
  const TrainerSnapshot* resume = nullptr;   // Train() only: verified checkpoint state to start from
  AsyncCheckpointer* checkpointer = nullptr; // Train() only: saves every checkpoint.every_steps and at the end
  std::string job_id;
  // The timeline trace of the spec's `trace` range (null: the job traces nothing).
  TraceRecorder* trace = nullptr;
};

enum class GenerationEnd {
  kCompleted,   // every epoch (or max_steps) trained; result is the job's (rank 0)
  kBoundary,    // the members agreed that this generation ends after the last step
  kCommFailed,  // a collective failed (a peer died, the communicator was aborted)
};

struct GenerationOutcome {
  GenerationEnd end = GenerationEnd::kCompleted;
  Status error;      // kCommFailed: what failed
  JobResult result;  // kCompleted
};

class Trainer {
 public:
  // Builds the optimizer and codec for `model` (which must outlive the trainer) and
  // checks the data against the model's shapes. The position starts at step 0.
  static StatusOr<std::unique_ptr<Trainer>> Create(const TrainerInputs& in, Model* model);

  // Applies a verified checkpoint. The codec's per-rank state is taken only at the
  // world size it was saved at (see RestoreSnapshot). `history`, when given, is the
  // job's ledger up to the checkpoint's step, which the trainer then continues; it is
  // refused unless it ends exactly there.
  Status Restore(const TrainerSnapshot& snap, int world, int rank, const Ledger* history = nullptr);

  // State sync after a regroup: every rank takes rank `source`'s parameters, optimizer
  // state, data position, reference batch and ledger. Codec state is reset on every
  // rank (docs/ARCHITECTURE.md, "Codec state across generations").
  Status SyncFrom(Communicator* comm, int source);

  // Trains on comm's world (the generation `generation`) from the current position.
  // Collective failures come back as kCommFailed with the error; a stop request as
  // kCancelled; anything else (bad data, a bug) as an error.
  StatusOr<GenerationOutcome> RunGeneration(Communicator* comm, int64_t generation, AsyncCheckpointer* checkpointer,
                                            const TrainerHooks& hooks);

  const TrainingPosition& position() const { return pos_; }
  // The ledger so far (a copy: the training thread extends it every step).
  Ledger ledger() const;
  // The ledger of the steps before `step`, from any thread (the checkpoint writer
  // registers a checkpoint with the history it ends).
  Ledger LedgerBeforeStep(int64_t step) const;
  // Global batch of a step (the epoch's last may be smaller) at world size `world`.
  int64_t GlobalBatch(int world) const;
  // Accuracies of the epochs evaluated so far (carried to joiners by SyncFrom).
  const std::vector<double>& epoch_accuracy() const { return epoch_accuracy_; }
  // Mean seconds of a step over the last window (0 before the first).
  double mean_step_seconds() const { return mean_step_s_; }

 private:
  Trainer() = default;
  void AppendLedger(int64_t step, int64_t epoch, int64_t cursor, int64_t samples, int64_t global_batch,
                    int64_t generation, int world);

  TrainerInputs in_;
  Model* model_ = nullptr;
  int64_t n_ = 0;  // records an epoch runs over
  std::unique_ptr<GradientCodec> codec_;
  std::unique_ptr<SgdMomentum> optimizer_;
  TrainingPosition pos_;
  mutable std::mutex ledger_mu_;  // guards ledger_ against LedgerBeforeStep's readers
  // The world size whose batch_per_worker x world is the global batch (the first
  // generation's), so that with training.elastic_batch "global" a change of members
  // changes nothing in the mathematics.
  int batch_world_ = 0;
  Ledger ledger_;
  double mean_step_s_ = 0;
  int64_t resumed_from_step_ = 0;
  // Cumulative over generations, for the job's result.
  JobResult totals_;
  double wall_start_ = 0;
  int64_t samples_total_ = 0, saves_ = 0;
  void RecordAccuracy(int64_t epoch, double acc, WorkerMetrics& m, const TrainerHooks& hooks);

  std::vector<double> epoch_accuracy_;
  // Epochs whose evaluation is done (0..epochs): a generation that starts at an epoch's
  // end the previous one did not get to evaluate (a failure during the evaluation)
  // evaluates it first.
  int64_t evaluated_epochs_ = 0;
  double last_accuracy_ = -1, last_loss_ = 0;
  int64_t bytes_sent_before_ = 0;  // over earlier generations' communicators
  int64_t grad_bytes_before_ = 0, uncompressed_before_ = 0;
  double codec_seconds_before_ = 0;
};

// One generation from start to end, as shoal-worker ran before elasticity and as the
// tests use it: Create, Restore from in.resume (or every rank takes rank 0's state),
// RunGeneration. A boundary or a collective failure is an error here.
StatusOr<JobResult> Train(const TrainerInputs& in, Communicator* comm, Model* model, const TrainerHooks& hooks);

// Test accuracy of `model` over `test`, each rank evaluating its slice, counts reduced.
StatusOr<EvalResult> EvaluateDistributed(Model* model, const InMemoryDataset& test, Communicator* comm,
                                         const CollectiveOptions& opts);

}  // namespace shoal
