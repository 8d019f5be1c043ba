// Shard encoding and decoding. Integers are written byte by byte as little-endian, so
// the format does not depend on the host; features are memcpy'd, which assumes a
// little-endian host (checked at compile time).
#include "datapipe/shard.h"

#include <zlib.h>

#include <bit>
#include <cstdio>
#include <cstring>

#include "common/file_util.h"
#include "datapipe/le_bytes.h"

namespace shoal {

static_assert(std::endian::native == std::endian::little, "shards store f32/i32 little-endian");

namespace {
using datapipe_le::Get;
using datapipe_le::Put;
// zlib's crc32 takes 32-bit lengths; feed it in chunks so shards over 4 GiB still work.
uint32_t Crc(uint32_t crc, const uint8_t* p, size_t n) {
  while (n > 0) {
    uInt chunk = static_cast<uInt>(std::min<size_t>(n, 1u << 30));
    crc = static_cast<uint32_t>(crc32(crc, p, chunk));
    p += chunk;
    n -= chunk;
  }
  return crc;
}
std::string Header(const RecordLayout& l, int64_t count, int64_t first_id) {
  std::string h(kShardMagic, 8);
  Put(h, kShardVersion, 4);
  Put(h, l.feature_count, 4);
  Put(h, static_cast<uint8_t>(l.feature_dtype), 1);
  Put(h, static_cast<uint8_t>(l.label_dtype), 1);
  Put(h, 0, 2);
  Put(h, l.record_bytes(), 4);
  Put(h, static_cast<uint64_t>(count), 8);
  Put(h, static_cast<uint64_t>(first_id), 8);
  h.append(kShardHeaderBytes - h.size(), '\0');
  return h;
}
}  // namespace

const char* DTypeName(RecordDType t) {
  switch (t) {
    case RecordDType::kU8: return "u8";
    case RecordDType::kF32: return "f32";
    case RecordDType::kI32: return "i32";
  }
  return "?";
}

StatusOr<RecordDType> ParseDType(const std::string& name) {
  if (name == "u8") return RecordDType::kU8;
  if (name == "f32") return RecordDType::kF32;
  if (name == "i32") return RecordDType::kI32;
  return InvalidArgument("unknown dtype '" + name + "' (expected u8, f32 or i32)");
}

size_t DTypeSize(RecordDType t) { return t == RecordDType::kU8 ? 1 : 4; }

Status ValidateLayout(const RecordLayout& l) {
  if (l.feature_count == 0 || l.feature_count > (1u << 24))
    return InvalidArgument("feature count " + std::to_string(l.feature_count) + " is out of range [1, 2^24]");
  if (l.feature_dtype != RecordDType::kU8 && l.feature_dtype != RecordDType::kF32)
    return InvalidArgument("feature dtype must be u8 or f32");
  if (l.label_dtype != RecordDType::kU8 && l.label_dtype != RecordDType::kI32)
    return InvalidArgument("label dtype must be u8 or i32");
  return OkStatus();
}

std::string ShardFileName(int index) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "shard-%05d.rec", index);
  return buf;
}

ShardBuilder::ShardBuilder(const RecordLayout& layout, int64_t first_record_id)
    : layout_(layout), first_record_id_(first_record_id) {}

Status ShardBuilder::Append(int64_t label, const void* features) {
  if (layout_.label_dtype == RecordDType::kU8 ? (label < 0 || label > 255) : (label < INT32_MIN || label > INT32_MAX))
    return InvalidArgument("label " + std::to_string(label) + " does not fit label dtype " +
                           DTypeName(layout_.label_dtype));
  if (layout_.label_dtype == RecordDType::kU8) {
    records_.push_back(static_cast<char>(label));
  } else {
    int32_t v = static_cast<int32_t>(label);
    records_.append(reinterpret_cast<const char*>(&v), 4);
  }
  records_.append(static_cast<const char*>(features), layout_.feature_bytes());
  ++count_;
  return OkStatus();
}

