// Checkpoint format helpers: packing, names, and the hostile-input manifest parser.
// ParseManifest is the single gate between manifest bytes on disk and the reader, so
// every size and offset is checked here, with overflow in mind.
#include "checkpoint/format.h"

#include <openssl/crypto.h>
#include <sodium.h>

#include <algorithm>
#include <charconv>
#include <climits>
#include <functional>
#include <set>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/stubs/common.h>

#ifndef SHOAL_CODE_VERSION
#define SHOAL_CODE_VERSION "unknown"
#endif

namespace shoal {

size_t DtypeSize(std::string_view dtype) {
  static const std::map<std::string_view, size_t> kSizes = {
      {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4},
      {"I16", 2}, {"I8", 1},  {"U8", 1},  {"BOOL", 1}, {"U16", 2}, {"U32", 4}, {"U64", 8}};
  auto it = kSizes.find(dtype);
  return it == kSizes.end() ? 0 : it->second;
}

StatusOr<uint64_t> TensorByteLength(std::string_view dtype, const std::vector<int64_t>& shape) {
  uint64_t size = DtypeSize(dtype);
  if (size == 0) return InvalidArgument("unknown dtype '" + std::string(dtype) + "'");
  for (int64_t d : shape) {
    if (d < 0) return InvalidArgument("negative dimension " + std::to_string(d));
    if (d != 0 && size > UINT64_MAX / static_cast<uint64_t>(d)) return InvalidArgument("tensor size overflows");
    size *= static_cast<uint64_t>(d);
  }
  return size;
}

std::string StepDirName(int64_t step) { return "step-" + std::to_string(step); }

std::optional<int64_t> ParseStepDirName(std::string_view name) {
  if (name.substr(0, 5) != "step-" || name.size() == 5 || name.size() > 5 + 19) return std::nullopt;
  std::string_view digits = name.substr(5);
  // Only the canonical spelling, so "step-007" and "step-7" can never both be committed.
  if (digits.size() > 1 && digits[0] == '0') return std::nullopt;
  for (char c : digits)
    if (c < '0' || c > '9') return std::nullopt;  // from_chars would take "-1"
  int64_t v = 0;
  auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
  if (ec != std::errc() || ptr != digits.data() + digits.size()) return std::nullopt;
  return v;
}

std::string ShardFileName(int rank, int world) {
  return "shard-" + std::to_string(rank) + "-of-" + std::to_string(world) + ".bin";
}

std::string RankStateFileName(int rank, int world) {
  return "rank-" + std::to_string(rank) + "-of-" + std::to_string(world) + ".bin";
}

std::string StagingDirName(int64_t step, const std::string& nonce) { return StepDirName(step) + ".tmp-" + nonce; }

ByteRange SliceForRank(uint64_t total_bytes, int rank, int world) {
  if (world <= 0 || rank < 0 || rank >= world) return {};
  uint64_t w = static_cast<uint64_t>(world), r = static_cast<uint64_t>(rank);
  uint64_t base = total_bytes / w, extra = total_bytes % w;
  uint64_t begin = r * base + std::min(r, extra);
  return {begin, begin + base + (r < extra ? 1 : 0)};
}

uint64_t TotalBytes(const TrainerSnapshot& snap) {
  uint64_t total = 0;
  for (const auto& t : snap.tensors) total += t.bytes.size();
  return total;
}

namespace {
// Appends `tensors` to a table with offsets from 0 in order; refuses empty or repeated
// names (across every table sharing `names`) and sizes that disagree with dtype x shape.
Status AppendTensorTable(const std::vector<NamedTensor>& tensors, int shard, std::set<std::string>* names,
                         google::protobuf::RepeatedPtrField<CheckpointTensor>* table) {
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    if (t.name.empty()) return InvalidArgument("a tensor has an empty name");
    if (!names->insert(t.name).second) return InvalidArgument("tensor '" + t.name + "' appears twice");
    auto len = TensorByteLength(t.dtype, t.shape);
    if (!len.ok()) return len.status().WithContext("tensor '" + t.name + "'");
    if (*len != t.bytes.size())
      return InvalidArgument("tensor '" + t.name + "' has " + std::to_string(t.bytes.size()) + " bytes; " +
                             t.dtype + " of its shape needs " + std::to_string(*len));
    CheckpointTensor* e = table->Add();
    e->set_name(t.name);
    e->set_dtype(t.dtype);
    for (int64_t d : t.shape) e->add_shape(d);
    e->set_shard(shard);
    e->set_offset(offset);
    e->set_length(t.bytes.size());
    offset += t.bytes.size();
  }
  return OkStatus();
}
}  // namespace

