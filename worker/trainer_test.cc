// Trainer tests with ranks as threads over Gloo and an in-memory KV store:
// data parallelism must not change the mathematics (1 x 128 == 2 x 64), and training
// on real Fashion-MNIST must learn.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>

#include "checkpoint/job_dir.h"
#include "collectives/factory.h"
#include "collectives/memory_kv_store.h"
#include "common/file_util.h"
#include "common/signing.h"
#include "spec/jobspec_loader.h"
#include "worker/models/mlp.h"
#include "worker/checkpoint_glue.h"
#include "worker/trainer.h"
#include "worker/trainer_state.h"

namespace shoal {
namespace {


// Trains `world` ranks as threads; returns rank 0's final parameters and results.
struct RunOutput {
  std::vector<float> params;
  std::vector<JobResult> results;
};
RunOutput RunThreads(const JobSpec& spec, int world, const InMemoryDataset& train, const InMemoryDataset* test,
                     const TrainerSnapshot* resume = nullptr, const std::string& job_id = "job") {
  MemoryKvStore kv;
  static int run = 0;
  std::string prefix = "trainer-test-" + std::to_string(run++) + "/";
  RunOutput out;
  out.results.resize(world);
  std::vector<std::thread> threads;
  std::mutex mu;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      CommunicatorConfig cc{"gloo", r, world, &kv, prefix, std::chrono::seconds(30)};
      auto comm = MakeCommunicator(cc);
      ASSERT_TRUE(comm.ok()) << comm.status().ToString();
      std::vector<int> layers(spec.model().layers().begin(), spec.model().layers().end());
      auto model = MakeMlp(layers, spec.training().seed());
      ASSERT_TRUE(model.ok());
      CheckpointerSetup setup{job_id, r, world, &kv, prefix, "", nullptr};
      auto ckpt = MakeCheckpointer(spec, setup);
      ASSERT_TRUE(ckpt.ok()) << ckpt.status().ToString();
      TrainerInputs in;
      in.spec = &spec;
      in.train = &train;
      in.test = test;
      in.resume = resume;
      in.checkpointer = ckpt->get();
      in.job_id = job_id;
      auto result = Train(in, comm->get(), model->get(), {});
      ASSERT_TRUE(result.ok()) << result.status().ToString();
      std::lock_guard<std::mutex> l(mu);
      out.results[r] = *result;
      if (r == 0)
        for (auto& p : (*model)->params()) out.params.insert(out.params.end(), p.data, p.data + p.numel);
    });
  }
  for (auto& t : threads) t.join();
  return out;
}

TEST(Trainer, OneWorkerBatch128EqualsTwoWorkersBatch64) {
  SetBlasThreads(1);
  InMemoryDataset train = RandomDataset(1000, 20, 4, 1);
  JobSpec spec = DefaultJobSpec();
  spec.mutable_model()->clear_layers();
  for (int w : {20, 16, 4}) spec.mutable_model()->add_layers(w);
  spec.mutable_training()->set_epochs(2);
  spec.mutable_training()->set_evaluate(false);
  spec.mutable_training()->set_warmup_steps(3);

  spec.mutable_training()->set_batch_per_worker(128);
  RunOutput one = RunThreads(spec, 1, train, nullptr);
  spec.mutable_training()->set_batch_per_worker(64);
  RunOutput two = RunThreads(spec, 2, train, nullptr);

  ASSERT_EQ(one.results[0].steps(), 16);  // 2 epochs x ceil(1000 / 128)
  ASSERT_EQ(two.results[0].steps(), 16);
  ASSERT_EQ(one.params.size(), two.params.size());
  // The only difference is the summation order of per-sample gradients (one sgemm over
  // 128 rows vs two over 64, then a sum): f32 rounding of ~1e-7 relative per step,
  // amplified a little by 16 momentum steps. 1e-4 absolute on O(0.1) weights is far
  // below any real divergence, which shows up at the 1e-2 level after one step.
  double max_diff = 0;
  for (size_t i = 0; i < one.params.size(); ++i)
    max_diff = std::max<double>(max_diff, std::abs(one.params[i] - two.params[i]));
  EXPECT_LT(max_diff, 1e-4);
  // Bytes: the single worker sends nothing; two workers send gradients every step.
  EXPECT_EQ(one.results[0].bytes_sent_per_worker(), 0);
  EXPECT_GT(two.results[0].bytes_sent_per_worker(), 0);
}

