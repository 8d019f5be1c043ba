// Elastic trainer tests, ranks as threads over Gloo and an in-memory KV store: a job
// whose world changes between generations (members leave, join, or fail mid-step)
// trains every record exactly once per epoch, keeps all ranks bit-identical, and ends
// where an uninterrupted run ends, up to the summation order of the gradients.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "collectives/factory.h"
#include "collectives/memory_kv_store.h"
#include "datapipe/idx.h"
#include "datapipe/partition.h"
#include "spec/jobspec_loader.h"
#include "worker/models/mlp.h"
#include "worker/trainer.h"
#include "worker/trainer_state.h"

namespace shoal {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr int kN = 1000, kDim = 8, kClasses = 4, kEpochs = 2;
// Feature 0 of record i is i / 1024, exact in f32 for i < 2^24: every batch a model
// sees names its records, so the tests count what was trained on, not what should be.
constexpr float kIndexScale = 1024.0f;
// A member's step sleeps this long inside the model, so that the boundary exchange
// (about every 0.1 s of steps) comes at least every 25 steps and a boundary asked for
// mid-run lands mid-run. 84 steps of it cost ~0.35 s.
constexpr std::chrono::microseconds kSlowStep = 4ms;
constexpr double kCollectiveTimeoutS = 10;

InMemoryDataset IndexedData(uint64_t seed) {
  InMemoryDataset ds = RandomDataset(kN, kDim, kClasses, seed);
  for (int i = 0; i < kN; ++i) ds.x[size_t(i) * kDim] = static_cast<float>(i) / kIndexScale;
  return ds;
}

JobSpec ElasticSpec() {
  JobSpec spec = DefaultJobSpec();
  spec.mutable_model()->clear_layers();
  for (int w : {kDim, 16, kClasses}) spec.mutable_model()->add_layers(w);
  TrainingSpec* t = spec.mutable_training();
  t->set_epochs(kEpochs);
  t->set_batch_per_worker(8);
  t->set_evaluate(false);
  t->set_warmup_steps(5);
  // A lost peer must show up well before this; a hang fails the test at it.
  spec.mutable_collectives()->set_timeout_s(kCollectiveTimeoutS);
  return spec;
}

// Forwards to an MLP and records, per (generation, step), the records of each batch it
// is given: what this rank actually trained on. Used by one training thread at a time.
class RecordingModel : public Model {
 public:
  RecordingModel(std::unique_ptr<Model> inner, std::chrono::microseconds delay)
      : inner_(std::move(inner)), delay_(delay) {}

  // RunGeneration calls ForwardBackward once per step, in step order, from its start.
  void BeginGeneration(int64_t generation, int64_t first_step) {
    generation_ = generation;
    next_step_ = first_step;
  }
  // Null when this rank ran no such step.
  const std::vector<int64_t>* Recorded(int64_t generation, int64_t step) const {
    auto it = batches_.find({generation, step});
    return it == batches_.end() ? nullptr : &it->second;
  }

  std::vector<ParamTensor>& params() override { return inner_->params(); }
  size_t num_parameters() const override { return inner_->num_parameters(); }
  double ForwardBackward(const Batch& batch, float grad_scale, const GradReadyFn& on_ready) override {
    std::vector<int64_t>& records = batches_[{generation_, next_step_++}];
    records.clear();
    for (int i = 0; i < batch.n; ++i) records.push_back(std::lround(batch.x[size_t(i) * kDim] * kIndexScale));
    if (delay_.count() > 0) std::this_thread::sleep_for(delay_);
    return inner_->ForwardBackward(batch, grad_scale, on_ready);
  }
  EvalResult Evaluate(const Batch& batch) override { return inner_->Evaluate(batch); }
  double TakeSgemmSeconds() override { return inner_->TakeSgemmSeconds(); }

