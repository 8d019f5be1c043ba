// The training loop: global epoch order, global cursor, per-rank spans, gradients
// reduced in fusion buckets while backward goes on (sum of grad_scale = 1/global batch,
// i.e. the exact global-batch mean), SGD with momentum and a warm-up + cosine schedule,
// evaluation at epoch ends, asynchronous checkpoints, exact resume; across generations,
// state sync from one rank and an agreed last step for planned membership changes.
#include "worker/trainer.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "collectives/reducer.h"
#include "common/clock.h"
#include "common/log.h"
#include "datapipe/partition.h"
#include "proto/ledger.h"
#include "worker/optim/lr_schedule.h"

namespace shoal {

namespace {

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

// The boundary exchange runs about this often: often enough that a planned change waits
// for it a fraction of a second. It rides in the step's gradient reduction (the
// Reducer's control values, overlapped with backward), so it adds no round trip.
constexpr double kBoundaryExchangeSeconds = 0.1;
constexpr int64_t kMaxStepsBetweenExchanges = 1000;

// What ends a generation rather than the job: a peer or the rendezvous went away.
bool IsCommunicationFailure(const Status& s) {
  return s.code() == StatusCode::kAborted || s.code() == StatusCode::kUnavailable ||
         s.code() == StatusCode::kDeadlineExceeded;
}

StatusOr<GenerationOutcome> CommFailed(const Status& s) {
  GenerationOutcome out;
  out.end = GenerationEnd::kCommFailed;
  out.error = s;
  return out;
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

StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const TrainerInputs& in, Model* model) {
  const JobSpec& spec = *in.spec;
  const TrainingSpec& t = spec.training();
  if (!in.train && !in.loader) return InvalidArgument("no training data");
  std::unique_ptr<Trainer> tr(new Trainer());
  tr->in_ = in;
  tr->model_ = model;
  // The records the epochs run over: admitted records of a verified dataset, or all of
  // an in-memory one.
  tr->n_ = in.loader ? in.loader->size() : in.train->n;
  RETURN_IF_ERROR(in.loader ? CheckShapes(spec, in.loader->dim(), in.loader->num_classes())
                            : CheckShapes(spec, in.train->dim, in.train->num_classes));
  if (tr->n_ == 0) return FailedPrecondition("the training set has no (admitted) records");

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
  ASSIGN_OR_RETURN(tr->codec_, MakeCodec(codec_opts));
  SgdOptions sgd_opts;
  sgd_opts.lr = static_cast<float>(t.learning_rate());
  sgd_opts.momentum = codec_momentum ? 0.0f : static_cast<float>(t.momentum());
  sgd_opts.nesterov = !codec_momentum && t.nesterov();
  sgd_opts.weight_decay = static_cast<float>(t.weight_decay());
  tr->optimizer_ = std::make_unique<SgdMomentum>(sgd_opts, model->num_parameters());
  tr->ledger_.set_records(tr->n_);
  tr->ledger_.set_seed(t.seed());
  tr->wall_start_ = MonotonicSeconds();
  tr->totals_.set_codec(tr->codec_->name());
  return tr;
}

int64_t Trainer::GlobalBatch(int world) const {
  const TrainingSpec& t = in_.spec->training();
  const int ref = t.elastic_batch() == "per_worker" || batch_world_ == 0 ? world : batch_world_;
  return int64_t{t.batch_per_worker()} * ref;
}

Status Trainer::Restore(const TrainerSnapshot& snap, int world, int rank, const Ledger* history) {
  ASSIGN_OR_RETURN(pos_, RestoreSnapshot(snap, *model_, *optimizer_, codec_.get(), world, rank));
  // Without the job's history (a resume named in the spec, of an earlier job) the
  // ledger starts at the checkpoint's step.
  std::lock_guard<std::mutex> l(ledger_mu_);
  ledger_.clear_ranges();
  if (history) {
    // A history that does not end at the checkpoint cannot prove the steps between:
    // training goes on, and `shoalctl ledger --check` names the gap.
    if (LedgerEnd(*history) != snap.step)
      SHOAL_LOG_WARN("the job's ledger ends at step {} but the checkpoint is at step {}", LedgerEnd(*history), snap.step);
    ledger_.mutable_ranges()->CopyFrom(history->ranges());
    // The job's global batch outlives a rollback: survivors that resume from a
    // checkpoint with fewer members keep it (elastic_batch: global), or the rest of the
    // job would train on a smaller batch (found by the chaos soak: its accuracy moved).
    const int64_t per_worker = in_.spec->training().batch_per_worker();
    int64_t batch = 0;  // the largest: a range may hold only an epoch's short last step
    for (const LedgerRange& r : history->ranges()) batch = std::max(batch, r.batch());
    if (batch > 0 && per_worker > 0 && batch % per_worker == 0) batch_world_ = static_cast<int>(batch / per_worker);
  }
  resumed_from_step_ = pos_.step;
  // A checkpoint saved at an epoch's last step may precede that epoch's evaluation.
  evaluated_epochs_ = pos_.cursor == 0 ? std::max<int64_t>(0, pos_.epoch - 1) : pos_.epoch;
  return OkStatus();
}

void Trainer::RecordAccuracy(int64_t epoch, double acc, WorkerMetrics& m, const TrainerHooks& hooks) {
  epoch_accuracy_.push_back(acc);
  last_accuracy_ = acc;
  evaluated_epochs_ = epoch + 1;
  m.set_test_accuracy(acc);
  m.set_evaluations(static_cast<int32_t>(epoch_accuracy_.size()));
  if (hooks.on_metrics) hooks.on_metrics(m);
  if (hooks.on_epoch) hooks.on_epoch(static_cast<int>(epoch), acc);
}

Status Trainer::SyncFrom(Communicator* comm, int source) {
  CollectiveOptions opts;
  opts.timeout = std::chrono::milliseconds(static_cast<int64_t>(in_.spec->collectives().timeout_s() * 1000));
  const bool me = comm->rank() == source;
  std::string ledger_bytes = me ? ledger().SerializeAsString() : "";
  int64_t header[7] = {pos_.step, pos_.epoch, pos_.cursor, batch_world_, static_cast<int64_t>(ledger_bytes.size()),
                       evaluated_epochs_, static_cast<int64_t>(epoch_accuracy_.size())};
  RETURN_IF_ERROR(comm->Broadcast(header, sizeof(header), source, opts).WithContext("state sync: position"));
  if (header[4] < 0 || header[4] > (int64_t{64} << 20)) return DataLoss("state sync: ledger of " + std::to_string(header[4]) + " bytes");
  if (header[6] < 0 || header[6] > 100000) return DataLoss("state sync: " + std::to_string(header[6]) + " epoch accuracies");
  // The job's accuracy history, so that a joiner that becomes rank 0 reports all of it.
  std::vector<double> accuracies = me ? epoch_accuracy_ : std::vector<double>(static_cast<size_t>(header[6]));
  if (!accuracies.empty())
    RETURN_IF_ERROR(comm->Broadcast(accuracies.data(), accuracies.size() * sizeof(double), source, opts)
                        .WithContext("state sync: accuracies"));
  ledger_bytes.resize(static_cast<size_t>(header[4]));
  if (!ledger_bytes.empty())
    RETURN_IF_ERROR(comm->Broadcast(ledger_bytes.data(), ledger_bytes.size(), source, opts).WithContext("state sync: ledger"));
  for (auto& p : model_->params())
    RETURN_IF_ERROR(comm->Broadcast(p.data, p.numel * sizeof(float), source, opts).WithContext("state sync: " + p.name));
  std::string optim = me ? optimizer_->SaveState() : std::string(optimizer_->StateBytes(), '\0');
  RETURN_IF_ERROR(comm->Broadcast(optim.data(), optim.size(), source, opts).WithContext("state sync: optimizer"));
  if (!me) {
    RETURN_IF_ERROR(optimizer_->LoadState(optim).WithContext("state sync: optimizer"));
    Ledger l;
    if (!l.ParseFromString(ledger_bytes)) return DataLoss("state sync: the ledger from rank " + std::to_string(source) + " is corrupt");
    std::lock_guard<std::mutex> lock(ledger_mu_);
    ledger_ = l;
    pos_ = TrainingPosition{header[0], header[1], header[2]};
    batch_world_ = static_cast<int>(header[3]);
    evaluated_epochs_ = header[5];
    epoch_accuracy_ = std::move(accuracies);
    if (!epoch_accuracy_.empty()) last_accuracy_ = epoch_accuracy_.back();
  }
  // Residuals are per rank and PowerSGD's Q must be equal on every rank; a joiner has
  // neither, so every rank starts the codec afresh (what is lost: at most one step's
  // unsent compression error per rank).
  codec_->ResetState();
  return OkStatus();
}

Ledger Trainer::ledger() const {
  std::lock_guard<std::mutex> l(ledger_mu_);
  return ledger_;
}

Ledger Trainer::LedgerBeforeStep(int64_t step) const {
  std::lock_guard<std::mutex> l(ledger_mu_);
  return LedgerBefore(ledger_, step);
}

void Trainer::AppendLedger(int64_t step, int64_t epoch, int64_t cursor, int64_t samples, int64_t global_batch,
                           int64_t generation, int world) {
  std::lock_guard<std::mutex> l(ledger_mu_);
  if (ledger_.ranges_size() > 0) {
    LedgerRange* last = ledger_.mutable_ranges(ledger_.ranges_size() - 1);
    if (last->step_end() == step && last->epoch() == epoch && last->cursor_end() == cursor &&
        last->generation() == generation && last->batch() == samples) {
      last->set_step_end(step + 1);
      last->set_cursor_end(cursor + samples);
      return;
    }
    // An epoch's last step may be short: it extends the range without changing `batch`.
    if (last->step_end() == step && last->epoch() == epoch && last->cursor_end() == cursor &&
        last->generation() == generation && samples < last->batch() && cursor + samples == n_) {
      last->set_step_end(step + 1);
      last->set_cursor_end(cursor + samples);
      return;
    }
  }
  LedgerRange* r = ledger_.add_ranges();
  r->set_step_begin(step);
  r->set_step_end(step + 1);
  r->set_epoch(epoch);
  r->set_cursor_begin(cursor);
  r->set_cursor_end(cursor + samples);
  r->set_generation(generation);
  r->set_world(world);
  // The nominal global batch, also for a range that starts at an epoch's short last
  // step: a rollback reads the job's global batch back from here.
  r->set_batch(std::max(samples, global_batch));
}

StatusOr<GenerationOutcome> Trainer::RunGeneration(Communicator* comm, int64_t generation, AsyncCheckpointer* checkpointer,
                                                   const TrainerHooks& hooks) {
  const JobSpec& spec = *in_.spec;
  const TrainingSpec& t = spec.training();
  const int rank = comm->rank(), world = comm->size();
  const int64_t n = n_;
  CollectiveOptions opts;
  opts.timeout = std::chrono::milliseconds(static_cast<int64_t>(spec.collectives().timeout_s() * 1000));
  if (batch_world_ == 0) batch_world_ = world;
  const int64_t global_batch = GlobalBatch(world);
  // Linear scaling when the per-worker batch is kept: the rate follows the global batch.
  const double lr_scale = static_cast<double>(global_batch) / (int64_t{t.batch_per_worker()} * batch_world_);
  if (in_.loader) {
    RETURN_IF_ERROR(in_.loader->SetWorld(rank, world, global_batch));
    RETURN_IF_ERROR(in_.loader->Seek(pos_.epoch, pos_.cursor));
  }

  ReducerOptions red_opts;
  red_opts.bucket_mib = spec.collectives().bucket_mib();
  red_opts.first_bucket_mib = std::min(1.0, spec.collectives().bucket_mib());
  red_opts.overlap = spec.collectives().overlap();
  red_opts.collective = opts;
  TraceRecorder* const trace = in_.trace;  // null unless the spec traces a range of steps
  red_opts.trace = trace;
  Reducer reducer(comm, codec_.get(), model_->params(), red_opts);
  GradReadyFn on_ready = reducer.ReadyFn();
  // Traced steps split ForwardBackward where its first gradient is ready: the model has
  // no hook between the two, so the loss and the last layer's gradient count as forward.
  int64_t first_ready_us = 0;
  GradReadyFn traced_ready = [&](size_t i) {
    if (first_ready_us == 0) first_ready_us = trace->NowMicros();
    on_ready(i);
  };

  // Steps are counted over the whole run, whatever the world size was before: the
  // remaining samples of this epoch at this generation's global batch, then whole epochs.
  const int64_t steps_per_epoch = StepsPerEpoch(n, global_batch);
  int64_t total_steps = pos_.step + StepsPerEpoch(n - pos_.cursor, global_batch) +
                        steps_per_epoch * (t.epochs() - pos_.epoch - 1);
  if (pos_.epoch >= t.epochs()) total_steps = pos_.step;
  if (t.max_steps() > 0) total_steps = std::min(total_steps, t.max_steps());
  const int64_t every = spec.checkpoint().every_steps();

  WorkerMetrics m;
  m.set_total_steps(total_steps);
  m.set_test_accuracy(last_accuracy_);
  m.set_evaluations(static_cast<int32_t>(epoch_accuracy_.size()));
  m.set_step(pos_.step);
  m.set_epoch(static_cast<int32_t>(pos_.epoch));
  m.set_cursor(pos_.cursor);

  std::vector<float> bx;
  std::vector<int32_t> by;
  TrainerSnapshot snapshot;
  constexpr int kWindow = 20;
  Window w;
  const int64_t bytes_at_start = comm->bytes_sent();
  auto finish_generation_totals = [&] {
    ReducerStats rs = reducer.stats();
    bytes_sent_before_ += comm->bytes_sent() - bytes_at_start;
    grad_bytes_before_ += rs.bytes_sent;
    // The codec outlives generations: its counters are already cumulative.
    uncompressed_before_ = rs.bytes_uncompressed;
    codec_seconds_before_ = rs.codec_compute_seconds;
  };

  auto fill = [&](TrainerSnapshot* snap) {
    BuildSnapshot(*model_, *optimizer_, codec_.get(), pos_, world, rank, snap);
    snap->job_id = in_.job_id;
    return OkStatus();
  };
  double final_save_seconds = 0;
  auto save = [&](bool final_save) -> Status {
    if (!checkpointer) return OkStatus();
    // What the training thread waits for: a free buffer and the copy into it (or, for
    // the final save, the whole synchronous write).
    ScopedSpan stall_span(trace, final_save ? "checkpoint final save" : "checkpoint stall", "checkpoint");
    ++saves_;
    // One copy, straight into a free buffer; the checkpointer counts that stall.
    if (!final_save) return checkpointer->SaveAsyncWith(fill);
    // Timed alone (earlier saves drained, the state already in host memory): what an
    // asynchronous save's stall compares with.
    RETURN_IF_ERROR(checkpointer->Wait());
    RETURN_IF_ERROR(fill(&snapshot));
    Stopwatch sync;
    Status s = checkpointer->SaveNow(snapshot);
    final_save_seconds = sync.Seconds();
    return s;
  };

  // The snapshot buffers are faulted in on the writer thread while training starts,
  // not by the first save on this one. The codec's state appears (and grows) as buckets
  // first pass through the codec, so its buffer is warmed when that happens, well
  // before the first save.
  const bool prewarm = checkpointer && every > 0;
  size_t warmed_codec_bytes = 0;
  auto prewarm_codec_state = [&] {
    if (!prewarm || codec_->name() == "none") return;
    const size_t bytes = codec_->StateBytes();
    if (bytes <= warmed_codec_bytes) return;
    warmed_codec_bytes = bytes;
    checkpointer->Prewarm(SnapshotTensorBytes(*model_, *optimizer_), {bytes});
  };
  if (prewarm) checkpointer->Prewarm(SnapshotTensorBytes(*model_, *optimizer_));

  // The boundary exchange: after the first step of the generation, then every
  // `exchange_every` steps as the ranks agreed at the previous exchange.
  int64_t next_exchange = pos_.step + 1;
  int64_t step = pos_.step;
  // An epoch whose evaluation a failure interrupted is evaluated before anything else
  // (found by the chaos soak: a fault during the last epoch's evaluation lost the job's
  // final accuracy).
  if (t.evaluate() && in_.test && pos_.cursor == 0 && pos_.epoch > 0 && evaluated_epochs_ < pos_.epoch) {
    if (trace) trace->AtStep(pos_.step);
    ScopedSpan eval_span(trace, "evaluate", "evaluation");
    auto ev = EvaluateDistributed(model_, *in_.test, comm, opts);
    if (!ev.ok()) {
      finish_generation_totals();
      return CommFailed(ev.status().WithContext("evaluation after epoch " + std::to_string(pos_.epoch)));
    }
    RecordAccuracy(pos_.epoch - 1, ev->count ? static_cast<double>(ev->correct) / ev->count : 0, m, hooks);
    totals_.set_epochs(static_cast<int32_t>(std::min<int64_t>(t.epochs(), pos_.epoch)));
  }
  for (int64_t epoch = pos_.epoch; epoch < t.epochs() && step < total_steps; ++epoch) {
    std::vector<uint32_t> order = in_.loader ? std::vector<uint32_t>() : EpochPermutation(n, t.seed(), epoch);
    int64_t cursor = epoch == pos_.epoch ? pos_.cursor : 0;
    for (; cursor < n && step < total_steps; ++step) {
      if (hooks.should_stop && hooks.should_stop()) return Cancelled("training stopped at step " + std::to_string(step));
      if (trace) trace->AtStep(step);
      const bool traced = trace && trace->active();
      const int64_t step_begin_us = traced ? trace->NowMicros() : 0;
      Stopwatch step_clock;
      const int64_t g = StepSamples(cursor, n, global_batch);
      Span span = RankSpan(cursor, n, global_batch, rank, world);
      if (in_.loader) {
        // The loader cuts the same step by the same rule; a mismatch is a bug, not data.
        ASSIGN_OR_RETURN(LoaderBatch b, in_.loader->Next());
        if (b.epoch != epoch || b.cursor != cursor || b.n != span.size())
          return Internal("loader is at epoch " + std::to_string(b.epoch) + " cursor " + std::to_string(b.cursor) +
                          ", trainer at epoch " + std::to_string(epoch) + " cursor " + std::to_string(cursor));
        bx = std::move(b.x);
        by = std::move(b.y);
      } else {
        GatherBatch(*in_.train, order, span, bx, by);
      }
      double loader = step_clock.Seconds();
      if (traced)
        trace->Complete("loader wait", "data", "training", step_begin_us, trace->NowMicros(),
                        {{"samples", static_cast<int64_t>(span.size())}});

      // The boundary exchange rides in this step's reduction when it is due: the sum of
      // the ranks' boundary flags, and of each rank's idea of how many steps make
      // kBoundaryExchangeSeconds (averaged, so all agree on the next exchange).
      const bool exchange = step + 1 == next_exchange && step + 1 < total_steps;
      float ctl[2] = {0, 0};
      if (exchange) {
        const bool want = hooks.boundary_requested && hooks.boundary_requested();
        const double step_s_est = mean_step_s_ > 0 ? mean_step_s_ : kBoundaryExchangeSeconds;
        ctl[0] = want ? 1.0f : 0.0f;
        ctl[1] = static_cast<float>(std::clamp<double>(std::floor(kBoundaryExchangeSeconds / std::max(step_s_est, 1e-6)), 1,
                                                       kMaxStepsBetweenExchanges));
      }
      Stopwatch compute_clock;
      reducer.BeginStep(step, exchange && world > 1 ? ctl : nullptr, 2);
      first_ready_us = 0;
      const int64_t forward_begin_us = traced ? trace->NowMicros() : 0;
      double loss_sum = model_->ForwardBackward(Batch{bx.data(), by.data(), static_cast<int>(span.size())},
                                                1.0f / static_cast<float>(g), traced ? traced_ready : on_ready);
      double compute = compute_clock.Seconds();
      if (traced) {
        const int64_t end_us = trace->NowMicros();
        const int64_t split_us = first_ready_us > 0 ? first_ready_us : end_us;
        trace->Complete("forward", "compute", "training", forward_begin_us, split_us,
                        {{"samples", static_cast<int64_t>(span.size())}});
        trace->Complete("backward", "compute", "training", split_us, end_us);
      }
      const int64_t wait_begin_us = traced ? trace->NowMicros() : 0;
      double sgemm = model_->TakeSgemmSeconds();
      Status reduced = reducer.Wait();
      if (traced) trace->Complete("reduction wait", "communication", "training", wait_begin_us, trace->NowMicros());
      if (!reduced.ok()) {
        finish_generation_totals();
        return CommFailed(reduced.WithContext("gradient reduction at step " + std::to_string(step)));
      }
      ReducerStats rs = reducer.stats();

      double lr = lr_scale *
                  LearningRateAt(step, total_steps, t.learning_rate(), t.warmup_steps(), t.schedule(), t.min_lr_ratio());
      {
        ScopedSpan optimizer_span(traced ? trace : nullptr, "optimizer", "compute");
        optimizer_->Step(model_->params(), static_cast<float>(lr));
      }
      // The step is committed: the model, the position and the ledger move together.
      Stopwatch ledger_clock;
      AppendLedger(step, epoch, cursor, g, global_batch, generation, world);
      cursor += g;
      pos_ = cursor >= n ? TrainingPosition{step + 1, epoch + 1, 0} : TrainingPosition{step + 1, epoch, cursor};

      double step_s = step_clock.Seconds();
      if (traced)
        trace->Complete("step", "step", "training", step_begin_us, trace->NowMicros(),
                        {{"samples", g}, {"world", world}, {"generation", generation}});
      totals_.set_comm_seconds(totals_.comm_seconds() + rs.last_comm_seconds);
      totals_.set_exposed_comm_seconds(totals_.exposed_comm_seconds() + rs.last_exposed_comm_seconds);
      totals_.set_compute_seconds(totals_.compute_seconds() + compute);
      totals_.set_sgemm_seconds(totals_.sgemm_seconds() + sgemm);
      totals_.set_loader_wait_seconds(totals_.loader_wait_seconds() + loader);
      samples_total_ += g;
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
      m.set_bytes_sent(bytes_sent_before_ + comm->bytes_sent() - bytes_at_start);
      if (w.steps == kWindow || cursor >= n || step + 1 == total_steps) {
        m.set_loss(w.local_samples ? w.loss / w.local_samples : 0);
        m.set_samples_per_second(w.step > 0 ? w.samples / w.step : 0);
        m.set_step_seconds(w.step / w.steps);
        m.set_comm_seconds(w.comm / w.steps);
        m.set_compute_seconds(w.compute / w.steps);
        m.set_sgemm_seconds(w.sgemm / w.steps);
        m.set_loader_wait_seconds(w.loader / w.steps);
        mean_step_s_ = w.step / w.steps;
        last_loss_ = m.loss();
        w = Window();
      }
      if (hooks.on_metrics) hooks.on_metrics(m);
      // The heartbeat's copy: every 32 steps is fresh enough for status (reports,
      // Finish and checkpoints carry the exact ledger).
      if (hooks.on_ledger && (step % 32 == 0 || cursor >= n || step + 1 == total_steps)) hooks.on_ledger(ledger());
      totals_.set_ledger_seconds(totals_.ledger_seconds() + ledger_clock.Seconds());
      prewarm_codec_state();
      if (every > 0 && (step + 1) % every == 0 && step + 1 < total_steps) {
        if (Status saved = save(false); !saved.ok()) {
          if (!IsCommunicationFailure(saved)) return saved;
          finish_generation_totals();
          return CommFailed(saved.WithContext("checkpoint at step " + std::to_string(step + 1)));
        }
      }

      if (exchange) {
        if (world > 1) totals_.set_boundary_exchanges(totals_.boundary_exchanges() + 1);
        next_exchange = step + 1 + std::max<int64_t>(1, static_cast<int64_t>(ctl[1] / static_cast<float>(world)));
        if (ctl[0] > 0 && cursor < n) {  // at an epoch end, the evaluation goes first
          finish_generation_totals();
          GenerationOutcome out;
          out.end = GenerationEnd::kBoundary;
          return out;
        }
        if (ctl[0] > 0) next_exchange = step + 1;  // ask again right after the evaluation
      }
    }
    bool epoch_done = cursor >= n || step == total_steps;
    if (t.evaluate() && in_.test && epoch_done) {
      ScopedSpan eval_span(trace, "evaluate", "evaluation");
      auto ev = EvaluateDistributed(model_, *in_.test, comm, opts);
      if (!ev.ok()) {
        finish_generation_totals();
        return CommFailed(ev.status().WithContext("evaluation after epoch " + std::to_string(epoch + 1)));
      }
      RecordAccuracy(epoch, ev->count ? static_cast<double>(ev->correct) / ev->count : 0, m, hooks);
    }
    totals_.set_epochs(static_cast<int32_t>(std::min<int64_t>(t.epochs(), epoch + (cursor >= n ? 1 : 0))));
  }
  if (Status saved = save(true); !saved.ok()) {
    // A peer lost, or the generation ended, while the ranks agreed on the final
    // checkpoint (its shard infos travel through the generation's rendezvous scope): a
    // failure like any other, and the next generation saves it (found by the chaos
    // soak: a partition at the last step failed the whole job). Only a checkpoint that
    // cannot be written ends the job.
    if (IsCommunicationFailure(saved)) {
      finish_generation_totals();
      return CommFailed(saved.WithContext("final checkpoint"));
    }
    return saved.WithContext("final checkpoint");
  }
  finish_generation_totals();

  GenerationOutcome out;
  out.end = GenerationEnd::kCompleted;
  JobResult& result = out.result;
  result = totals_;
  double wall_s = MonotonicSeconds() - wall_start_;
  result.set_backend(comm->backend());
  result.set_world_size(world);
  result.set_resumed_from_step(resumed_from_step_);
  result.set_steps(step);
  for (double a : epoch_accuracy_) result.add_epoch_test_accuracy(a);
  result.set_final_test_accuracy(last_accuracy_);
  result.set_final_loss(last_loss_);
  result.set_wall_seconds(wall_s);
  result.set_samples_per_second(wall_s > 0 ? samples_total_ / wall_s : 0);
  result.set_bytes_sent_per_worker(bytes_sent_before_);
  result.set_bytes_uncompressed_per_worker(uncompressed_before_);
  result.set_gradient_bytes_sent_per_worker(grad_bytes_before_);
  result.set_codec_compute_seconds(codec_seconds_before_);
  result.set_checkpoints_saved(saves_);
  if (in_.loader) {
    result.set_records_admitted(in_.loader->size());
    result.set_records_quarantined(in_.loader->quarantined());
  }
  if (checkpointer) {
    result.set_checkpoint_stall_seconds(checkpointer->stats().total_stall_s);
    result.set_checkpoint_final_save_seconds(final_save_seconds);
  }
  return out;
}

StatusOr<JobResult> Train(const TrainerInputs& in, Communicator* comm, Model* model, const TrainerHooks& hooks) {
  ASSIGN_OR_RETURN(std::unique_ptr<Trainer> trainer, Trainer::Create(in, model));
  if (in.resume) {
    RETURN_IF_ERROR(trainer->Restore(*in.resume, comm->size(), comm->rank()));
    if (comm->rank() == 0)
      SHOAL_LOG_INFO("resuming at step {} (epoch {}, cursor {})", trainer->position().step,
                     trainer->position().epoch + 1, trainer->position().cursor);
  } else {
    // Every rank starts from rank 0's state (identical seeds make this a no-op for a
    // fresh job; it is the same sync a regroup uses).
    RETURN_IF_ERROR(trainer->SyncFrom(comm, 0).WithContext("initial state broadcast"));
  }
  ASSIGN_OR_RETURN(GenerationOutcome out, trainer->RunGeneration(comm, 1, in.checkpointer, hooks));
  if (out.end == GenerationEnd::kCommFailed) return out.error;
  if (out.end == GenerationEnd::kBoundary) return Aborted("the generation ended at a boundary before training finished");
  return out.result;
}

}  // namespace shoal