TEST(Trainer, LearnsFashionMnistAboveChance) {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  if (!PathExists(dir)) GTEST_SKIP() << "dataset-fashion-mnist not installed";
  auto train = LoadFashionMnist(dir, "train");
  auto test = LoadFashionMnist(dir, "t10k");
  ASSERT_TRUE(train.ok() && test.ok());
  // A 6,000-record slice keeps the test fast; one epoch is enough to beat chance (10%).
  train->n = 6000;
  train->x.resize(6000 * 784);
  train->y.resize(6000);
  JobSpec spec = DefaultJobSpec();
  spec.mutable_training()->set_epochs(1);
  auto out = RunThreads(spec, 2, *train, &*test);
  EXPECT_GT(out.results[0].final_test_accuracy(), 0.6);
  EXPECT_EQ(out.results[0].final_test_accuracy(), out.results[1].final_test_accuracy()) << "ranks agree";
  EXPECT_EQ(out.results[0].world_size(), 2);
}

TEST(Trainer, RefusesModelThatDoesNotFitTheData) {
  InMemoryDataset train = RandomDataset(10, 5, 3, 2);
  JobSpec spec = DefaultJobSpec();  // layers start at 784
  MemoryKvStore kv;
  auto comm = MakeCommunicator(CommunicatorConfig{"gloo", 0, 1, &kv, "refuse/", std::chrono::seconds(5)});
  ASSERT_TRUE(comm.ok());
  auto model = MakeMlp({784, 10}, 1);
  TrainerInputs in;
  in.spec = &spec;
  in.train = &train;
  auto r = Train(in, comm->get(), model->get(), {});
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("5 features"), std::string::npos);
}

JobSpec SmallSpec() {
  JobSpec spec = DefaultJobSpec();
  spec.mutable_model()->clear_layers();
  for (int w : {20, 16, 4}) spec.mutable_model()->add_layers(w);
  spec.mutable_training()->set_epochs(2);
  spec.mutable_training()->set_batch_per_worker(32);
  spec.mutable_training()->set_evaluate(false);
  spec.mutable_training()->set_warmup_steps(3);
  return spec;
}

class TrainerCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (std::filesystem::temp_directory_path() / ("shoal-trainer-ckpt-" + std::to_string(::getpid()))).string();
    std::filesystem::remove_all(dir_);
    ASSERT_TRUE(WriteKeyPair(GenerateKeyPair(), dir_ + "/keys").ok());
    spec_ = SmallSpec();
    spec_.mutable_checkpoint()->set_dir(dir_ + "/ckpt");
    spec_.mutable_checkpoint()->set_every_steps(10);
    spec_.mutable_checkpoint()->set_keep_last(10);
    spec_.mutable_checkpoint()->set_sign_key(dir_ + "/keys/shoal.key");
    spec_.mutable_checkpoint()->add_trust(dir_ + "/keys/shoal.pub");
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
  JobSpec spec_;
};

// Uncompressed, and top-k with momentum correction, whose codec state (residuals and
// each rank's momentum) must travel in the checkpoint for the resumed run to match.
TEST_F(TrainerCheckpointTest, ResumeReproducesTheUninterruptedRunBitForBit) {
  InMemoryDataset train = RandomDataset(1000, 20, 4, 5);
  for (const std::string codec : {"none", "topk"}) {
    SCOPED_TRACE(codec);
    JobSpec spec = spec_;
    spec.mutable_collectives()->set_codec(codec);
    spec.mutable_collectives()->set_topk_ratio(0.05);
    spec.mutable_collectives()->set_topk_momentum_correction(true);
    const std::string job = "full-" + codec;
    RunOutput full = RunThreads(spec, 2, train, nullptr, nullptr, job);
    ASSERT_EQ(full.results[0].steps(), 32);  // 2 epochs x ceil(1000 / 64)
    EXPECT_EQ(full.results[0].checkpoints_saved(), 4);  // steps 10, 20, 30 and the end
    EXPECT_GT(full.results[0].checkpoint_final_save_seconds(), 0.0);  // the end's, synchronous
    // The codec's CPU time is part of the time the reductions took, on one thread each.
    const JobResult& r = full.results[0];
    if (codec == "topk") {
      EXPECT_GT(r.codec_compute_seconds(), 0.0);
    }
    EXPECT_LE(r.codec_compute_seconds(), r.comm_seconds() + 1e-3);
    ASSERT_TRUE(std::filesystem::exists(dir_ + "/ckpt/" + job + "/step-10/manifest.sig"));

    JobSpec resume = spec;
    resume.mutable_checkpoint()->set_resume(dir_ + "/ckpt/" + job + "/step-10");
    // Steps 20, 30 and 32 are newer: going back to step 10 is a rollback, refused unless
    // allowed, and then loaded with a warning naming both steps.
    auto refused = LoadResumeCheckpoint(resume);
    EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition) << refused.status().ToString();
    EXPECT_NE(refused.status().message().find("step 10 is older than step 32"), std::string::npos)
        << refused.status().ToString();
    resume.mutable_checkpoint()->set_allow_rollback(true);
    auto loaded = LoadResumeCheckpoint(resume);
    ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
    EXPECT_NE(loaded->rollback_warning.find("loading step 10 although step 32 is newer"), std::string::npos)
        << loaded->rollback_warning;
    EXPECT_TRUE(loaded->signature_verified);
    EXPECT_EQ(loaded->snapshot.step, 10);
    // Each rank wrote its own codec state to a file of its own; "none" has none.
    EXPECT_EQ(loaded->manifest.rank_states_size(), codec == "none" ? 0 : 2);
    RunOutput resumed = RunThreads(resume, 2, train, nullptr, &loaded->snapshot, "resumed-" + codec);
    EXPECT_EQ(resumed.results[0].steps(), 32);
    EXPECT_EQ(resumed.results[0].resumed_from_step(), 10);
    ASSERT_EQ(full.params.size(), resumed.params.size());
    EXPECT_EQ(0, std::memcmp(full.params.data(), resumed.params.data(), full.params.size() * sizeof(float)))
        << "resumed parameters differ from the uninterrupted run";
  }
}