 private:
  std::unique_ptr<Model> inner_;
  std::chrono::microseconds delay_;
  int64_t generation_ = 0, next_step_ = 0;
  std::map<std::pair<int64_t, int64_t>, std::vector<int64_t>> batches_;
};

// One member process: a model and the trainer that lives across its generations.
struct Member {
  std::unique_ptr<RecordingModel> model;
  std::unique_ptr<Trainer> trainer;
};

std::unique_ptr<Member> NewMember(const JobSpec& spec, const InMemoryDataset& train, uint64_t model_seed,
                                  std::chrono::microseconds delay, const InMemoryDataset* test = nullptr) {
  std::vector<int> layers(spec.model().layers().begin(), spec.model().layers().end());
  auto mlp = MakeMlp(layers, model_seed);
  if (!mlp.ok()) {
    ADD_FAILURE() << mlp.status().ToString();
    return nullptr;
  }
  auto m = std::make_unique<Member>();
  m->model = std::make_unique<RecordingModel>(std::move(mlp).value(), delay);
  TrainerInputs in;
  in.spec = &spec;
  in.train = &train;
  in.test = test;
  auto tr = Trainer::Create(in, m->model.get());
  if (!tr.ok()) {
    ADD_FAILURE() << tr.status().ToString();
    return nullptr;
  }
  m->trainer = std::move(tr).value();
  return m;
}

struct GenerationPlan {
  int64_t generation = 1;
  int sync_source = -1;  // >= 0: every rank first takes this rank's state (SyncFrom)
  bool train = true;     // false: only the sync
  // Polled at each boundary exchange with the steps this rank has committed.
  std::function<bool(int rank, int64_t step)> want_boundary;
  // That rank's communicator is aborted from another thread once the rank has
  // committed abort_at_step steps.
  int abort_rank = -1;
  int64_t abort_at_step = 0;
};

struct RankEnd {
  Status status;  // the communicator's, SyncFrom's or RunGeneration's error
  GenerationOutcome outcome;
  Clock::time_point returned;
};

struct GenerationRun {
  std::vector<RankEnd> ranks;
  Clock::time_point aborted{};  // when Abort() was called; epoch if never
};

// One generation: each member on its own thread builds the generation's communicator
// (fresh KV prefix), optionally syncs, and trains.
GenerationRun RunGenerationThreads(const std::vector<Member*>& members, const GenerationPlan& plan) {
  static int run_counter = 0;
  const int world = static_cast<int>(members.size());
  const std::string prefix = "elastic-" + std::to_string(run_counter++) + "/gen-" + std::to_string(plan.generation) + "/";
  MemoryKvStore kv;
  GenerationRun run;
  run.ranks.resize(world);
  std::mutex mu;
  std::condition_variable cv;
  bool abort_now = false, abort_rank_done = false;
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      RankEnd& end = run.ranks[r];
      CommunicatorConfig cc{"gloo", r, world, &kv, prefix, std::chrono::seconds(10)};
      auto comm = MakeCommunicator(cc);
      if (!comm.ok()) {
        end.status = comm.status();
        return;
      }
      Trainer* tr = members[r]->trainer.get();
      if (plan.sync_source >= 0) {
        end.status = tr->SyncFrom(comm->get(), plan.sync_source);
        if (!end.status.ok() || !plan.train) return;
      }
      members[r]->model->BeginGeneration(plan.generation, tr->position().step);
      int64_t committed = tr->position().step;  // this thread's only
      TrainerHooks hooks;
      hooks.on_metrics = [&](const WorkerMetrics& m) {
        committed = m.step();
        if (r == plan.abort_rank && m.step() >= plan.abort_at_step) {
          std::lock_guard<std::mutex> l(mu);
          abort_now = true;
          cv.notify_all();
        }
      };
      if (plan.want_boundary) hooks.boundary_requested = [&] { return plan.want_boundary(r, committed); };
      std::thread watcher;
      if (r == plan.abort_rank) {
        watcher = std::thread([&] {
          std::unique_lock<std::mutex> l(mu);
          cv.wait(l, [&] { return abort_now || abort_rank_done; });
          if (!abort_now) return;
          run.aborted = Clock::now();
          l.unlock();
          (*comm)->Abort();
        });
      }
      auto out = tr->RunGeneration(comm->get(), plan.generation, nullptr, hooks);
      end.returned = Clock::now();
      if (watcher.joinable()) {
        {
          std::lock_guard<std::mutex> l(mu);
          abort_rank_done = true;
        }
        cv.notify_all();
        watcher.join();
      }
      if (out.ok()) end.outcome = *out;
      else end.status = out.status();
      // Closing the connections is what a dead process does, and what makes the peers'
      // waits fail at once instead of at the deadline.
      comm->reset();
    });
  }
  for (auto& t : threads) t.join();
  return run;
}