StatusOr<CheckpointManifest> BuildManifest(const TrainerSnapshot& snap) {
  CheckpointManifest m;
  m.set_format_version(kCheckpointFormatVersion);
  m.set_job_id(snap.job_id);
  m.set_step(snap.step);
  m.set_epoch(snap.epoch);
  m.set_cursor(snap.cursor);
  m.set_rng_state(snap.rng_state);
  m.set_spec_digest(snap.spec_digest);
  m.set_codec(snap.codec);
  m.set_world_size(snap.world_size);
  std::set<std::string> names;
  RETURN_IF_ERROR(AppendTensorTable(snap.tensors, 0, &names, m.mutable_tensors()));
  // This rank's own tensors are tabled by its rank state; their names must not collide.
  RETURN_IF_ERROR(AppendTensorTable(snap.rank_tensors, 0, &names, CheckpointRankState().mutable_tensors()));
  return m;
}

StatusOr<CheckpointRankState> BuildRankState(const std::vector<NamedTensor>& rank_tensors, int rank, int world) {
  if (world < 1 || rank < 0 || rank >= world)
    return InvalidArgument("rank " + std::to_string(rank) + " of world " + std::to_string(world));
  CheckpointRankState state;
  std::set<std::string> names;
  RETURN_IF_ERROR(AppendTensorTable(rank_tensors, rank, &names, state.mutable_tensors()));
  uint64_t length = 0;
  for (const auto& t : rank_tensors) length += t.bytes.size();
  state.set_rank(rank);
  state.set_file(RankStateFileName(rank, world));
  state.set_length(length);
  return state;
}

std::vector<std::string_view> ViewRange(const TrainerSnapshot& snap, ByteRange range) {
  std::vector<std::string_view> out;
  uint64_t pos = 0;
  for (const auto& t : snap.tensors) {
    uint64_t b = pos, e = pos + t.bytes.size();
    pos = e;
    uint64_t lo = std::max(b, range.begin), hi = std::min(e, range.end);
    if (lo < hi) out.emplace_back(t.bytes.data() + (lo - b), hi - lo);
  }
  return out;
}

StatusOr<SerializedSnapshot> SerializeSnapshot(const TrainerSnapshot& snap) {
  SerializedSnapshot out;
  ASSIGN_OR_RETURN(out.manifest, BuildManifest(snap));
  out.bytes.reserve(TotalBytes(snap));
  for (const auto& t : snap.tensors) out.bytes.append(t.bytes);
  return out;
}

std::string SerializeManifest(const CheckpointManifest& manifest) {
  std::string out;
  google::protobuf::io::StringOutputStream raw(&out);
  {
    google::protobuf::io::CodedOutputStream coded(&raw);
    coded.SetSerializationDeterministic(true);  // map order fixed, so digests are stable
    manifest.SerializeToCodedStream(&coded);
  }
  return out;
}

namespace {
bool IsLowerHex64(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}
}  // namespace

namespace {
// Tensors tile [0, total) in table order, as the writer packs them: no gaps, no overlaps,
// so a reader can scatter file bytes straight into tensor buffers. `shard_of` names the
// file a tensor's first byte lies in.
Status CheckTiling(const google::protobuf::RepeatedPtrField<CheckpointTensor>& tensors, uint64_t total,
                   const std::function<int(uint64_t)>& shard_of, std::set<std::string>* names) {
  uint64_t next = 0;
  for (const auto& t : tensors) {
    if (t.name().empty() || !names->insert(t.name()).second)
      return InvalidArgument("tensor name '" + t.name() + "' is empty or repeated");
    std::vector<int64_t> shape(t.shape().begin(), t.shape().end());
    auto len = TensorByteLength(t.dtype(), shape);
    if (!len.ok()) return len.status().WithContext("tensor '" + t.name() + "'");
    if (*len != t.length()) return InvalidArgument("tensor '" + t.name() + "' length disagrees with dtype and shape");
    if (t.offset() != next || t.length() > total - t.offset())
      return InvalidArgument("tensor '" + t.name() + "' does not start where the previous one ends, or lies outside its file");
    next += t.length();
    if (t.shard() != shard_of(t.offset())) return InvalidArgument("tensor '" + t.name() + "' names the wrong shard");
  }
  if (next != total) return InvalidArgument("files hold " + std::to_string(total - next) + " bytes no tensor covers");
  return OkStatus();
}
}  // namespace

