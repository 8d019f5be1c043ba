// The trainer's resumable state <-> checkpoint snapshots. Parameters, the optimizer's
// momentum and the codec's residuals become named tensors; the data position is
// (epoch, cursor) plus the step. Restoring checks every name and shape first, so a
// checkpoint of another model is refused by name, never half-applied.
#pragma once

#include <string>
#include <string_view>

#include "checkpoint/format.h"
#include "collectives/compression/codec.h"
#include "worker/models/model.h"
#include "worker/optim/sgd.h"

namespace shoal {

struct TrainingPosition {
  int64_t step = 0;    // steps completed
  int64_t epoch = 0;   // epoch the next step belongs to
  int64_t cursor = 0;  // samples of that epoch already consumed
};

// Every rank's codec state (residuals differ per rank), gathered so that all ranks
// build the same snapshot: a checkpoint's shards are byte ranges of ONE serialized
// state, each written by its rank. The buffers are kept from one checkpoint to the
// next: residuals are the model's size, and fresh copies of them page-faulted on the
// training thread at every save (with PowerSGD they were most of the stall).
class CodecStateGather {
 public:
  // Collective: every rank calls it at the same step.
  Status Gather(const GradientCodec* codec, Communicator* comm, const CollectiveOptions& opts);
  // Rank r's state, valid until the next Gather.
  const std::vector<std::string_view>& states() const { return views_; }

 private:
  std::string mine_, all_;
  std::vector<uint64_t> sizes_;
  std::vector<std::string_view> views_;
};

// Fills `snap` (reusing its buffers) from the live state; `codec_states` (one per
// rank, from CodecStateGather) become tensors codec.state.<rank>.
void BuildSnapshot(Model& model, const SgdMomentum& optimizer, const GradientCodec* codec,
                   const std::vector<std::string_view>& codec_states, const TrainingPosition& pos, int world_size,
                   TrainerSnapshot* snap);

// Byte sizes of the snapshot's first tensors (the parameters, then the optimizer
// state), what AsyncCheckpointer::Prewarm needs before the first save; the codec
// states that follow are sized by the first save.
std::vector<size_t> SnapshotTensorBytes(Model& model, const SgdMomentum& optimizer);

// Applies a loaded snapshot; rank `rank` takes its own codec state. A codec's residuals
// are per rank and only meaningful at the world size they were saved at: at another
// world size (or from a checkpoint that kept one state for all ranks) they are reset
// (documented in docs/ARCHITECTURE.md). Returns where training resumes.
StatusOr<TrainingPosition> RestoreSnapshot(const TrainerSnapshot& snap, Model& model, SgdMomentum& optimizer,
                                           GradientCodec* codec, int world_size, int rank);

}  // namespace shoal