void ExpectAllEnded(const GenerationRun& run, GenerationEnd want) {
  for (size_t r = 0; r < run.ranks.size(); ++r) {
    ASSERT_TRUE(run.ranks[r].status.ok()) << "rank " << r << ": " << run.ranks[r].status.ToString();
    EXPECT_EQ(static_cast<int>(run.ranks[r].outcome.end), static_cast<int>(want))
        << "rank " << r << ": " << run.ranks[r].outcome.error.ToString();
  }
}

// Every member of a generation at the same position; returns its step.
int64_t ExpectSamePosition(const std::vector<Member*>& members) {
  const TrainingPosition& p0 = members[0]->trainer->position();
  for (size_t r = 1; r < members.size(); ++r) {
    const TrainingPosition& p = members[r]->trainer->position();
    EXPECT_EQ(p.step, p0.step) << "rank " << r;
    EXPECT_EQ(p.epoch, p0.epoch) << "rank " << r;
    EXPECT_EQ(p.cursor, p0.cursor) << "rank " << r;
  }
  return p0.step;
}

std::vector<float> Flat(Model& m) {
  std::vector<float> v;
  for (const ParamTensor& p : m.params()) v.insert(v.end(), p.data, p.data + p.numel);
  return v;
}

bool BitIdentical(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

void ExpectAllBitIdentical(const std::vector<Member*>& members) {
  const std::vector<float> p0 = Flat(*members[0]->model);
  for (size_t r = 1; r < members.size(); ++r)
    EXPECT_TRUE(BitIdentical(p0, Flat(*members[r]->model))) << "rank " << r << "'s parameters differ from rank 0's";
}

double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max<double>(d, std::abs(double(a[i]) - b[i]));
  return d;
}

double MaxAbs(const std::vector<float>& a) {
  double m = 0;
  for (float v : a) m = std::max<double>(m, std::abs(v));
  return m;
}

struct LedgerStep {
  int64_t step, epoch, cursor, samples, batch, generation;
  int world;
};

// Expands the ledger into its steps, checking that steps run 0, 1, 2, ... without a
// gap or a repeat, that each range's cursor advances by exactly its steps' samples, and
// that each epoch's positions [0, n) are consumed in order exactly once, for `epochs`
// epochs. Stops at the first inconsistency (the rest would only repeat it).
std::vector<LedgerStep> ExpandLedger(const Ledger& ledger, int64_t n, int epochs) {
  EXPECT_EQ(ledger.records(), n);
  std::vector<LedgerStep> steps;
  int64_t step = 0, epoch = 0, cursor = 0, samples = 0;
  for (const LedgerRange& r : ledger.ranges()) {
    const bool continues = r.step_begin() == step && r.step_end() > r.step_begin() && r.epoch() == epoch &&
                           r.cursor_begin() == cursor && r.batch() > 0;
    EXPECT_TRUE(continues) << "range " << r.ShortDebugString() << " does not continue step " << step << ", epoch "
                           << epoch << ", cursor " << cursor;
    if (!continues) return steps;
    for (int64_t s = r.step_begin(); s < r.step_end(); ++s) {
      const int64_t g = StepSamples(cursor, n, r.batch());
      EXPECT_GT(g, 0) << "step " << s << " runs past the end of epoch " << epoch;
      if (g <= 0) return steps;
      steps.push_back({s, epoch, cursor, g, r.batch(), r.generation(), r.world()});
      cursor += g;
      samples += g;
    }
    EXPECT_EQ(r.cursor_end(), cursor) << r.ShortDebugString();
    step = r.step_end();
    if (cursor == n) {
      ++epoch;
      cursor = 0;
    }
  }
  EXPECT_EQ(epoch, epochs) << "cursor " << cursor;
  EXPECT_EQ(cursor, 0);
  EXPECT_EQ(samples, epochs * n);
  return steps;
}