size_t NumParameters(Model& m) {
  size_t n = 0;
  for (const ParamTensor& p : m.params()) n += p.numel;
  return n;
}

// A snapshot of another model is refused by name and shape before anything is applied.
TEST(TrainerState, RestoreRefusesAnotherModelAndChangesNothing) {
  auto saved = MakeMlp({20, 16, 4}, 1);
  auto other = MakeMlp({20, 8, 4}, 2);
  ASSERT_TRUE(saved.ok() && other.ok());
  SgdMomentum saved_opt(SgdOptions{}, NumParameters(**saved));
  SgdMomentum other_opt(SgdOptions{}, NumParameters(**other));
  TrainerSnapshot snap;
  BuildSnapshot(**saved, saved_opt, nullptr, TrainingPosition{7, 0, 224}, 1, 0, &snap);
  const std::vector<float> before((*other)->params()[0].data,
                                  (*other)->params()[0].data + (*other)->params()[0].numel);
  auto r = RestoreSnapshot(snap, **other, other_opt, nullptr, 1, 0);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("[16,20]"), std::string::npos) << r.status().ToString();  // saved shape
  EXPECT_NE(r.status().message().find("[8,20]"), std::string::npos) << r.status().ToString();   // the model's
  EXPECT_EQ(0, std::memcmp(before.data(), (*other)->params()[0].data, before.size() * sizeof(float)));
  // The same model restores, at the saved position.
  auto same = MakeMlp({20, 16, 4}, 3);
  SgdMomentum same_opt(SgdOptions{}, NumParameters(**same));
  auto pos = RestoreSnapshot(snap, **same, same_opt, nullptr, 1, 0);
  ASSERT_TRUE(pos.ok()) << pos.status().ToString();
  EXPECT_EQ(pos->step, 7);
  EXPECT_EQ(pos->cursor, 224);
  EXPECT_EQ(0, std::memcmp((*saved)->params()[0].data, (*same)->params()[0].data,
                           (*saved)->params()[0].numel * sizeof(float)));
}

TEST_F(TrainerCheckpointTest, ResumesAtAnotherWorldSizeAndRefusesAnUntrustedCheckpoint) {
  InMemoryDataset train = RandomDataset(1000, 20, 4, 6);
  RunThreads(spec_, 2, train, nullptr, nullptr, "two");
  JobSpec resume = spec_;
  resume.mutable_checkpoint()->set_resume(dir_ + "/ckpt/two");  // the job dir: follows `latest`
  resume.mutable_checkpoint()->clear_trust();
  auto untrusted = LoadResumeCheckpoint(resume);
  EXPECT_EQ(untrusted.status().code(), StatusCode::kPermissionDenied) << untrusted.status().ToString();
  resume.mutable_checkpoint()->set_resume(dir_ + "/ckpt/two/step-20");
  resume.mutable_checkpoint()->add_trust(dir_ + "/keys/shoal.pub");
  resume.mutable_checkpoint()->set_allow_rollback(true);  // steps 30 and 32 are newer
  auto loaded = LoadResumeCheckpoint(resume);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  // Step 20 of 2 x 32: epoch 1, cursor 256. One worker of batch 32 finishes the run.
  EXPECT_EQ(loaded->snapshot.epoch, 1);
  EXPECT_EQ(loaded->snapshot.cursor, 256);
  RunOutput one = RunThreads(resume, 1, train, nullptr, &loaded->snapshot, "one");
  EXPECT_EQ(one.results[0].steps(), 20 + (1000 - 256 + 31) / 32);
}

