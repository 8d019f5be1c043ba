// Checkpoint format: the host-side state model (TrainerSnapshot), how its tensors are
// packed into one logical byte stream that ranks write in slices, the names of files and
// directories, and the manifest parser that every reader (and the fuzzer) goes through.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "checkpoint.pb.h"
#include "common/status.h"

namespace shoal {

// 2 added per-rank state files (CheckpointRankState); version 1 manifests still load.
inline constexpr uint32_t kCheckpointFormatVersion = 2;
inline constexpr uint32_t kOldestReadableFormatVersion = 1;
inline constexpr char kManifestFile[] = "manifest.pb";
inline constexpr char kSignatureFile[] = "manifest.sig";
inline constexpr char kLatestFile[] = "latest";
inline constexpr char kCheckpointPredicateType[] = "https://shoal.dev/checkpoint/v1";

// A host copy of one tensor. `bytes` holds numel * DtypeSize(dtype) bytes, little-endian.
struct NamedTensor {
  std::string name;
  std::string dtype;  // "F32", ...
  std::vector<int64_t> shape;
  std::string bytes;
};

// Everything a trainer needs to resume. Data-parallel state is replicated, so every rank
// holds the same `tensors` and writes its slice of them; `rank_tensors` differ from rank
// to rank (a codec's residuals) and each rank writes its own to a file of its own, so no
// rank needs another's. Names carry the rank ("codec.state.<r>") and are unique across
// all of them. A loaded snapshot holds every rank's rank_tensors, in rank order.
struct TrainerSnapshot {
  std::string job_id;
  int64_t step = 0;
  int64_t epoch = 0;
  int64_t cursor = 0;
  std::string rng_state;
  std::vector<NamedTensor> tensors;       // params, "optim.*" (replicated)
  std::vector<NamedTensor> rank_tensors;  // "codec.state.<rank>" (this rank's own)
  std::string spec_digest;
  std::string codec;
  int world_size = 1;
};

// Bytes per element of a safetensors dtype name; 0 when unknown.
size_t DtypeSize(std::string_view dtype);
// numel * element size; refuses unknown dtypes, negative dims and overflow.
StatusOr<uint64_t> TensorByteLength(std::string_view dtype, const std::vector<int64_t>& shape);

// "step-<N>", and the inverse that accepts only committed names (no ".tmp-", no sign).
std::string StepDirName(int64_t step);
std::optional<int64_t> ParseStepDirName(std::string_view name);
std::string ShardFileName(int rank, int world);
// "rank-<r>-of-<W>.bin": rank r's rank_tensors.
std::string RankStateFileName(int rank, int world);
// Staging name "step-<N>.tmp-<nonce>"; the nonce is equal on every rank of one run.
std::string StagingDirName(int64_t step, const std::string& nonce);

// [begin, end) of the logical stream that `rank` of `world` writes: equal slices, the
// remainder spread over the first ranks.
struct ByteRange {
  uint64_t begin = 0;
  uint64_t end = 0;
  uint64_t size() const { return end - begin; }
};
ByteRange SliceForRank(uint64_t total_bytes, int rank, int world);

// Manifest with trainer state and the tensor table (offsets into the concatenation of
// the tensors' bytes, in order) but no shards. Checks every tensor's size against its
// dtype and shape, and that names are unique.
StatusOr<CheckpointManifest> BuildManifest(const TrainerSnapshot& snap);
uint64_t TotalBytes(const TrainerSnapshot& snap);
// The table of `rank`'s rank_tensors (offsets into its rank file, shard = rank) with the
// file's name and length; the writer adds the digest. Checks sizes and names like
// BuildManifest.
StatusOr<CheckpointRankState> BuildRankState(const std::vector<NamedTensor>& rank_tensors, int rank, int world);
// Zero-copy views of bytes [range) of the concatenated tensors.
std::vector<std::string_view> ViewRange(const TrainerSnapshot& snap, ByteRange range);

// The manifest (no shards) plus the concatenated bytes, for callers that want one blob
// (the multi-rank worker slices it with SliceForRank).
struct SerializedSnapshot {
  CheckpointManifest manifest;
  std::string bytes;
};
StatusOr<SerializedSnapshot> SerializeSnapshot(const TrainerSnapshot& snap);

// Deterministic serialization, so equal manifests have equal digests.
std::string SerializeManifest(const CheckpointManifest& manifest);
// Parses and validates hostile bytes: format version, safe shard names, a tensor table
// that tiles the shards exactly (in order, no gaps or overlaps) with sizes matching
// dtype x shape, and rank states (none, or one per rank, each tiled the same way).
// Never throws.
StatusOr<CheckpointManifest> ParseManifest(std::string_view bytes);

// "<code version>": the project version and git commit recorded at configure time.
std::string CodeVersion();
// Versions of the libraries this binary links (protobuf, OpenSSL, libsodium, compiler);
// the worker adds NCCL, CUDA, MPI and Gloo.
std::map<std::string, std::string> LinkedDependencyVersions();

}  // namespace shoal