// For every step in the ledger, each rank of that step's generation must have trained
// on exactly its RankSpan of the epoch order (as its model recorded); counted over all
// steps, every record must have been trained on exactly once per epoch, and the samples
// must sum to epochs x n.
void ExpectEachRecordOncePerEpoch(const std::vector<LedgerStep>& steps,
                                  const std::map<int64_t, std::vector<Member*>>& by_generation, int64_t n,
                                  uint64_t seed, int epochs) {
  std::vector<std::vector<int>> seen(epochs, std::vector<int>(n, 0));
  std::map<int64_t, std::vector<uint32_t>> orders;
  int64_t trained = 0;
  for (const LedgerStep& s : steps) {
    auto it = by_generation.find(s.generation);
    ASSERT_NE(it, by_generation.end()) << "ledger names generation " << s.generation;
    const std::vector<Member*>& members = it->second;
    ASSERT_EQ(static_cast<int>(members.size()), s.world) << "generation " << s.generation;
    std::vector<uint32_t>& order = orders[s.epoch];
    if (order.empty()) order = EpochPermutation(n, seed, s.epoch);
    for (int r = 0; r < s.world; ++r) {
      const std::vector<int64_t>* got = members[r]->model->Recorded(s.generation, s.step);
      ASSERT_NE(got, nullptr) << "rank " << r << " of generation " << s.generation << " never ran step " << s.step;
      const Span span = RankSpan(s.cursor, n, s.batch, r, s.world);
      const std::vector<int64_t> want(order.begin() + span.begin, order.begin() + span.end);
      EXPECT_EQ(*got, want) << "generation " << s.generation << " step " << s.step << " rank " << r;
      for (int64_t rec : *got) {
        ASSERT_TRUE(rec >= 0 && rec < n) << rec;
        ++seen[s.epoch][rec];
      }
      trained += static_cast<int64_t>(got->size());
    }
  }
  EXPECT_EQ(trained, epochs * n);
  for (int e = 0; e < epochs; ++e) {
    int64_t wrong = 0, first = -1;
    for (int64_t i = 0; i < n; ++i)
      if (seen[e][i] != 1) {
        ++wrong;
        if (first < 0) first = i;
      }
    EXPECT_EQ(wrong, 0) << "epoch " << e << ": " << wrong << " records not trained exactly once, e.g. record "
                        << first << " (" << (first >= 0 ? seen[e][first] : 0) << " times)";
  }
}

// Every member holds the same ledger; checks it and returns its steps.
std::vector<LedgerStep> CheckLedger(const std::vector<Member*>& members,
                                    const std::map<int64_t, std::vector<Member*>>& by_generation,
                                    const JobSpec& spec) {
  const std::string l0 = members[0]->trainer->ledger().SerializeAsString();
  for (size_t r = 1; r < members.size(); ++r)
    EXPECT_EQ(members[r]->trainer->ledger().SerializeAsString(), l0) << "rank " << r << "'s ledger differs";
  std::vector<LedgerStep> steps = ExpandLedger(members[0]->trainer->ledger(), kN, spec.training().epochs());
  ExpectEachRecordOncePerEpoch(steps, by_generation, kN, spec.training().seed(), spec.training().epochs());
  return steps;
}

// The uninterrupted world-3 run of the same spec, seed and data: final parameters.
std::vector<float> ReferenceRun(const JobSpec& spec, const InMemoryDataset& data) {
  std::vector<std::unique_ptr<Member>> m;
  for (int i = 0; i < 3; ++i) m.push_back(NewMember(spec, data, spec.training().seed(), 0us));
  std::vector<Member*> all = {m[0].get(), m[1].get(), m[2].get()};
  for (Member* p : all)
    if (!p) return {};
  GenerationPlan plan;
  plan.sync_source = 0;
  GenerationRun run = RunGenerationThreads(all, plan);
  ExpectAllEnded(run, GenerationEnd::kCompleted);
  return Flat(*m[0]->model);
}

// The global batch is 24 in every generation, so the elastic run does the same
// mathematics as the uninterrupted one: each step's gradient is the mean over the same
// 24 records at the same parameters, with the same learning rate and momentum. Only
// the f32 summation order differs (each rank sums its share of the 24 rows, then the
// allreduce adds 2, 3 or 4 partial sums): ~1e-7 relative per step, compounded through
// momentum over 84 steps. 1e-4 of the largest weight bounds that with a wide margin,
// while a real divergence (a step skipped or repeated, a lost momentum, another batch)
// moves the weights by 1e-2 of their scale or more.
constexpr double kRelativeTolerance = 1e-4;

void ExpectCloseToReference(const std::vector<float>& got, const std::vector<float>& ref, const char* what) {
  ASSERT_EQ(got.size(), ref.size());
  const double scale = MaxAbs(ref), diff = MaxAbsDiff(got, ref);
  std::cout << what << ": max |param - uninterrupted| = " << diff << " (" << diff / scale
            << " of the largest weight, " << scale << ")\n";
  EXPECT_LE(diff, kRelativeTolerance * scale) << what;  // false for NaN too
}