// The generation's rendezvous scope as the coordinator drops it when the generation
// ends: every access fails with kAborted once `dropped` is set.
class DroppableKv : public KvStore {
 public:
  explicit DroppableKv(KvStore* inner) : inner_(inner) {}
  Status Set(const std::string& key, const std::string& value) override {
    if (dropped) return Aborted("rendezvous scope was dropped (its generation ended)");
    return inner_->Set(key, value);
  }
  StatusOr<std::string> Get(const std::string& key, std::chrono::milliseconds timeout) override {
    if (dropped) return Aborted("rendezvous scope was dropped (its generation ended)");
    return inner_->Get(key, timeout);
  }
  std::atomic<bool> dropped{false};

 private:
  KvStore* inner_;
};

// A peer lost while the ranks agree on the final checkpoint ends the generation, not
// the job: RunGeneration reports a failed collective, and the next generation, with no
// step left to train, writes the final checkpoint (found by the chaos soak: a partition
// at the last step failed the whole job).
TEST_F(TrainerCheckpointTest, AFailureDuringTheFinalCheckpointEndsTheGenerationNotTheJob) {
  InMemoryDataset train = RandomDataset(600, 20, 4, 7);
  spec_.mutable_checkpoint()->set_every_steps(0);  // only the final save
  MemoryKvStore kv;
  DroppableKv scope(&kv);
  struct Rank {
    std::unique_ptr<Model> model;
    std::unique_ptr<Trainer> trainer;
    std::unique_ptr<AsyncCheckpointer> ckpt;
  };
  std::vector<Rank> ranks(2);
  for (int r = 0; r < 2; ++r) {
    std::vector<int> layers(spec_.model().layers().begin(), spec_.model().layers().end());
    auto model = MakeMlp(layers, spec_.training().seed());
    ASSERT_TRUE(model.ok());
    ranks[r].model = std::move(*model);
    TrainerInputs in;
    in.spec = &spec_;
    in.train = &train;
    in.job_id = "final";
    auto tr = Trainer::Create(in, ranks[r].model.get());
    ASSERT_TRUE(tr.ok()) << tr.status().ToString();
    ranks[r].trainer = std::move(*tr);
  }
  auto generation = [&](int64_t g, KvStore* ckpt_kv, std::vector<StatusOr<GenerationOutcome>>* outs) {
    const std::string prefix = "final/gen-" + std::to_string(g) + "/";
    std::vector<std::thread> threads;
    for (int r = 0; r < 2; ++r) {
      threads.emplace_back([&, r] {
        CommunicatorConfig cc{"gloo", r, 2, &kv, prefix, std::chrono::seconds(30)};
        auto comm = MakeCommunicator(cc);
        ASSERT_TRUE(comm.ok()) << comm.status().ToString();
        CheckpointerSetup setup{"final", r, 2, ckpt_kv, prefix, "", nullptr};
        auto ckpt = MakeCheckpointer(spec_, setup);
        ASSERT_TRUE(ckpt.ok() && *ckpt) << ckpt.status().ToString();
        ranks[r].ckpt = std::move(*ckpt);
        TrainerHooks hooks;
        hooks.on_metrics = [&](const WorkerMetrics& m) {
          if (m.step() > 0 && m.step() == m.total_steps()) scope.dropped = true;  // the last step
        };
        (*outs)[r] = ranks[r].trainer->RunGeneration(comm->get(), g, ranks[r].ckpt.get(), hooks);
        ranks[r].ckpt.reset();
      });
    }
    for (auto& t : threads) t.join();
  };
  std::vector<StatusOr<GenerationOutcome>> first(2, Internal("not run"));
  generation(1, &scope, &first);
  for (auto& o : first) {
    ASSERT_TRUE(o.ok()) << "the job failed: " << o.status().ToString();
    EXPECT_EQ(o->end, GenerationEnd::kCommFailed);
    EXPECT_NE(o->error.message().find("final checkpoint"), std::string::npos) << o->error.ToString();
  }
  const int64_t last = ranks[0].trainer->position().step;
  std::vector<StatusOr<GenerationOutcome>> second(2, Internal("not run"));
  generation(2, &kv, &second);
  for (auto& o : second) {
    ASSERT_TRUE(o.ok()) << o.status().ToString();
    EXPECT_EQ(o->end, GenerationEnd::kCompleted);
    EXPECT_EQ(o->result.steps(), last) << "no step trained again";
  }
  auto steps = ListCommittedSteps(spec_.checkpoint().dir() + "/final");
  ASSERT_TRUE(steps.ok()) << steps.status().ToString();
  ASSERT_FALSE(steps->empty());
  EXPECT_EQ(steps->back(), last);
}

}  // namespace
}  // namespace shoal