StatusOr<CheckpointManifest> ParseManifest(std::string_view bytes) {
  CheckpointManifest m;
  if (bytes.size() > static_cast<size_t>(INT_MAX) || !m.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())))
    return InvalidArgument("manifest is not a valid CheckpointManifest protobuf");
  if (m.format_version() < kOldestReadableFormatVersion || m.format_version() > kCheckpointFormatVersion)
    return InvalidArgument("unsupported checkpoint format version " + std::to_string(m.format_version()) +
                           " (this build reads " + std::to_string(kOldestReadableFormatVersion) + " to " +
                           std::to_string(kCheckpointFormatVersion) + ")");
  const int n = m.shards_size();
  if (n < 1 || n > 65536) return InvalidArgument("manifest lists " + std::to_string(n) + " shards");
  std::vector<uint64_t> ends;
  uint64_t total = 0;
  for (int i = 0; i < n; ++i) {
    const auto& s = m.shards(i);
    // Names must be exactly what the writer produces: a manifest must not point outside
    // its own directory ("../x", "/etc/passwd") or alias one file twice.
    if (s.rank() != i || s.file() != ShardFileName(i, n))
      return InvalidArgument("shard " + std::to_string(i) + " is named '" + s.file() + "', expected " + ShardFileName(i, n));
    if (!IsLowerHex64(s.sha256())) return InvalidArgument("shard " + s.file() + " has a malformed sha256");
    if (s.length() > UINT64_MAX - total) return InvalidArgument("shard lengths overflow");
    total += s.length();
    ends.push_back(total);
  }
  std::set<std::string> names;
  auto shard_of = [&](uint64_t offset) {
    int shard = static_cast<int>(std::upper_bound(ends.begin(), ends.end(), offset) - ends.begin());
    return std::min(shard, n - 1);
  };
  RETURN_IF_ERROR(CheckTiling(m.tensors(), total, shard_of, &names));

  const int ranks = m.rank_states_size();
  if (ranks > 0) {
    if (m.format_version() < 2) return InvalidArgument("a version 1 manifest has rank states");
    if (m.world_size() != ranks)
      return InvalidArgument("manifest has " + std::to_string(ranks) + " rank states for world size " +
                             std::to_string(m.world_size()));
  }
  for (int r = 0; r < ranks; ++r) {
    const auto& rs = m.rank_states(r);
    if (rs.rank() != r || rs.file() != RankStateFileName(r, ranks))
      return InvalidArgument("rank state " + std::to_string(r) + " is named '" + rs.file() + "', expected " +
                             RankStateFileName(r, ranks));
    if (!IsLowerHex64(rs.sha256())) return InvalidArgument("rank state " + rs.file() + " has a malformed sha256");
    RETURN_IF_ERROR(CheckTiling(rs.tensors(), rs.length(), [r](uint64_t) { return r; }, &names)
                        .WithContext("rank state " + rs.file()));
  }
  return m;
}

std::string CodeVersion() { return SHOAL_CODE_VERSION; }

std::map<std::string, std::string> LinkedDependencyVersions() {
  std::map<std::string, std::string> v;
  v["protobuf"] = google::protobuf::internal::VersionString(GOOGLE_PROTOBUF_VERSION);
  v["openssl"] = OpenSSL_version(OPENSSL_VERSION);
  v["libsodium"] = sodium_version_string();
#ifdef __VERSION__
  v["compiler"] = __VERSION__;
#endif
  return v;
}

}  // namespace shoal