TEST(TrainerElastic, WorldThreeThenTwoThenFourTrainsEachRecordOncePerEpoch) {
  SetBlasThreads(1);
  const InMemoryDataset data = IndexedData(7);
  const JobSpec spec = ElasticSpec();
  const uint64_t seed = spec.training().seed();
  std::vector<std::unique_ptr<Member>> m;
  for (int i = 0; i < 3; ++i) m.push_back(NewMember(spec, data, seed, kSlowStep));
  for (auto& p : m) ASSERT_TRUE(p);
  std::map<int64_t, std::vector<Member*>> gens;

  // Generation 1, world 3: rank 1 asks for a boundary once 20 steps are committed.
  gens[1] = {m[0].get(), m[1].get(), m[2].get()};
  GenerationPlan p1;
  p1.generation = 1;
  p1.sync_source = 0;
  p1.want_boundary = [](int rank, int64_t step) { return rank == 1 && step >= 20; };
  ExpectAllEnded(RunGenerationThreads(gens[1], p1), GenerationEnd::kBoundary);
  const int64_t b1 = ExpectSamePosition(gens[1]);
  EXPECT_GE(b1, 20);

  // Generation 2, world 2: old ranks 2 and 0 stay (now ranks 0 and 1); rank 1 leaves.
  gens[2] = {m[2].get(), m[0].get()};
  GenerationPlan p2;
  p2.generation = 2;
  p2.sync_source = 0;
  p2.want_boundary = [b1](int rank, int64_t step) { return rank == 0 && step >= b1 + 5; };
  ExpectAllEnded(RunGenerationThreads(gens[2], p2), GenerationEnd::kBoundary);
  const int64_t b2 = ExpectSamePosition(gens[2]);
  EXPECT_GE(b2, b1 + 5);

  // Generation 3, world 4: the two survivors and two joiners whose models start from
  // other weights; everyone takes rank 0's state.
  m.push_back(NewMember(spec, data, 1001, kSlowStep));
  m.push_back(NewMember(spec, data, 1002, kSlowStep));
  ASSERT_TRUE(m[3] && m[4]);
  EXPECT_FALSE(BitIdentical(Flat(*m[3]->model), Flat(*m[2]->model))) << "a joiner must need the sync";
  gens[3] = {m[2].get(), m[3].get(), m[0].get(), m[4].get()};
  GenerationPlan p3;
  p3.generation = 3;
  p3.sync_source = 0;
  ExpectAllEnded(RunGenerationThreads(gens[3], p3), GenerationEnd::kCompleted);
  const int64_t steps_per_epoch = StepsPerEpoch(kN, 24);
  EXPECT_EQ(ExpectSamePosition(gens[3]), kEpochs * steps_per_epoch);
  std::cout << "boundaries after steps " << b1 << " and " << b2 << " of " << kEpochs * steps_per_epoch << "\n";

  ExpectAllBitIdentical(gens[3]);
  std::vector<LedgerStep> steps = CheckLedger(gens[3], gens, spec);
  for (const LedgerStep& s : steps) {
    EXPECT_EQ(s.batch, 24) << "step " << s.step << ": the global batch is the first generation's";
    EXPECT_EQ(s.generation, s.step < b1 ? 1 : s.step < b2 ? 2 : 3) << "step " << s.step;
  }
  ExpectCloseToReference(Flat(*m[0]->model), ReferenceRun(spec, data), "3 -> 2 -> 4");
}

