// What connects the worker to checkpoint/: the checkpointer configured from the spec,
// the shard-info exchange between ranks, and loading the checkpoint to resume from.
// Ranks exchange shard infos through the rendezvous KV store (the coordinator's), not
// the communicator: the writer thread must not issue collectives concurrently with the
// training thread's gradient reductions (MPI would need them in the same order).
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "checkpoint/async_writer.h"
#include "checkpoint/reader.h"
#include "collectives/communicator.h"
#include "jobspec.pb.h"
#include "worker/trace.h"

namespace shoal {

GatherShardsFn MakeKvShardGather(KvStore* kv, const std::string& prefix, int rank, int world,
                                 std::chrono::milliseconds timeout);

struct CheckpointerSetup {
  std::string job_id;
  int rank = 0;
  int world = 1;
  KvStore* kv = nullptr;        // required when world > 1
  std::string kv_prefix;        // the generation's scope
  std::string parent_digest;    // the checkpoint resumed from
  CommitCallback on_commit;
  // Signed into every manifest (tests set the fields above positionally: add at the end).
  std::string lineage_digest;   // the generation's (Assignment.lineage_digest)
  std::string spec_digest;
  // The writer thread's shard exchange and commit go into the timeline trace (may be null).
  TraceRecorder* trace = nullptr;
};

// nullptr (and OK) when the spec has no checkpoint.dir.
StatusOr<std::unique_ptr<AsyncCheckpointer>> MakeCheckpointer(const JobSpec& spec, const CheckpointerSetup& setup);

// The trust store named by checkpoint.trust (public key files).
StatusOr<TrustStore> CheckpointTrust(const JobSpec& spec);

// Loads and verifies checkpoint.resume (a step or job directory). Refusals name the
// file and the reason; an unsigned or untrusted checkpoint needs checkpoint.allow_unsigned.
// With `own`, only that rank's rank state is read (what a worker process needs);
// without, every rank's (ranks sharing one loaded snapshot, as threads in tests).
// A checkpoint in the <dir>/<job>/step-<N> layout must hold a manifest for step N of
// job <job>; one older than the newest that verifies in its job directory (or reached
// through a turned-back `latest`) needs checkpoint.allow_rollback (LoadOptions).
// `registry_job`: the coordinator named the checkpoint, its registry's latest for this
// job (everyone had died); the manifest must be that job's, and the registry is what
// "newest" means then (newer directories it never recorded are logged, not refused).
StatusOr<LoadedCheckpoint> LoadResumeCheckpoint(const JobSpec& spec, std::optional<OwnRankState> own = std::nullopt,
                                                const std::string& registry_job = "");

}  // namespace shoal
