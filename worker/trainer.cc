// The training loop: global epoch order, global cursor, per-rank spans, gradients
// reduced in fusion buckets while backward goes on (sum of grad_scale = 1/global batch,
// i.e. the exact global-batch mean), SGD with momentum and a warm-up + cosine schedule,
// evaluation at epoch ends, asynchronous checkpoints, exact resume.
#include "worker/trainer.h"

#include <algorithm>
#include <cstring>

#include "collectives/reducer.h"
#include "common/clock.h"
#include "common/log.h"
#include "datapipe/partition.h"
#include "worker/optim/lr_schedule.h"
#include "worker/optim/sgd.h"
#include "worker/trainer_state.h"

namespace shoal {

namespace {

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

Status CheckShapes(const JobSpec& spec, int dim, int num_classes) {
  int in = spec.model().layers(0), out = spec.model().layers(spec.model().layers_size() - 1);
  if (dim != in)
    return InvalidArgument("model.layers[0] is " + std::to_string(in) + " but the dataset has " + std::to_string(dim) +
                           " features per record");
  if (num_classes > out)
    return InvalidArgument("the dataset has " + std::to_string(num_classes) +
                           " classes but the model's last layer has " + std::to_string(out));
  return OkStatus();
}

// Windowed figures for the heartbeat.
struct Window {
  double step = 0, comm = 0, exposed = 0, compute = 0, sgemm = 0, loader = 0, loss = 0;
  int64_t samples = 0, local_samples = 0;
  int steps = 0;
};

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
  if (!in.train && !in.loader) return InvalidArgument("no training data");
  // The records the epochs run over: admitted records of a verified dataset, or all of
  // an in-memory one.
  const int64_t n = in.loader ? in.loader->size() : in.train->n;
  const int rank = comm->rank(), world = comm->size();
  CollectiveOptions opts;
  opts.timeout = std::chrono::milliseconds(static_cast<int64_t>(spec.collectives().timeout_s() * 1000));
  RETURN_IF_ERROR(in.loader ? CheckShapes(spec, in.loader->dim(), in.loader->num_classes())
                            : CheckShapes(spec, in.train->dim, in.train->num_classes));
  if (n == 0) return FailedPrecondition("the training set has no (admitted) records");

  CodecOptions codec_opts;
  codec_opts.name = spec.collectives().codec();
  codec_opts.seed = t.seed();
  codec_opts.powersgd_rank = spec.collectives().powersgd_rank();
  codec_opts.powersgd_warmup_steps = spec.collectives().powersgd_warmup_steps();
  codec_opts.error_feedback = spec.collectives().error_feedback();
  // Top-k's momentum correction moves the momentum into the codec, before the
  // sparsification; the optimizer then applies the reduced values without momentum.
  const bool codec_momentum = codec_opts.name == "topk" && spec.collectives().topk_momentum_correction();
  if (codec_momentum) {
    codec_opts.topk_momentum = t.momentum();
    codec_opts.topk_nesterov = t.nesterov();
  }
  codec_opts.qblock_bits = spec.collectives().qblock_bits();
  codec_opts.topk_ratio = spec.collectives().topk_ratio();
  ASSIGN_OR_RETURN(std::unique_ptr<GradientCodec> codec, MakeCodec(codec_opts));
  SgdOptions sgd_opts;
  sgd_opts.lr = static_cast<float>(t.learning_rate());
  sgd_opts.momentum = codec_momentum ? 0.0f : static_cast<float>(t.momentum());
  sgd_opts.nesterov = !codec_momentum && t.nesterov();
  sgd_opts.weight_decay = static_cast<float>(t.weight_decay());
  SgdMomentum optimizer(sgd_opts, model->num_parameters());

  TrainingPosition pos;
  if (in.resume) {
    ASSIGN_OR_RETURN(pos, RestoreSnapshot(*in.resume, *model, optimizer, codec.get(), world, rank));
    if (rank == 0) SHOAL_LOG_INFO("resuming at step {} (epoch {}, cursor {})", pos.step, pos.epoch + 1, pos.cursor);
  } else {
    // Every rank starts from rank 0's parameters (identical seeds make this a no-op
    // today; joiners of later generations rely on the same broadcast).
    RETURN_IF_ERROR(BroadcastParams(model, comm, opts).WithContext("initial parameter broadcast"));
  }

  ReducerOptions red_opts;
  red_opts.bucket_mib = spec.collectives().bucket_mib();
  red_opts.first_bucket_mib = std::min(1.0, spec.collectives().bucket_mib());
  red_opts.overlap = spec.collectives().overlap();
  red_opts.collective = opts;
  Reducer reducer(comm, codec.get(), model->params(), red_opts);
  GradReadyFn on_ready = reducer.ReadyFn();

