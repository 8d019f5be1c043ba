// End-to-end check of what poisoning does to a model: trains the CPU MLP (worker/models)
// with SGD + momentum (worker/optim) on chosen records, then measures clean test accuracy
// and every backdoor's attack success rate.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/signing.h"
#include "common/status.h"

namespace shoal::poison {

struct TrainConfig {
  std::vector<int> layers = {784, 256, 128, 10};
  int epochs = 5;
  int batch = 128;
  float lr = 0.05f;             // cosine-decayed to 0 over the run
  float momentum = 0.9f;
  uint64_t seed = 7;
};

struct TrainResult {
  int64_t train_records = 0;
  int64_t steps = 0;
  double step_seconds = 0;         // total time of the training steps
  double loader_wait_seconds = 0;  // of which blocked on the loader (Loader runs only)
  bool diverged = false;       // a non-finite loss stopped training
  int64_t diverged_at_step = -1;
  double test_accuracy = 0;    // clean test set
  std::vector<double> seed_accuracy;  // averaged runs: each training seed's, in seed order
  // Per attack, in the order of the `attacks` sets: triggered test images of the classes
  // other than the attack's target predicted as the target.
  std::vector<double> attack_success;
  double seconds = 0;
};

struct EvalSet {
  const float* x = nullptr;
  const int32_t* y = nullptr;
  int64_t n = 0;
};

// Trains on rows `use` of (x, y) (dim features each), evaluates on `test`, and on each
// of `attacks` (the test images of an attack's non-target classes with its trigger,
// labelled with its target) to get that attack's success rate. A non-finite loss ends
// training early.
StatusOr<TrainResult> TrainAndEvaluate(const float* x, const int32_t* y, int dim, const std::vector<int64_t>& use,
                                       const EvalSet& test, const std::vector<EvalSet>& attacks,
                                       const TrainConfig& config);

// The same training, fed by the datapipe Loader (verified shards, admitted records
// only, prefetch thread) as the worker is: also measures how long steps wait on it.
StatusOr<TrainResult> TrainFromDataset(const std::string& dataset_dir, const TrustStore& trust, const EvalSet& test,
                                       const std::vector<EvalSet>& attacks, const TrainConfig& config);

}  // namespace shoal::poison