std::string ShardBuilder::Finish() {
  std::string out = Header(layout_, count_, first_record_id_);
  out += records_;
  uint32_t crc = Crc(0, reinterpret_cast<const uint8_t*>(out.data()), out.size());
  uint64_t footer_at = out.size();
  out.append(kShardFooterMagic, 8);
  Put(out, static_cast<uint64_t>(count_), 8);
  Put(out, crc, 4);
  Put(out, 0, 4);
  Put(out, footer_at, 8);
  records_.clear();
  first_record_id_ += count_;
  count_ = 0;
  return out;
}

StatusOr<ShardView> ShardView::Parse(std::shared_ptr<const std::string> bytes, const std::string& name) {
  if (!bytes) return InvalidArgument(name + ": no data");
  const std::string& s = *bytes;
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  if (s.size() < kShardHeaderBytes) return DataLoss("shard " + name + " is truncated (no complete header)");
  if (std::memcmp(p, kShardMagic, 8) != 0) return InvalidArgument("shard " + name + " is not a SHOALREC shard (bad magic)");
  uint32_t version = static_cast<uint32_t>(Get(p + 8, 4));
  if (version != kShardVersion)
    return InvalidArgument("shard " + name + " has format version " + std::to_string(version) + ", expected " +
                           std::to_string(kShardVersion));
  RecordLayout l;
  l.feature_count = static_cast<uint32_t>(Get(p + 12, 4));
  l.feature_dtype = static_cast<RecordDType>(p[16]);
  l.label_dtype = static_cast<RecordDType>(p[17]);
  Status valid = ValidateLayout(l);
  if (!valid.ok()) return valid.WithContext("shard " + name);
  for (size_t i = 40; i < kShardHeaderBytes; ++i)
    if (p[i] != 0) return InvalidArgument("shard " + name + " has non-zero reserved header bytes");
  if (Get(p + 20, 4) != l.record_bytes()) return DataLoss("shard " + name + ": header record size disagrees with layout");
  uint64_t count = Get(p + 24, 8);
  uint64_t first = Get(p + 32, 8);
  if (count > (uint64_t{1} << 40) / l.record_bytes() || first > (uint64_t{1} << 48))
    return DataLoss("shard " + name + ": implausible record count or first id in header");
  uint64_t body_end = kShardHeaderBytes + count * l.record_bytes();
  uint64_t want = body_end + kShardFooterBytes;
  if (s.size() != want)
    return DataLoss("shard " + name + " is " + std::to_string(s.size()) + " bytes but its header promises " +
                    std::to_string(count) + " records (" + std::to_string(want) + " bytes): truncated or padded");
  const uint8_t* f = p + body_end;
  if (std::memcmp(f, kShardFooterMagic, 8) != 0 || Get(f + 8, 8) != count || Get(f + 24, 8) != body_end)
    return DataLoss("shard " + name + " has a damaged footer");
  if (Crc(0, p, body_end) != static_cast<uint32_t>(Get(f + 16, 4)))
    return DataLoss("shard " + name + " fails its CRC check (content altered or corrupt)");
  ShardView v;
  v.name_ = name;
  v.layout_ = l;
  v.count_ = static_cast<int64_t>(count);
  v.first_id_ = static_cast<int64_t>(first);
  v.records_ = p + kShardHeaderBytes;
  v.bytes_ = std::move(bytes);
  return v;
}

int32_t ShardView::label(int64_t i) const {
  const uint8_t* r = records_ + i * layout_.record_bytes();
  if (layout_.label_dtype == RecordDType::kU8) return r[0];
  int32_t v;
  std::memcpy(&v, r, 4);
  return v;
}

void FeaturesToF32(RecordDType dtype, const uint8_t* src, size_t n, float* out) {
  if (dtype == RecordDType::kU8) {
    // Division, not a multiply by 1/255, so values match LoadIdxPair bit for bit.
    for (size_t i = 0; i < n; ++i) out[i] = src[i] / 255.0f;
  } else {
    std::memcpy(out, src, n * sizeof(float));
  }
}

void ShardView::ReadFeatures(int64_t i, float* out) const {
  FeaturesToF32(layout_.feature_dtype, features(i), layout_.feature_count, out);
}

StatusOr<ShardView> ReadShardFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  std::string name = path.substr(path.find_last_of('/') + 1);
  return ShardView::Parse(std::make_shared<const std::string>(std::move(bytes)), name);
}

}  // namespace shoal
