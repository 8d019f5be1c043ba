// Ingest: turns a source (Fashion-MNIST IDX files, raw binary records, CSV) into record
// shards plus a signed manifest. Output is built in a staging folder and moved into place
// only when complete, so a failed or interrupted ingest never leaves a half dataset.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/signing.h"
#include "common/status.h"
#include "dataset.pb.h"
#include "datapipe/shard.h"

namespace shoal {

struct IngestOptions {
  int64_t shard_records = 10000;
  std::string sign_key_path;          // secret key file; used when sign_key is null
  const KeyPair* sign_key = nullptr;  // takes precedence over sign_key_path
  std::string name;                   // default: the output folder's base name
  std::string version = "1";
  std::string licence;
  std::vector<std::string> source_uris;  // default: the input paths
  int num_classes = 0;                // 0: max label in the input + 1
  std::vector<int64_t> shape;         // raw/csv: feature shape (default: [features])
  double value_min = 0.0;             // declared feature range for f32 data
  double value_max = 1.0;
  bool force = false;                 // replace an existing dataset folder
};

struct IngestReport {
  std::string dir;
  std::string name;
  int64_t records = 0;
  int shards = 0;
  int feature_count = 0;
  std::string dtype;
  int num_classes = 0;
  std::string manifest_sha256;
  std::string signer_key_id;  // "" when unsigned
  double seconds = 0;
  std::string ToJson() const;
};

// Streams records into shards. Create stages the output next to `out_dir`; Commit
// writes the manifest (and signature) and moves the folder into place; destroying an
// uncommitted writer removes the staging folder.
class DatasetWriter {
 public:
  static StatusOr<std::unique_ptr<DatasetWriter>> Create(const std::string& out_dir, const RecordLayout& layout,
                                                         const IngestOptions& options);
  ~DatasetWriter();
  DatasetWriter(const DatasetWriter&) = delete;
  DatasetWriter& operator=(const DatasetWriter&) = delete;

  Status Append(int64_t label, const void* features);
  // Records a source file's URI and SHA-256 in the manifest.
  void AddSource(const std::string& uri, const std::string& sha256_hex);
  void set_created_by(const std::string& tool) { created_by_ = tool; }
  // `shape` must multiply to the layout's feature count; num_classes 0 infers it.
  StatusOr<IngestReport> Commit(const std::vector<int64_t>& shape);

 private:
  DatasetWriter() = default;
  Status FlushShard();

  std::string out_dir_, staging_;
  RecordLayout layout_;
  IngestOptions options_;
  std::unique_ptr<ShardBuilder> builder_;
  DatasetManifest manifest_;
  std::string created_by_;
  int64_t next_id_ = 0;
  int32_t max_label_ = -1;
  bool committed_ = false;
  double start_ = 0;
};

// IDX image + label files (gzip or plain), stored as u8 features with u8 labels.
StatusOr<IngestReport> IngestIdx(const std::string& images_path, const std::string& labels_path,
                                 const std::string& out_dir, const IngestOptions& options);

// Raw binary records: back to back, each an i32 little-endian label followed by
// `features` f32 little-endian values. Stored as f32 features with i32 labels. A file
// that is not a whole number of records is refused as truncated.
StatusOr<IngestReport> IngestRaw(const std::string& path, int features, const std::string& out_dir,
                                 const IngestOptions& options);

// CSV: one record per line, "label,f1,...,fN" (nan/inf accepted, '#' lines skipped);
// N is taken from the first record and every line must match it.
StatusOr<IngestReport> IngestCsv(const std::string& path, const std::string& out_dir, const IngestOptions& options);

// Writes `n` records of `dim` f32 features to `path` in IngestRaw's format.
Status WriteRawRecords(const std::string& path, const float* x, const int32_t* y, int64_t n, int dim);

}  // namespace shoal
