// Record shards (`shard-00000.rec`): a fixed header with the record layout, fixed-size
// records (label then features), and a footer that repeats the count and carries a CRC,
// so a truncated or bit-flipped shard is refused even before its SHA-256 is checked.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"

namespace shoal {

enum class RecordDType : uint8_t { kU8 = 1, kF32 = 2, kI32 = 3 };
const char* DTypeName(RecordDType t);  // "u8", "f32", "i32"
StatusOr<RecordDType> ParseDType(const std::string& name);
size_t DTypeSize(RecordDType t);

struct RecordLayout {
  uint32_t feature_count = 0;
  RecordDType feature_dtype = RecordDType::kU8;  // u8 or f32
  RecordDType label_dtype = RecordDType::kU8;    // u8 or i32
  size_t label_bytes() const { return DTypeSize(label_dtype); }
  size_t feature_bytes() const { return feature_count * DTypeSize(feature_dtype); }
  size_t record_bytes() const { return label_bytes() + feature_bytes(); }
  bool operator==(const RecordLayout& o) const {
    return feature_count == o.feature_count && feature_dtype == o.feature_dtype && label_dtype == o.label_dtype;
  }
};
Status ValidateLayout(const RecordLayout& layout);

// On-disk layout, all integers little-endian:
//   header (64 B): "SHOALREC", u32 version, u32 feature_count, u8 feature dtype,
//                  u8 label dtype, u16 0, u32 record_bytes, u64 record_count,
//                  u64 first_record_id, 24 zero bytes
//   records:       record_count x record_bytes (label, then features)
//   footer (32 B): "SHOALEND", u64 record_count, u32 crc32(header + records), u32 0,
//                  u64 offset of the footer (the index: where the records end)
inline constexpr char kShardMagic[] = "SHOALREC";
inline constexpr char kShardFooterMagic[] = "SHOALEND";
inline constexpr uint32_t kShardVersion = 1;
inline constexpr size_t kShardHeaderBytes = 64;
inline constexpr size_t kShardFooterBytes = 32;

std::string ShardFileName(int index);  // "shard-00007.rec"

// Builds one shard in memory (a shard is bounded by --shard-records, a few MiB), so the
// caller can hash it and write it atomically in one go.
class ShardBuilder {
 public:
  ShardBuilder(const RecordLayout& layout, int64_t first_record_id);
  // `features` points at layout.feature_count values of the feature dtype. The label
  // must fit the label dtype (u8: 0..255); out-of-bounds labels for the schema are
  // stored as given, because refusing them is the scan's job, not the writer's.
  Status Append(int64_t label, const void* features);
  int64_t count() const { return count_; }
  // Header + records + footer. The builder is empty afterwards.
  std::string Finish();

 private:
  RecordLayout layout_;
  int64_t first_record_id_;
  int64_t count_ = 0;
  std::string records_;
};

// A parsed shard over bytes held in memory: what was verified is what is read, so a file
// changed on disk after its digest was checked cannot slip records in.
class ShardView {
 public:
  ShardView() = default;
  // Checks magic, version, layout, exact size, footer and CRC; errors name `name`.
  static StatusOr<ShardView> Parse(std::shared_ptr<const std::string> bytes, const std::string& name);

  const std::string& name() const { return name_; }
  const RecordLayout& layout() const { return layout_; }
  int64_t count() const { return count_; }
  int64_t first_record_id() const { return first_id_; }
  int32_t label(int64_t i) const;
  // Raw feature bytes of record i in the stored dtype.
  const uint8_t* features(int64_t i) const { return records_ + i * layout_.record_bytes() + layout_.label_bytes(); }
  // Features as f32: u8 scaled to [0, 1], f32 copied as stored (NaN included).
  void ReadFeatures(int64_t i, float* out) const;

 private:
  std::shared_ptr<const std::string> bytes_;
  std::string name_;
  RecordLayout layout_;
  int64_t count_ = 0;
  int64_t first_id_ = 0;
  const uint8_t* records_ = nullptr;
};

StatusOr<ShardView> ReadShardFile(const std::string& path);
// Converts n stored features of `dtype` to f32 (u8 / 255).
void FeaturesToF32(RecordDType dtype, const uint8_t* src, size_t n, float* out);

}  // namespace shoal