TEST(TrainerElastic, SurvivorsOfAFailedCommunicatorFinishFromTheFurthestRank) {
  SetBlasThreads(1);
  const InMemoryDataset data = IndexedData(8);
  const JobSpec spec = ElasticSpec();
  std::vector<std::unique_ptr<Member>> m;
  for (int i = 0; i < 3; ++i) m.push_back(NewMember(spec, data, spec.training().seed(), kSlowStep));
  for (auto& p : m) ASSERT_TRUE(p);
  std::map<int64_t, std::vector<Member*>> gens;

  // Rank 2's communicator is aborted from another thread after step 30, wherever its
  // training thread then is; it gives up and closes its connections, as a dying
  // process would.
  gens[1] = {m[0].get(), m[1].get(), m[2].get()};
  GenerationPlan p1;
  p1.generation = 1;
  p1.sync_source = 0;
  p1.abort_rank = 2;
  p1.abort_at_step = 30;
  GenerationRun g1 = RunGenerationThreads(gens[1], p1);
  ASSERT_NE(g1.aborted, Clock::time_point{}) << "the abort never fired: training ended first";
  ExpectAllEnded(g1, GenerationEnd::kCommFailed);
  for (int r = 0; r < 2; ++r) {
    const double after = std::chrono::duration<double>(g1.ranks[r].returned - g1.aborted).count();
    std::cout << "rank " << r << ": kCommFailed " << after << " s after the abort at step "
              << m[r]->trainer->position().step << ": " << g1.ranks[r].outcome.error.ToString() << "\n";
    EXPECT_LT(after, kCollectiveTimeoutS / 2) << "the failure must show promptly, not at the deadline";
  }
  const int64_t s0 = m[0]->trainer->position().step, s1 = m[1]->trainer->position().step;
  EXPECT_GE(std::min(s0, s1), 30);
  EXPECT_LE(std::abs(s0 - s1), 1) << "a survivor can be at most one committed step ahead";

  // The survivors regroup and take the state of the one that got furthest.
  gens[2] = {m[0].get(), m[1].get()};
  GenerationPlan p2;
  p2.generation = 2;
  p2.sync_source = s1 > s0 ? 1 : 0;
  ExpectAllEnded(RunGenerationThreads(gens[2], p2), GenerationEnd::kCompleted);
  EXPECT_EQ(ExpectSamePosition(gens[2]), kEpochs * StepsPerEpoch(kN, 24));
  ExpectAllBitIdentical(gens[2]);
  std::vector<LedgerStep> steps = CheckLedger(gens[2], gens, spec);
  for (const LedgerStep& s : steps) EXPECT_EQ(s.generation, s.step < std::max(s0, s1) ? 1 : 2) << s.step;
  ExpectCloseToReference(Flat(*m[0]->model), ReferenceRun(spec, data), "3 -> failure -> 2");
}

TEST(TrainerElastic, PerWorkerBatchFollowsTheWorldAndStillTilesEachEpoch) {
  SetBlasThreads(1);
  const InMemoryDataset data = IndexedData(9);
  JobSpec spec = ElasticSpec();
  spec.mutable_training()->set_elastic_batch("per_worker");
  std::vector<std::unique_ptr<Member>> m;
  for (int i = 0; i < 3; ++i) m.push_back(NewMember(spec, data, spec.training().seed(), kSlowStep));
  for (auto& p : m) ASSERT_TRUE(p);
  std::map<int64_t, std::vector<Member*>> gens;

  gens[1] = {m[0].get(), m[1].get(), m[2].get()};
  GenerationPlan p1;
  p1.generation = 1;
  p1.sync_source = 0;
  p1.want_boundary = [](int rank, int64_t step) { return rank == 2 && step >= 10; };
  ExpectAllEnded(RunGenerationThreads(gens[1], p1), GenerationEnd::kBoundary);
  const int64_t b1 = ExpectSamePosition(gens[1]);
  const TrainingPosition at = m[0]->trainer->position();

  gens[2] = {m[0].get(), m[1].get()};
  GenerationPlan p2;
  p2.generation = 2;
  p2.sync_source = 0;
  ExpectAllEnded(RunGenerationThreads(gens[2], p2), GenerationEnd::kCompleted);
  EXPECT_EQ(m[0]->trainer->GlobalBatch(2), 16);
  EXPECT_EQ(m[0]->trainer->GlobalBatch(3), 24);
  // The rest of the epoch, then whole epochs, at 8 x 2.
  const int64_t want_steps =
      b1 + StepsPerEpoch(kN - at.cursor, 16) + (kEpochs - at.epoch - 1) * StepsPerEpoch(kN, 16);
  EXPECT_EQ(ExpectSamePosition(gens[2]), want_steps);
  ExpectAllBitIdentical(gens[2]);
  std::vector<LedgerStep> steps = CheckLedger(gens[2], gens, spec);
  for (const LedgerStep& s : steps) {
    EXPECT_EQ(s.batch, s.generation == 1 ? 24 : 16) << "step " << s.step;
    EXPECT_EQ(s.world, s.generation == 1 ? 3 : 2) << "step " << s.step;
  }
}

