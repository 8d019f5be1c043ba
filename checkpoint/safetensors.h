// safetensors export, so the weights open in other tools: an 8-byte little-endian header
// length, a JSON header {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__":
// {...}}, then the raw tensor bytes. The reader exists for tests and `checkpoint export`.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "checkpoint/format.h"
#include "checkpoint/reader.h"
#include "common/status.h"

namespace shoal {

// The tensors an export writes, in order: the model's, plus with include_optimizer the
// "optim.*" and "codec.*" state, every rank's codec state (rank_tensors) included.
std::vector<const NamedTensor*> ExportedTensors(const TrainerSnapshot& snap, bool include_optimizer);

// Writes ExportedTensors of `ckpt` to out_path atomically (temp name, fsync, rename).
// __metadata__ records job, step, manifest digest, signer, spec and lineage digests, the
// layer order and the input scaling, plus `extra_metadata` (the lineage's answers, from
// shoalctl), all as strings (the format's rule).
Status ExportSafetensors(const LoadedCheckpoint& ckpt, const std::string& out_path, bool include_optimizer = false,
                         const std::map<std::string, std::string>& extra_metadata = {});

struct SafetensorsFile {
  std::map<std::string, std::string> metadata;
  std::vector<NamedTensor> tensors;  // in file order (by data offset)
};
// Parses a whole file's bytes; validates offsets (contiguous, in bounds, sized by dtype
// and shape). Never throws on hostile input.
StatusOr<SafetensorsFile> ParseSafetensors(std::string_view bytes);
StatusOr<SafetensorsFile> ReadSafetensors(const std::string& path);

}  // namespace shoal