  const int64_t global_batch = int64_t{t.batch_per_worker()} * world;
  // Steps are counted over the whole run, whatever the world size was before a resume:
  // the remaining samples of this epoch at today's global batch, then whole epochs.
  const int64_t steps_per_epoch = StepsPerEpoch(n, global_batch);
  int64_t total_steps = pos.step + StepsPerEpoch(n - pos.cursor, global_batch) +
                        steps_per_epoch * (t.epochs() - pos.epoch - 1);
  if (pos.epoch >= t.epochs()) total_steps = pos.step;
  if (t.max_steps() > 0) total_steps = std::min(total_steps, t.max_steps());
  const int64_t every = spec.checkpoint().every_steps();

  JobResult result;
  result.set_backend(comm->backend());
  result.set_world_size(world);
  result.set_codec(codec->name());
  result.set_resumed_from_step(in.resume ? pos.step : 0);
  WorkerMetrics m;
  m.set_total_steps(total_steps);
  m.set_test_accuracy(-1);

  std::vector<float> bx;
  std::vector<int32_t> by;
  TrainerSnapshot snapshot;
  Stopwatch wall;
  double comm_total = 0, exposed_total = 0, compute_total = 0, sgemm_total = 0, loader_total = 0;
  int64_t samples_total = 0, saves = 0;
  constexpr int kWindow = 20;
  Window w;

  auto fill = [&](TrainerSnapshot* snap) {
    BuildSnapshot(*model, optimizer, codec.get(), pos, world, rank, snap);
    snap->job_id = in.job_id;
    return OkStatus();
  };
  double final_save_seconds = 0;
  auto save = [&](bool final_save) -> Status {
    if (!in.checkpointer) return OkStatus();
    ++saves;
    // One copy, straight into a free buffer; the checkpointer counts that stall.
    if (!final_save) return in.checkpointer->SaveAsyncWith(fill);
    // Timed alone (earlier saves drained, the state already in host memory): what an
    // asynchronous save's stall compares with.
    RETURN_IF_ERROR(in.checkpointer->Wait());
    RETURN_IF_ERROR(fill(&snapshot));
    Stopwatch sync;
    Status s = in.checkpointer->SaveNow(snapshot);
    final_save_seconds = sync.Seconds();
    return s;
  };

  // The snapshot buffers are faulted in on the writer thread while training starts,
  // not by the first save on this one. The codec's state appears (and grows) as buckets
  // first pass through the codec, so its buffer is warmed when that happens, well
  // before the first save.
  const bool prewarm = in.checkpointer && every > 0;
  size_t warmed_codec_bytes = 0;
  auto prewarm_codec_state = [&] {
    if (!prewarm || codec->name() == "none") return;
    const size_t bytes = codec->StateBytes();
    if (bytes <= warmed_codec_bytes) return;
    warmed_codec_bytes = bytes;
    in.checkpointer->Prewarm(SnapshotTensorBytes(*model, optimizer), {bytes});
  };
  if (prewarm) in.checkpointer->Prewarm(SnapshotTensorBytes(*model, optimizer));