TEST(TrainerElastic, SyncFromCarriesMomentumPositionAndLedger) {
  SetBlasThreads(1);
  const InMemoryDataset data = IndexedData(10);
  const JobSpec spec = ElasticSpec();
  auto a = NewMember(spec, data, spec.training().seed(), 0us);
  auto b = NewMember(spec, data, spec.training().seed(), 0us);
  auto joiner = NewMember(spec, data, 1001, 0us);
  ASSERT_TRUE(a && b && joiner);
  // A boundary asked for at every exchange ends each generation after its first step:
  // four one-step generations build up momentum on a and b.
  GenerationPlan one_step;
  one_step.want_boundary = [](int, int64_t) { return true; };
  for (int64_t g = 1; g <= 4; ++g) {
    one_step.generation = g;
    one_step.sync_source = g == 1 ? 0 : -1;
    ExpectAllEnded(RunGenerationThreads({a.get(), b.get()}, one_step), GenerationEnd::kBoundary);
    ASSERT_EQ(ExpectSamePosition({a.get(), b.get()}), g);
  }

  // The joiner takes a's state: position, global-batch reference, ledger, parameters.
  GenerationPlan sync;
  sync.generation = 5;
  sync.sync_source = 0;
  sync.train = false;
  for (const RankEnd& e : RunGenerationThreads({a.get(), joiner.get()}, sync).ranks)
    ASSERT_TRUE(e.status.ok()) << e.status.ToString();
  ExpectSamePosition({a.get(), joiner.get()});
  EXPECT_EQ(joiner->trainer->position().cursor, 4 * 16);
  EXPECT_EQ(joiner->trainer->GlobalBatch(4), 16) << "the first generation's world (2) fixes the global batch";
  EXPECT_EQ(joiner->trainer->ledger().SerializeAsString(), a->trainer->ledger().SerializeAsString());
  EXPECT_TRUE(BitIdentical(Flat(*joiner->model), Flat(*a->model)));

  // A control pair with a's parameters and position but no momentum (restored from a
  // snapshot built with a fresh optimizer): the step below must end elsewhere for it,
  // or the comparison that follows would prove nothing about the momentum.
  TrainerSnapshot no_momentum;
  SgdMomentum fresh(SgdOptions{}, a->model->num_parameters());
  BuildSnapshot(*a->model, fresh, nullptr, a->trainer->position(), 2, 0, &no_momentum);
  auto c = NewMember(spec, data, 2001, 0us);
  auto d = NewMember(spec, data, 2002, 0us);
  ASSERT_TRUE(c && d);
  ASSERT_TRUE(c->trainer->Restore(no_momentum, 2, 0).ok());
  ASSERT_TRUE(d->trainer->Restore(no_momentum, 2, 1).ok());

  // One more identical step on each pair.
  one_step.generation = 5;
  one_step.sync_source = -1;
  ExpectAllEnded(RunGenerationThreads({a.get(), joiner.get()}, one_step), GenerationEnd::kBoundary);
  ExpectAllEnded(RunGenerationThreads({c.get(), d.get()}, one_step), GenerationEnd::kBoundary);
  EXPECT_EQ(ExpectSamePosition({a.get(), joiner.get(), c.get(), d.get()}), 5);
  EXPECT_TRUE(BitIdentical(Flat(*joiner->model), Flat(*a->model)))
      << "the joiner's step differs from the survivor's: its momentum was not carried";
  const double without = MaxAbsDiff(Flat(*c->model), Flat(*a->model));
  std::cout << "a step without the momentum moves the weights " << without << " away\n";
  EXPECT_GT(without, 1e-5);
}

