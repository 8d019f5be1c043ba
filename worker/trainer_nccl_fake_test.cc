// The elastic path over the NCCL backend, on a CPU: trainers (ranks as threads) on
// NcclCommunicators over the fake NCCL API. A regroup aborts every rank's communicator
// mid-training, then the survivors build new ones under the next generation's scope
// (so with a new unique id), take the state of the furthest rank and finish, with
// each epoch's records used exactly once.
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <random>
#include <thread>

#include "collectives/memory_kv_store.h"
#include "collectives/nccl/fake_nccl_api.h"
#include "collectives/nccl/nccl_communicator.h"
#include "spec/jobspec_loader.h"
#include "worker/models/mlp.h"
#include "worker/trainer.h"

namespace shoal {
namespace {

using nccl::NcclCommunicator;
using nccl::NcclOptions;
using nccl::testing::FakeNcclApi;


std::unique_ptr<NcclCommunicator> Build(const std::shared_ptr<FakeNcclApi>& api, KvStore* kv, const std::string& prefix,
                                        int rank, int size) {
  NcclOptions o;
  o.rank = rank;
  o.size = size;
  o.kv = kv;
  o.prefix = prefix;
  o.timeout = std::chrono::seconds(10);
  o.device = 0;
  auto c = NcclCommunicator::Create(o, api);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return c.ok() ? std::move(*c) : nullptr;
}

// Each epoch's positions [0, n) covered exactly once, steps contiguous from 0.
void ExpectExactlyOnce(const Ledger& l, int64_t n, int epochs) {
  int64_t step = 0;
  std::vector<std::vector<int>> used(epochs, std::vector<int>(n, 0));
  for (const LedgerRange& r : l.ranges()) {
    EXPECT_EQ(r.step_begin(), step);
    step = r.step_end();
    ASSERT_LT(r.epoch(), epochs);
    for (int64_t p = r.cursor_begin(); p < r.cursor_end(); ++p) ++used[r.epoch()][p];
  }
  for (int e = 0; e < epochs; ++e)
    for (int64_t p = 0; p < n; ++p) ASSERT_EQ(used[e][p], 1) << "epoch " << e << " position " << p;
}

TEST(TrainerOverNcclFake, RegroupAbortsThenRebuildsWithANewUniqueIdAndFinishes) {
  SetBlasThreads(1);
  const InMemoryDataset train = RandomDataset(600, 8, 4, 7);
  JobSpec spec = DefaultJobSpec();
  spec.mutable_model()->clear_layers();
  for (int w : {8, 16, 4}) spec.mutable_model()->add_layers(w);
  spec.mutable_training()->set_epochs(2);
  spec.mutable_training()->set_batch_per_worker(8);
  spec.mutable_training()->set_evaluate(false);
  spec.mutable_collectives()->set_timeout_s(10);

  auto api = std::make_shared<FakeNcclApi>();
  MemoryKvStore kv;
  constexpr int kWorld = 3;
  std::vector<std::unique_ptr<Model>> models(kWorld);
  std::vector<std::unique_ptr<Trainer>> trainers(kWorld);
  for (int r = 0; r < kWorld; ++r) {
    auto m = MakeMlp({8, 16, 4}, spec.training().seed());
    ASSERT_TRUE(m.ok());
    models[r] = std::move(*m);
    TrainerInputs in;
    in.spec = &spec;
    in.train = &train;
    auto t = Trainer::Create(in, models[r].get());
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    trainers[r] = std::move(*t);
  }

  // Generation 1: three ranks; past step 20 the "heartbeat" aborts every communicator,
  // as REGROUP_NOW does when a member dies.
  std::vector<std::unique_ptr<NcclCommunicator>> gen1(kWorld);
  {
    std::vector<std::thread> ts;
    for (int r = 0; r < kWorld; ++r) ts.emplace_back([&, r] { gen1[r] = Build(api, &kv, "job/gen-1", r, kWorld); });
    for (auto& t : ts) t.join();
  }
  for (auto& c : gen1) ASSERT_NE(c, nullptr);
  std::atomic<bool> aborted{false};
  std::vector<GenerationEnd> ends(kWorld);
  {
    std::vector<std::thread> ts;
    for (int r = 0; r < kWorld; ++r)
      ts.emplace_back([&, r] {
        ASSERT_TRUE(trainers[r]->SyncFrom(gen1[r].get(), 0).ok());
        TrainerHooks hooks;
        hooks.on_metrics = [&](const WorkerMetrics& m) {
          if (r == 0 && m.step() >= 20 && !aborted.exchange(true))
            for (auto& c : gen1) c->Abort();
        };
        auto out = trainers[r]->RunGeneration(gen1[r].get(), 1, nullptr, hooks);
        ASSERT_TRUE(out.ok()) << out.status().ToString();
        ends[r] = out->end;
      });
    for (auto& t : ts) t.join();
  }
  for (int r = 0; r < kWorld; ++r) EXPECT_EQ(ends[r], GenerationEnd::kCommFailed) << "rank " << r;
  const int inits_before = api->inits.load();
  gen1.clear();
  EXPECT_GE(api->aborts.load(), kWorld) << "an aborted NCCL communicator is aborted, not finalized";

  // Generation 2: ranks 0 and 1 survive; the state source is the furthest of them.
  const int source = trainers[1]->position().step > trainers[0]->position().step ? 1 : 0;
  std::vector<std::unique_ptr<NcclCommunicator>> gen2(2);
  {
    std::vector<std::thread> ts;
    for (int r = 0; r < 2; ++r) ts.emplace_back([&, r] { gen2[r] = Build(api, &kv, "job/gen-2", r, 2); });
    for (auto& t : ts) t.join();
  }
  for (auto& c : gen2) ASSERT_NE(c, nullptr);
  EXPECT_GT(api->inits.load(), inits_before);
  EXPECT_NE(*kv.Get(nccl::UniqueIdKey("job/gen-2"), std::chrono::seconds(1)),
            *kv.Get(nccl::UniqueIdKey("job/gen-1"), std::chrono::seconds(1)))
      << "each generation has its own unique id";
  {
    std::vector<std::thread> ts;
    for (int r = 0; r < 2; ++r)
      ts.emplace_back([&, r] {
        ASSERT_TRUE(trainers[r]->SyncFrom(gen2[r].get(), source).ok());
        auto out = trainers[r]->RunGeneration(gen2[r].get(), 2, nullptr, {});
        ASSERT_TRUE(out.ok()) << out.status().ToString();
        EXPECT_EQ(out->end, GenerationEnd::kCompleted);
      });
    for (auto& t : ts) t.join();
  }
  EXPECT_EQ(trainers[0]->position().step, trainers[1]->position().step);
  ExpectExactlyOnce(trainers[0]->ledger(), train.n, 2);
  for (size_t k = 0; k < models[0]->params().size(); ++k) {
    const ParamTensor& a = models[0]->params()[k];
    const ParamTensor& b = models[1]->params()[k];
    ASSERT_EQ(0, std::memcmp(a.data, b.data, a.numel * sizeof(float))) << a.name << " differs between the ranks";
  }
}

}  // namespace
}  // namespace shoal
