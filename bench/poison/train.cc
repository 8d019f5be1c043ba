// Minibatch SGD over a seeded permutation per epoch (the loader's EpochPermutation), the
// mean loss per batch (grad_scale = 1/n), constant learning rate: simple on purpose, so
// differences between runs come from the data, not the schedule.
#include "bench/poison/train.h"

#include <algorithm>
#include <cmath>

#include "common/clock.h"
#include "datapipe/partition.h"
#include "worker/models/mlp.h"
#include "worker/optim/sgd.h"

namespace shoal::poison {

namespace {
double Accuracy(Model& model, const EvalSet& set, int dim) {
  if (set.n == 0) return 0;
  int64_t correct = 0;
  constexpr int64_t kChunk = 1000;
  for (int64_t b = 0; b < set.n; b += kChunk) {
    int n = static_cast<int>(std::min(kChunk, set.n - b));
    EvalResult r = model.Evaluate(Batch{set.x + b * dim, set.y + b, n});
    correct += r.correct;
  }
  return static_cast<double>(correct) / set.n;
}
}  // namespace

StatusOr<TrainResult> TrainAndEvaluate(const float* x, const int32_t* y, int dim, const std::vector<int64_t>& use,
                                       const EvalSet& test, const EvalSet& patched, const TrainConfig& cfg) {
  if (cfg.layers.empty() || cfg.layers.front() != dim)
    return InvalidArgument("the first layer width must equal the feature count");
  ASSIGN_OR_RETURN(std::unique_ptr<Model> model, MakeMlp(cfg.layers, cfg.seed));
  SgdOptions so;
  so.lr = cfg.lr;
  so.momentum = cfg.momentum;
  RETURN_IF_ERROR(ValidateSgdOptions(so));
  SgdMomentum opt(so, model->num_parameters());
  Stopwatch clock;
  TrainResult res;
  res.train_records = static_cast<int64_t>(use.size());
  const int64_t n = res.train_records;
  std::vector<float> bx(static_cast<size_t>(cfg.batch) * dim);
  std::vector<int32_t> by(cfg.batch);
  for (int epoch = 0; epoch < cfg.epochs && !res.diverged; ++epoch) {
    std::vector<uint32_t> perm = EpochPermutation(static_cast<uint64_t>(n), cfg.seed, epoch);
    for (int64_t cursor = 0; cursor < n; cursor += cfg.batch) {
      int m = static_cast<int>(std::min<int64_t>(cfg.batch, n - cursor));
      for (int i = 0; i < m; ++i) {
        int64_t r = use[perm[cursor + i]];
        std::copy(x + r * dim, x + (r + 1) * dim, bx.data() + static_cast<size_t>(i) * dim);
        by[i] = y[r];
      }
      double loss = model->ForwardBackward(Batch{bx.data(), by.data(), m}, 1.0f / m, nullptr);
      ++res.steps;
      if (!std::isfinite(loss)) {
        res.diverged = true;
        res.diverged_at_step = res.steps;
        break;
      }
      opt.Step(model->params(), cfg.lr);
    }
  }
  res.test_accuracy = Accuracy(*model, test, dim);
  res.attack_success = Accuracy(*model, patched, dim);
  res.seconds = clock.Seconds();
  return res;
}

}  // namespace shoal::poison