// Everyone died; two replacements resume from the latest checkpoint with the job's
// history (the coordinator's ledger): they keep the global batch of the four-worker
// job, instead of training the rest of it on a batch of two.
TEST(TrainerElastic, ARollbackToACheckpointWithFewerMembersKeepsTheJobsGlobalBatch) {
  SetBlasThreads(1);
  const InMemoryDataset data = IndexedData(12);
  const JobSpec spec = ElasticSpec();  // 8 per worker
  std::vector<std::unique_ptr<Member>> four;
  for (int r = 0; r < 4; ++r) four.push_back(NewMember(spec, data, spec.training().seed(), 0us));
  for (auto& m : four) ASSERT_TRUE(m);
  GenerationPlan two_steps;
  two_steps.sync_source = 0;
  two_steps.want_boundary = [](int, int64_t step) { return step >= 2; };
  ExpectAllEnded(RunGenerationThreads({four[0].get(), four[1].get(), four[2].get(), four[3].get()}, two_steps),
                 GenerationEnd::kBoundary);
  const int64_t step = ExpectSamePosition({four[0].get(), four[1].get(), four[2].get(), four[3].get()});
  ASSERT_GT(step, 0);
  const Ledger history = four[0]->trainer->ledger();
  ASSERT_GT(history.ranges_size(), 0);
  ASSERT_EQ(history.ranges(history.ranges_size() - 1).batch(), 32);
  TrainerSnapshot snap;
  SgdMomentum optimizer(SgdOptions{}, four[0]->model->num_parameters());
  BuildSnapshot(*four[0]->model, optimizer, nullptr, four[0]->trainer->position(), 4, 0, &snap);

  auto a = NewMember(spec, data, 3001, 0us);
  auto b = NewMember(spec, data, 3002, 0us);
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(a->trainer->Restore(snap, 2, 0, &history).ok());
  ASSERT_TRUE(b->trainer->Restore(snap, 2, 1, &history).ok());
  EXPECT_EQ(a->trainer->GlobalBatch(2), 32) << "the job's global batch (4 x 8), not the survivors' (2 x 8)";
  // Without the job's history (a checkpoint of another job named in the spec) the new
  // job's own first world decides.
  auto c = NewMember(spec, data, 3003, 0us);
  ASSERT_TRUE(c && c->trainer->Restore(snap, 2, 0).ok());
  EXPECT_EQ(c->trainer->GlobalBatch(2), 16);
  GenerationPlan one;
  one.generation = 2;
  one.want_boundary = [](int, int64_t) { return true; };
  ExpectAllEnded(RunGenerationThreads({a.get(), b.get()}, one), GenerationEnd::kBoundary);
  const Ledger after = a->trainer->ledger();
  EXPECT_EQ(after.ranges(after.ranges_size() - 1).batch(), 32);
  EXPECT_EQ(after.ranges(after.ranges_size() - 1).world(), 2);
}

// The job's last step committed, then a failure during the evaluation after it: the
// generation that follows has no step left to train, and evaluates that epoch before
// it reports the job complete (found by the chaos soak: the final accuracy was the
// previous epoch's, and the summary said one epoch fewer).
TEST(TrainerElastic, AnEvaluationAFailureInterruptedIsDoneByTheNextGeneration) {
  SetBlasThreads(1);
  const InMemoryDataset data = IndexedData(14);
  JobSpec spec = ElasticSpec();
  spec.mutable_training()->set_evaluate(true);
  auto trained = NewMember(spec, data, spec.training().seed(), 0us, &data);
  ASSERT_TRUE(trained);
  GenerationPlan all;
  all.sync_source = 0;
  ExpectAllEnded(RunGenerationThreads({trained.get()}, all), GenerationEnd::kCompleted);
  ASSERT_EQ(trained->trainer->epoch_accuracy().size(), size_t{kEpochs});
  // Its state at the last step, as the state source of a generation that failed in
  // the evaluation after it would hold it: the last epoch not yet evaluated.
  TrainerSnapshot snap;
  SgdMomentum optimizer(SgdOptions{}, trained->model->num_parameters());
  BuildSnapshot(*trained->model, optimizer, nullptr, trained->trainer->position(), 1, 0, &snap);
  ASSERT_EQ(snap.epoch, kEpochs);
  const Ledger history = trained->trainer->ledger();
  auto a = NewMember(spec, data, 4001, 0us, &data);
  auto b = NewMember(spec, data, 4002, 0us, &data);
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(a->trainer->Restore(snap, 2, 0, &history).ok());
  ASSERT_TRUE(b->trainer->Restore(snap, 2, 1, &history).ok());
  GenerationPlan last;
  last.generation = 2;
  GenerationRun run = RunGenerationThreads({a.get(), b.get()}, last);
  ExpectAllEnded(run, GenerationEnd::kCompleted);
  const JobResult& r = run.ranks[0].outcome.result;
  EXPECT_EQ(r.epochs(), kEpochs);
  EXPECT_EQ(r.steps(), snap.step) << "no step was trained again";
  ASSERT_GE(r.epoch_test_accuracy_size(), 1);
  EXPECT_DOUBLE_EQ(r.final_test_accuracy(), trained->trainer->epoch_accuracy().back())
      << "the same weights evaluated on the same test set";
}

}  // namespace
}  // namespace shoal
