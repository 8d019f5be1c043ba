// Snapshot building and restoring for the trainer.
#include "worker/trainer_state.h"

#include <algorithm>
#include <cstring>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "checkpoint/async_writer.h"
#include "common/log.h"

namespace shoal {

namespace {
constexpr char kOptimizerTensor[] = "optim.sgd";
// codec.state.<rank>; a lone "codec.state" is the format before per-rank states.
constexpr char kCodecTensorPrefix[] = "codec.state.";
constexpr char kOldCodecTensor[] = "codec.state";

NamedTensor* Slot(TrainerSnapshot* snap, size_t i) {
  if (snap->tensors.size() <= i) snap->tensors.resize(i + 1);
  return &snap->tensors[i];
}

void SetBytes(NamedTensor* t, const std::string& name, const std::string& dtype, std::vector<int64_t> shape,
              const void* data, size_t bytes) {
  t->name = name;
  t->dtype = dtype;
  t->shape = std::move(shape);
  AssignBytes(&t->bytes, data, bytes);  // big tensors on several threads, streaming stores
}
}  // namespace

void BuildSnapshot(Model& model, const SgdMomentum& optimizer, const GradientCodec* codec, const TrainingPosition& pos,
                   int world_size, int rank, TrainerSnapshot* snap) {
  snap->step = pos.step;
  snap->epoch = pos.epoch;
  snap->cursor = pos.cursor;
  snap->rng_state = "";  // every random choice derives from (seed, epoch, step): nothing to save
  snap->world_size = world_size;
  snap->codec = codec ? codec->name() : "none";
  size_t i = 0;
  for (const ParamTensor& p : model.params())
    SetBytes(Slot(snap, i++), p.name, "F32", p.shape, p.data, p.numel * sizeof(float));
  // The optimizer's state goes straight into the buffer: no temporary the model's size.
  NamedTensor* opt = Slot(snap, i++);
  const std::string header = optimizer.StateHeader();
  const std::vector<float>& momentum = optimizer.momentum_buffer();
  opt->name = kOptimizerTensor;
  opt->dtype = "U8";
  opt->bytes.resize(optimizer.StateBytes());
  opt->shape = {static_cast<int64_t>(opt->bytes.size())};
  std::memcpy(opt->bytes.data(), header.data(), header.size());
  CopyBytes(opt->bytes.data() + header.size(), momentum.data(), momentum.size() * sizeof(float));
  snap->tensors.resize(i);
  // Every rank has one when the codec is not "none" (the same on every rank), so either
  // all ranks write a rank state or none does.
  if (!codec || codec->name() == "none") {
    snap->rank_tensors.clear();
    return;
  }
  snap->rank_tensors.resize(1);
  NamedTensor& cs = snap->rank_tensors[0];
  cs.name = kCodecTensorPrefix + std::to_string(rank);
  cs.dtype = "U8";
  codec->SaveStateInto(&cs.bytes);  // straight into the buffer, sized once
  cs.shape = {static_cast<int64_t>(cs.bytes.size())};
}

std::vector<size_t> SnapshotTensorBytes(Model& model, const SgdMomentum& optimizer) {
  std::vector<size_t> sizes;
  for (const ParamTensor& p : model.params()) sizes.push_back(p.numel * sizeof(float));
  sizes.push_back(optimizer.StateBytes());
  return sizes;
}

StatusOr<TrainingPosition> RestoreSnapshot(const TrainerSnapshot& snap, Model& model, SgdMomentum& optimizer,
                                           GradientCodec* codec, int world_size, int rank) {
  auto& params = model.params();
  const NamedTensor* opt = nullptr;
  const NamedTensor* codec_state = nullptr;
  std::vector<const NamedTensor*> by_param(params.size(), nullptr);
  const std::string mine = kCodecTensorPrefix + std::to_string(rank);
  for (const NamedTensor& t : snap.rank_tensors) {
    if (t.name == mine) codec_state = &t;
    else if (t.name.rfind(kCodecTensorPrefix, 0) != 0)
      return InvalidArgument("checkpoint rank tensor '" + t.name + "' is not a codec state");
  }
  for (const NamedTensor& t : snap.tensors) {
    if (t.name == kOptimizerTensor) { opt = &t; continue; }
    if (t.name == mine) { codec_state = &t; continue; }  // format 1 kept every rank's here
    if (t.name == kOldCodecTensor || t.name.rfind(kCodecTensorPrefix, 0) == 0) continue;  // not ours
    size_t i = 0;
    while (i < params.size() && params[i].name != t.name) ++i;
    if (i == params.size()) return InvalidArgument("checkpoint tensor '" + t.name + "' does not exist in this model");
    if (t.dtype != "F32" || t.shape != params[i].shape || t.bytes.size() != params[i].numel * sizeof(float))
      return InvalidArgument(fmt::format("checkpoint tensor '{}' is {}[{}], the model's is F32[{}] (was it saved from "
                                         "another model.layers?)",
                                         t.name, t.dtype, fmt::join(t.shape, ","), fmt::join(params[i].shape, ",")));
    by_param[i] = &t;
  }
  for (size_t i = 0; i < params.size(); ++i)
    if (!by_param[i]) return InvalidArgument("checkpoint lacks model tensor '" + params[i].name + "'");
  if (!opt) return InvalidArgument("checkpoint lacks the optimizer state (" + std::string(kOptimizerTensor) + ")");
  // Everything checked: now apply.
  RETURN_IF_ERROR(optimizer.LoadState(opt->bytes).WithContext("optimizer state"));
  for (size_t i = 0; i < params.size(); ++i) std::memcpy(params[i].data, by_param[i]->bytes.data(), by_param[i]->bytes.size());
  if (codec) {
    if (snap.world_size == world_size && snap.codec == codec->name() && codec_state) {
      RETURN_IF_ERROR(codec->LoadState(codec_state->bytes).WithContext("codec state"));
    } else {
      codec->ResetState();
      if (codec->name() != "none")
        SHOAL_LOG_INFO("codec state reset: saved with codec {} at world size {}, now {} at {}", snap.codec,
                       snap.world_size, codec->name(), world_size);
    }
  }
  return TrainingPosition{snap.step, snap.epoch, snap.cursor};
}

}  // namespace shoal
