// Checkpoint wiring for the worker.
#include "worker/checkpoint_glue.h"

#include <atomic>

#include "checkpoint/writer.h"
#include "common/sha256.h"
#include "common/signing.h"

namespace shoal {

GatherShardsFn MakeKvShardGather(KvStore* kv, const std::string& prefix, int rank, int world,
                                 std::chrono::milliseconds timeout) {
  auto seq = std::make_shared<std::atomic<int64_t>>(0);
  return [=](const ShardInfo& mine) -> StatusOr<std::vector<ShardInfo>> {
    // Every rank calls this once per save, in save order, so the sequence agrees.
    std::string base = prefix + "ckpt-shards/" + std::to_string((*seq)++) + "/";
    RETURN_IF_ERROR(kv->Set(base + std::to_string(rank), EncodeShardInfo(mine)));
    std::vector<ShardInfo> all;
    for (int r = 0; r < world; ++r) {
      ASSIGN_OR_RETURN(std::string bytes, kv->Get(base + std::to_string(r), timeout));
      ASSIGN_OR_RETURN(ShardInfo info, DecodeShardInfo(bytes));
      all.push_back(std::move(info));
    }
    return all;
  };
}

StatusOr<std::unique_ptr<AsyncCheckpointer>> MakeCheckpointer(const JobSpec& spec, const CheckpointerSetup& setup) {
  const CheckpointSpec& c = spec.checkpoint();
  if (c.dir().empty()) return std::unique_ptr<AsyncCheckpointer>();
  AsyncCheckpointerOptions o;
  o.job_dir = c.dir() + "/" + setup.job_id;
  o.sign_key_path = c.sign_key();
  o.retention.keep_last = c.keep_last();
  o.retention.keep_every_steps = int64_t{c.keep_every()} * std::max(1, c.every_steps());
  o.rank = setup.rank;
  o.world = setup.world;
  o.is_leader = setup.rank == 0;
  if (setup.world > 1) {
    if (!setup.kv) return InvalidArgument("checkpoints at world size > 1 need the rendezvous store");
    o.gather = MakeKvShardGather(setup.kv, setup.kv_prefix, setup.rank, setup.world,
                                 std::chrono::milliseconds(static_cast<int64_t>(spec.collectives().timeout_s() * 1000)));
  }
  // The staging nonce must be equal on every rank and unique per run: the generation's
  // KV scope is both.
  o.nonce = setup.kv_prefix.empty() ? "" : Sha256Hex(setup.kv_prefix).substr(0, 12);
  o.parent_digest = setup.parent_digest;
  o.lineage_digest = setup.lineage_digest;
  o.spec_digest = setup.spec_digest;
  o.on_commit = setup.on_commit;
  if (TraceRecorder* trace = setup.trace) {
    // Both run on the writer thread, off the training thread's path: the trace shows
    // how long a save takes to become a checkpoint, beside the stall it cost training.
    if (o.gather) {
      o.gather = [trace, gather = std::move(o.gather)](const ShardInfo& mine) {
        ScopedSpan span(trace, "checkpoint shard exchange", "checkpoint", "checkpoint writer");
        return gather(mine);
      };
    }
    if (o.on_commit) {
      o.on_commit = [trace, commit = std::move(o.on_commit)](const CommitInfo& info) {
        ScopedSpan span(trace, "checkpoint register", "checkpoint", "checkpoint writer");
        commit(info);
      };
    }
  }
  return AsyncCheckpointer::Create(std::move(o));
}

StatusOr<TrustStore> CheckpointTrust(const JobSpec& spec) {
  TrustStore trust;
  for (const std::string& path : spec.checkpoint().trust())
    RETURN_IF_ERROR(trust.AddFile(path).WithContext("checkpoint.trust"));
  return trust;
}

StatusOr<LoadedCheckpoint> LoadResumeCheckpoint(const JobSpec& spec, std::optional<OwnRankState> own,
                                                const std::string& registry_job) {
  ASSIGN_OR_RETURN(TrustStore trust, CheckpointTrust(spec));
  LoadOptions o;
  o.allow_unsigned = spec.checkpoint().allow_unsigned();
  o.own = own;
  o.job_from_directory = true;
  o.expected_job = registry_job;
  o.resume = true;
  o.chosen_by_registry = !registry_job.empty();
  o.allow_rollback = spec.checkpoint().allow_rollback();
  return LoadCheckpoint(spec.checkpoint().resume(), trust, o);
}

}  // namespace shoal
