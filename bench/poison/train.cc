// Minibatch SGD over a seeded permutation per epoch (the loader's EpochPermutation), the
// mean loss per batch (grad_scale = 1/n), cosine learning-rate decay to 0: the decay
// makes the final model, and so the comparison between runs, far less noisy than a
// constant rate (which left run-to-run swings of half a point).
#include "bench/poison/train.h"

#include <algorithm>
#include <cmath>

#include "common/clock.h"
#include "datapipe/loader.h"
#include "datapipe/partition.h"
#include "worker/models/mlp.h"
#include "worker/optim/lr_schedule.h"
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

std::vector<double> AttackSuccess(Model& model, const std::vector<EvalSet>& attacks, int dim) {
  std::vector<double> out;
  for (const EvalSet& a : attacks) out.push_back(Accuracy(model, a, dim));
  return out;
}

struct Trainer {
  std::unique_ptr<Model> model;
  std::unique_ptr<SgdMomentum> opt;
};
StatusOr<Trainer> MakeTrainer(int dim, const TrainConfig& cfg) {
  if (cfg.layers.empty() || cfg.layers.front() != dim)
    return InvalidArgument("the first layer width must equal the feature count");
  Trainer t;
  ASSIGN_OR_RETURN(t.model, MakeMlp(cfg.layers, cfg.seed));
  SgdOptions so;
  so.lr = cfg.lr;
  so.momentum = cfg.momentum;
  RETURN_IF_ERROR(ValidateSgdOptions(so));
  t.opt = std::make_unique<SgdMomentum>(so, t.model->num_parameters());
  return t;
}
}  // namespace

StatusOr<TrainResult> TrainFromDataset(const std::string& dataset_dir, const TrustStore& trust, const EvalSet& test,
                                       const std::vector<EvalSet>& attacks, const TrainConfig& cfg) {
  LoaderOptions lo;
  lo.trust.trust = trust;
  lo.require_scan = true;
  lo.global_batch = cfg.batch;
  lo.seed = cfg.seed;
  lo.prefetch_batches = 4;
  ASSIGN_OR_RETURN(auto loader, Loader::Open(dataset_dir, lo));
  ASSIGN_OR_RETURN(Trainer tr, MakeTrainer(loader->dim(), cfg));
  Stopwatch clock;
  TrainResult res;
  res.train_records = loader->size();
  const int64_t steps = loader->steps_per_epoch() * cfg.epochs;
  auto lr_at = [&](int64_t step) {
    return static_cast<float>(LearningRateAt(step, steps, cfg.lr, 0, "cosine", 0.0));
  };
  for (int64_t s = 0; s < steps && !res.diverged; ++s) {
    Stopwatch step;
    ASSIGN_OR_RETURN(LoaderBatch b, loader->Next());
    double loss = tr.model->ForwardBackward(Batch{b.x.data(), b.y.data(), b.n}, 1.0f / std::max(b.n, 1), nullptr);
    ++res.steps;
    if (!std::isfinite(loss)) {
      res.diverged = true;
      res.diverged_at_step = res.steps;
    } else {
      tr.opt->Step(tr.model->params(), lr_at(s));
    }
    res.step_seconds += step.Seconds();
  }
  res.loader_wait_seconds = loader->stats().wait_seconds;
  res.test_accuracy = Accuracy(*tr.model, test, loader->dim());
  res.attack_success = AttackSuccess(*tr.model, attacks, loader->dim());
  res.seconds = clock.Seconds();
  return res;
}

StatusOr<TrainResult> TrainAndEvaluate(const float* x, const int32_t* y, int dim, const std::vector<int64_t>& use,
                                       const EvalSet& test, const std::vector<EvalSet>& attacks,
                                       const TrainConfig& cfg) {
  ASSIGN_OR_RETURN(Trainer tr, MakeTrainer(dim, cfg));
  Model* model = tr.model.get();
  Stopwatch clock;
  TrainResult res;
  res.train_records = static_cast<int64_t>(use.size());
  const int64_t n = res.train_records;
  const int64_t total_steps = StepsPerEpoch(n, cfg.batch) * cfg.epochs;
  std::vector<float> bx(static_cast<size_t>(cfg.batch) * dim);
  std::vector<int32_t> by(cfg.batch);
  for (int epoch = 0; epoch < cfg.epochs && !res.diverged; ++epoch) {
    std::vector<uint32_t> perm = EpochPermutation(static_cast<uint64_t>(n), cfg.seed, epoch);
    for (int64_t cursor = 0; cursor < n; cursor += cfg.batch) {
      Stopwatch step;
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
      tr.opt->Step(model->params(),
                   static_cast<float>(LearningRateAt(res.steps - 1, total_steps, cfg.lr, 0, "cosine", 0.0)));
      res.step_seconds += step.Seconds();
    }
  }
  res.test_accuracy = Accuracy(*model, test, dim);
  res.attack_success = AttackSuccess(*model, attacks, dim);
  res.seconds = clock.Seconds();
  return res;
}

}  // namespace shoal::poison
