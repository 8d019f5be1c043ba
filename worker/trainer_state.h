// The trainer's resumable state <-> checkpoint snapshots. Parameters, the optimizer's
// momentum and the codec's residuals become named tensors; the data position is
// (epoch, cursor) plus the step. Restoring checks every name and shape first, so a
// checkpoint of another model is refused by name, never half-applied.
#pragma once

#include <string>

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

// Fills `snap` (reusing its buffers) from the live state. The codec's state (residuals
// differ per rank) becomes this rank's rank tensor codec.state.<rank>, written to the
// rank's own file: saving it needs nothing from the other ranks.
void BuildSnapshot(Model& model, const SgdMomentum& optimizer, const GradientCodec* codec, const TrainingPosition& pos,
                   int world_size, int rank, TrainerSnapshot* snap);

// Byte sizes of the snapshot's tensors (the parameters, then the optimizer state), what
// AsyncCheckpointer::Prewarm needs before the first save; the codec's state, a rank
// tensor that grows as buckets first pass through the codec, is sized separately.
std::vector<size_t> SnapshotTensorBytes(Model& model, const SgdMomentum& optimizer);

// Applies a loaded snapshot; rank `rank` takes its own codec state. A codec's residuals
// are per rank and only meaningful at the world size they were saved at: at another
// world size (or from a checkpoint that kept one state for all ranks) they are reset
// (documented in docs/ARCHITECTURE.md). Rank states are found among rank_tensors (format
// 2) or tensors (format 1, which gathered them). Returns where training resumes.
StatusOr<TrainingPosition> RestoreSnapshot(const TrainerSnapshot& snap, Model& model, SgdMomentum& optimizer,
                                           GradientCodec* codec, int world_size, int rank);

}  // namespace shoal
