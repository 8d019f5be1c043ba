// The training loop: global epoch order, global cursor, per-rank spans, gradient
// allreduce (sum of grad_scale = 1/global batch, i.e. the exact global-batch mean),
// SGD with momentum and a warm-up + cosine schedule, evaluation at epoch ends.
#include "worker/trainer.h"

#include <algorithm>
#include <cstring>

#include "common/clock.h"
#include "common/log.h"
#include "datapipe/partition.h"
#include "worker/optim/lr_schedule.h"
#include "worker/optim/sgd.h"

namespace shoal {

namespace {

// The gradients as one contiguous buffer when the model lays them out that way (the
// MLP does), so the whole gradient is one allreduce; otherwise one per tensor.
struct GradBuffers {
  std::vector<std::pair<float*, size_t>> spans;
};
GradBuffers CollectGrads(std::vector<ParamTensor>& params) {
  GradBuffers g;
  for (auto& p : params) {
    if (!g.spans.empty() && g.spans.back().first + g.spans.back().second == p.grad)
      g.spans.back().second += p.numel;
    else if (p.numel > 0)
      g.spans.emplace_back(p.grad, p.numel);
  }
  return g;
}

Status BroadcastParams(Model* model, Communicator* comm, const CollectiveOptions& opts) {
  for (auto& p : model->params())
    RETURN_IF_ERROR(comm->Broadcast(p.data, p.numel * sizeof(float), 0, opts));
  return OkStatus();
}

// Copies the span's records (positions in the epoch order) into contiguous buffers.
void GatherBatch(const InMemoryDataset& ds, const std::vector<uint32_t>& order, Span span, std::vector<float>& x,
                 std::vector<int32_t>& y) {
  size_t n = static_cast<size_t>(span.size());
  x.resize(n * ds.dim);
  y.resize(n);
  for (size_t i = 0; i < n; ++i) {
    uint32_t rec = order[span.begin + i];
    std::memcpy(&x[i * ds.dim], &ds.x[static_cast<size_t>(rec) * ds.dim], ds.dim * sizeof(float));
    y[i] = ds.y[rec];
  }
}

}  // namespace

StatusOr<EvalResult> EvaluateDistributed(Model* model, const InMemoryDataset& test, Communicator* comm,
                                         const CollectiveOptions& opts) {
  Span mine = RankSpan(0, test.n, test.n, comm->rank(), comm->size());
  EvalResult local;
  constexpr int64_t kChunk = 1000;
  for (int64_t b = mine.begin; b < mine.end; b += kChunk) {
    int n = static_cast<int>(std::min(kChunk, mine.end - b));
    EvalResult r = model->Evaluate(Batch{&test.x[b * test.dim], &test.y[b], n});
    local.correct += r.correct;
    local.count += r.count;
    local.loss_sum += r.loss_sum;
  }
  // Counts up to 2^24 are exact in f32; the test sets here are far smaller.
  float sums[3] = {static_cast<float>(local.correct), static_cast<float>(local.count), static_cast<float>(local.loss_sum)};
  RETURN_IF_ERROR(comm->AllReduce(sums, 3, DType::kF32, ReduceOp::kSum, opts));
  return EvalResult{static_cast<int64_t>(sums[0]), static_cast<int64_t>(sums[1]), sums[2]};
}

StatusOr<JobResult> Train(const TrainerInputs& in, Communicator* comm, Model* model, const TrainerHooks& hooks) {
  const JobSpec& spec = *in.spec;
  const TrainingSpec& t = spec.training();
  const InMemoryDataset& train = *in.train;
  const int rank = comm->rank(), world = comm->size();
  CollectiveOptions opts;
  opts.timeout = std::chrono::milliseconds(static_cast<int64_t>(spec.collectives().timeout_s() * 1000));

  if (train.dim != spec.model().layers(0))
    return InvalidArgument("model.layers[0] is " + std::to_string(spec.model().layers(0)) + " but the dataset has " +
                           std::to_string(train.dim) + " features per record");
  if (train.num_classes > spec.model().layers(spec.model().layers_size() - 1))
    return InvalidArgument("the dataset has " + std::to_string(train.num_classes) + " classes but the model's last layer has " +
                           std::to_string(spec.model().layers(spec.model().layers_size() - 1)));

  // Every rank starts from rank 0's parameters (identical seeds make this a no-op
  // today; joiners of later generations rely on the same broadcast).
  RETURN_IF_ERROR(BroadcastParams(model, comm, opts).WithContext("initial parameter broadcast"));

  const int64_t global_batch = int64_t{t.batch_per_worker()} * world;
  const int64_t steps_per_epoch = StepsPerEpoch(train.n, global_batch);
  int64_t total_steps = steps_per_epoch * t.epochs();
  if (t.max_steps() > 0) total_steps = std::min(total_steps, t.max_steps());

  SgdOptions sgd_opts;
  sgd_opts.lr = static_cast<float>(t.learning_rate());
  sgd_opts.momentum = static_cast<float>(t.momentum());
  sgd_opts.weight_decay = static_cast<float>(t.weight_decay());
  SgdMomentum optimizer(sgd_opts, model->num_parameters());
  GradBuffers grads = CollectGrads(model->params());

  JobResult result;
  result.set_backend(comm->backend());
  result.set_world_size(world);
  WorkerMetrics m;
  m.set_total_steps(total_steps);
  m.set_test_accuracy(-1);

  std::vector<float> bx;
  std::vector<int32_t> by;
  Stopwatch wall;
  double comm_total = 0, compute_total = 0, sgemm_total = 0, loader_total = 0;
  int64_t samples_total = 0;
  // Windowed figures for the heartbeat, reset every kWindow steps.
  constexpr int kWindow = 20;
  double win_step = 0, win_comm = 0, win_compute = 0, win_sgemm = 0, win_loader = 0, win_loss = 0;
  int64_t win_samples = 0, win_local_samples = 0;
  int win_steps = 0;

  int64_t step = 0;
  for (int epoch = 0; epoch < t.epochs() && step < total_steps; ++epoch) {
    std::vector<uint32_t> order = EpochPermutation(train.n, t.seed(), epoch);
    for (int64_t cursor = 0; cursor < train.n && step < total_steps; ++step) {
      if (hooks.should_stop && hooks.should_stop()) return Cancelled("training stopped at step " + std::to_string(step));
      Stopwatch step_clock;
      const int64_t g = StepSamples(cursor, train.n, global_batch);
      Span span = RankSpan(cursor, train.n, global_batch, rank, world);
      GatherBatch(train, order, span, bx, by);
      double loader = step_clock.Seconds();

      Stopwatch compute_clock;
      double loss_sum = model->ForwardBackward(Batch{bx.data(), by.data(), static_cast<int>(span.size())},
                                               1.0f / static_cast<float>(g), nullptr);
      double compute = compute_clock.Seconds();
      double sgemm = model->TakeSgemmSeconds();

      Stopwatch comm_clock;
      for (auto& [ptr, count] : grads.spans) {
        Status s = comm->AllReduce(ptr, count, DType::kF32, ReduceOp::kSum, opts);
        if (!s.ok()) return s.WithContext("gradient allreduce at step " + std::to_string(step));
      }
      double comm_s = comm_clock.Seconds();

      double lr = LearningRateAt(step, total_steps, t.learning_rate(), t.warmup_steps(), t.schedule(), t.min_lr_ratio());
      optimizer.Step(model->params(), static_cast<float>(lr));
      cursor += g;

      double step_s = step_clock.Seconds();
      comm_total += comm_s;
      compute_total += compute;
      sgemm_total += sgemm;
      loader_total += loader;
      samples_total += g;
      win_step += step_s;
      win_comm += comm_s;
      win_compute += compute;
      win_sgemm += sgemm;
      win_loader += loader;
      win_loss += loss_sum;
      win_samples += g;
      win_local_samples += span.size();
      ++win_steps;

      m.set_step(step + 1);
      m.set_epoch(epoch);
      m.set_cursor(cursor);
      m.set_bytes_sent(comm->bytes_sent());
      if (win_steps == kWindow || cursor >= train.n || step + 1 == total_steps) {
        m.set_loss(win_local_samples ? win_loss / win_local_samples : 0);
        m.set_samples_per_second(win_step > 0 ? win_samples / win_step : 0);
        m.set_step_seconds(win_step / win_steps);
        m.set_comm_seconds(win_comm / win_steps);
        m.set_compute_seconds(win_compute / win_steps);
        m.set_sgemm_seconds(win_sgemm / win_steps);
        m.set_loader_wait_seconds(win_loader / win_steps);
        win_step = win_comm = win_compute = win_sgemm = win_loader = win_loss = 0;
        win_samples = win_local_samples = 0;
        win_steps = 0;
      }
      if (hooks.on_metrics) hooks.on_metrics(m);
    }
    bool epoch_done = step % steps_per_epoch == 0 || step == total_steps;
    if (t.evaluate() && in.test && epoch_done) {
      ASSIGN_OR_RETURN(EvalResult ev, EvaluateDistributed(model, *in.test, comm, opts));
      double acc = ev.count ? static_cast<double>(ev.correct) / ev.count : 0;
      result.add_epoch_test_accuracy(acc);
      m.set_test_accuracy(acc);
      if (hooks.on_metrics) hooks.on_metrics(m);
      if (hooks.on_epoch) hooks.on_epoch(epoch, acc);
    }
    result.set_epochs(epoch + 1);
  }

  double wall_s = wall.Seconds();
  result.set_steps(step);
  result.set_final_test_accuracy(m.test_accuracy());
  result.set_final_loss(m.loss());
  result.set_wall_seconds(wall_s);
  result.set_samples_per_second(wall_s > 0 ? samples_total / wall_s : 0);
  result.set_bytes_sent_per_worker(comm->bytes_sent());
  result.set_comm_seconds(comm_total);
  result.set_compute_seconds(compute_total);
  result.set_sgemm_seconds(sgemm_total);
  result.set_loader_wait_seconds(loader_total);
  return result;
}

}  // namespace shoal