  int64_t step = pos.step;
  for (int64_t epoch = pos.epoch; epoch < t.epochs() && step < total_steps; ++epoch) {
    std::vector<uint32_t> order = in.loader ? std::vector<uint32_t>() : EpochPermutation(n, t.seed(), epoch);
    int64_t cursor = epoch == pos.epoch ? pos.cursor : 0;
    for (; cursor < n && step < total_steps; ++step) {
      if (hooks.should_stop && hooks.should_stop()) return Cancelled("training stopped at step " + std::to_string(step));
      Stopwatch step_clock;
      const int64_t g = StepSamples(cursor, n, global_batch);
      Span span = RankSpan(cursor, n, global_batch, rank, world);
      if (in.loader) {
        // The loader cuts the same step by the same rule; a mismatch is a bug, not data.
        ASSIGN_OR_RETURN(LoaderBatch b, in.loader->Next());
        if (b.epoch != epoch || b.cursor != cursor || b.n != span.size())
          return Internal("loader is at epoch " + std::to_string(b.epoch) + " cursor " + std::to_string(b.cursor) +
                          ", trainer at epoch " + std::to_string(epoch) + " cursor " + std::to_string(cursor));
        bx = std::move(b.x);
        by = std::move(b.y);
      } else {
        GatherBatch(*in.train, order, span, bx, by);
      }
      double loader = step_clock.Seconds();

      Stopwatch compute_clock;
      reducer.BeginStep(step);
      double loss_sum = model->ForwardBackward(Batch{bx.data(), by.data(), static_cast<int>(span.size())},
                                               1.0f / static_cast<float>(g), on_ready);
      double compute = compute_clock.Seconds();
      double sgemm = model->TakeSgemmSeconds();
      Status reduced = reducer.Wait();
      if (!reduced.ok()) return reduced.WithContext("gradient reduction at step " + std::to_string(step));
      ReducerStats rs = reducer.stats();

      double lr = LearningRateAt(step, total_steps, t.learning_rate(), t.warmup_steps(), t.schedule(), t.min_lr_ratio());
      optimizer.Step(model->params(), static_cast<float>(lr));
      cursor += g;
      pos = cursor >= n ? TrainingPosition{step + 1, epoch + 1, 0} : TrainingPosition{step + 1, epoch, cursor};

      double step_s = step_clock.Seconds();
      comm_total += rs.last_comm_seconds;
      exposed_total += rs.last_exposed_comm_seconds;
      compute_total += compute;
      sgemm_total += sgemm;
      loader_total += loader;
      samples_total += g;
      w.step += step_s;
      w.comm += rs.last_comm_seconds;
      w.exposed += rs.last_exposed_comm_seconds;
      w.compute += compute;
      w.sgemm += sgemm;
      w.loader += loader;
      w.loss += loss_sum;
      w.samples += g;
      w.local_samples += span.size();
      ++w.steps;

      m.set_step(step + 1);
      m.set_epoch(static_cast<int32_t>(epoch));
      m.set_cursor(cursor);
      m.set_bytes_sent(comm->bytes_sent());
      if (w.steps == kWindow || cursor >= n || step + 1 == total_steps) {
        m.set_loss(w.local_samples ? w.loss / w.local_samples : 0);
        m.set_samples_per_second(w.step > 0 ? w.samples / w.step : 0);
        m.set_step_seconds(w.step / w.steps);
        m.set_comm_seconds(w.comm / w.steps);
        m.set_compute_seconds(w.compute / w.steps);
        m.set_sgemm_seconds(w.sgemm / w.steps);
        m.set_loader_wait_seconds(w.loader / w.steps);
        w = Window();
      }
      if (hooks.on_metrics) hooks.on_metrics(m);
      prewarm_codec_state();
      if (every > 0 && (step + 1) % every == 0 && step + 1 < total_steps) RETURN_IF_ERROR(save(false));
    }
    bool epoch_done = cursor >= n || step == total_steps;
    if (t.evaluate() && in.test && epoch_done) {
      ASSIGN_OR_RETURN(EvalResult ev, EvaluateDistributed(model, *in.test, comm, opts));
      double acc = ev.count ? static_cast<double>(ev.correct) / ev.count : 0;
      result.add_epoch_test_accuracy(acc);
      m.set_test_accuracy(acc);
      if (hooks.on_metrics) hooks.on_metrics(m);
      if (hooks.on_epoch) hooks.on_epoch(static_cast<int>(epoch), acc);
    }
    result.set_epochs(static_cast<int32_t>(std::min<int64_t>(t.epochs(), epoch + (cursor >= n ? 1 : 0))));
  }
  RETURN_IF_ERROR(save(true).WithContext("final checkpoint"));

  double wall_s = wall.Seconds();
  ReducerStats rs = reducer.stats();
  result.set_steps(step);
  result.set_final_test_accuracy(m.test_accuracy());
  result.set_final_loss(m.loss());
  result.set_wall_seconds(wall_s);
  result.set_samples_per_second(wall_s > 0 ? samples_total / wall_s : 0);
  result.set_bytes_sent_per_worker(comm->bytes_sent());
  result.set_bytes_uncompressed_per_worker(rs.bytes_uncompressed);
  result.set_gradient_bytes_sent_per_worker(rs.bytes_sent);
  result.set_comm_seconds(comm_total);
  result.set_exposed_comm_seconds(exposed_total);
  result.set_codec_compute_seconds(rs.codec_compute_seconds);
  result.set_compute_seconds(compute_total);
  result.set_sgemm_seconds(sgemm_total);
  result.set_loader_wait_seconds(loader_total);
  result.set_checkpoints_saved(saves);
  if (in.loader) {
    result.set_records_admitted(in.loader->size());
    result.set_records_quarantined(in.loader->quarantined());
  }
  if (in.checkpointer) {
    result.set_checkpoint_stall_seconds(in.checkpointer->stats().total_stall_s);
    result.set_checkpoint_final_save_seconds(final_save_seconds);
  }
  return result;
}

}  // namespace shoal
