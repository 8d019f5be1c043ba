// DatasetWriter: shards into a staging folder, then manifest, signature and one rename
// into place. Replacing an existing dataset (--force) moves the old folder aside first
// and deletes it only after the new one is in place.
#include "datapipe/ingest.h"

#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "common/file_util.h"
#include "common/sha256.h"
#include "datapipe/manifest.h"

namespace shoal {

namespace fs = std::filesystem;

std::string IngestReport::ToJson() const {
  nlohmann::json j = {{"dir", dir},
                      {"name", name},
                      {"records", records},
                      {"shards", shards},
                      {"feature_count", feature_count},
                      {"dtype", dtype},
                      {"num_classes", num_classes},
                      {"manifest_sha256", manifest_sha256},
                      {"signed", !signer_key_id.empty()},
                      {"signer_key_id", signer_key_id},
                      {"seconds", seconds}};
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
}

namespace {
bool DirIsEmpty(const std::string& dir) {
  std::error_code ec;
  return fs::is_directory(dir, ec) && fs::directory_iterator(dir, ec) == fs::directory_iterator();
}
// Manifest strings are proto3 `string`s, which must be UTF-8 (a manifest holding
// anything else cannot be parsed back), so bad bytes are refused at ingest.
bool IsUtf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    int extra = c < 0x80 ? 0 : (c >> 5) == 0x6 ? 1 : (c >> 4) == 0xE ? 2 : (c >> 3) == 0x1E ? 3 : -1;
    if (extra < 0 || (extra == 1 && c < 0xC2) || c > 0xF4) return false;
    for (int k = 1; k <= extra; ++k)
      if (i + k >= s.size() || (static_cast<unsigned char>(s[i + k]) >> 6) != 0x2) return false;
    i += 1 + extra;
  }
  return true;
}

std::string TrimSlashes(std::string s) {
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}
}  // namespace

StatusOr<std::unique_ptr<DatasetWriter>> DatasetWriter::Create(const std::string& out_dir_in,
                                                               const RecordLayout& layout,
                                                               const IngestOptions& options) {
  RETURN_IF_ERROR(ValidateLayout(layout));
  if (options.shard_records <= 0 || options.shard_records > (int64_t{1} << 30))
    return InvalidArgument("--shard-records must be in [1, 2^30], got " + std::to_string(options.shard_records));
  if (!(options.value_min <= options.value_max)) return InvalidArgument("value range min must not exceed max");
  std::string out_dir = TrimSlashes(out_dir_in);
  if (out_dir.empty()) return InvalidArgument("no output folder given (--out)");
  std::error_code ec;
  if (fs::exists(out_dir, ec)) {
    if (!fs::is_directory(out_dir, ec)) return AlreadyExists(out_dir + " exists and is not a folder");
    if (!DirIsEmpty(out_dir) && !options.force)
      return AlreadyExists("dataset folder " + out_dir + " already exists; pass --force to replace it");
  }
  std::unique_ptr<DatasetWriter> w(new DatasetWriter());
  w->out_dir_ = out_dir;
  w->staging_ = out_dir + ".staging-" + std::to_string(::getpid());
  w->layout_ = layout;
  w->options_ = options;
  w->start_ = MonotonicSeconds();
  fs::remove_all(w->staging_, ec);
  RETURN_IF_ERROR(MakeDirs(w->staging_));
  // Sign-key problems surface now, not after minutes of ingest.
  if (!options.sign_key && !options.sign_key_path.empty()) {
    auto key = LoadSecretKey(options.sign_key_path);
    if (!key.ok()) return key.status().WithContext("--sign-key");
  }
  w->builder_ = std::make_unique<ShardBuilder>(layout, 0);
  return w;
}

DatasetWriter::~DatasetWriter() {
  if (!committed_ && !staging_.empty()) {
    std::error_code ec;
    fs::remove_all(staging_, ec);
  }
}

Status DatasetWriter::Append(int64_t label, const void* features) {
  Status s = builder_->Append(label, features);
  if (!s.ok()) return s.WithContext("record " + std::to_string(next_id_));
  if (label > max_label_ && label <= INT32_MAX) max_label_ = static_cast<int32_t>(label);
  ++next_id_;
  if (builder_->count() >= options_.shard_records) return FlushShard();
  return OkStatus();
}

void DatasetWriter::AddSource(const std::string& uri, const std::string& sha256_hex) {
  SourceFile* s = manifest_.add_sources();
  s->set_uri(uri);
  s->set_sha256(sha256_hex);
}

Status DatasetWriter::FlushShard() {
  if (builder_->count() == 0) return OkStatus();
  int64_t first = next_id_ - builder_->count();
  int64_t count = builder_->count();
  std::string bytes = builder_->Finish();
  std::string file = ShardFileName(manifest_.shards_size());
  RETURN_IF_ERROR(WriteFileAtomic(staging_ + "/" + file, bytes));
  DatasetShard* info = manifest_.add_shards();
  info->set_file(file);
  info->set_sha256(Sha256Hex(bytes));
  info->set_records(count);
  info->set_first_record_id(first);
  info->set_bytes(static_cast<int64_t>(bytes.size()));
  return OkStatus();
}

StatusOr<IngestReport> DatasetWriter::Commit(const std::vector<int64_t>& shape_in) {
  if (committed_) return FailedPrecondition("dataset already committed");
  if (next_id_ == 0) return InvalidArgument("the input holds no records; refusing to write an empty dataset");
  RETURN_IF_ERROR(FlushShard());
  std::vector<int64_t> shape = shape_in.empty() ? std::vector<int64_t>{layout_.feature_count} : shape_in;
  int64_t product = 1;
  for (int64_t d : shape) product *= std::max<int64_t>(d, 0);
  if (product != layout_.feature_count)
    return InvalidArgument("shape does not multiply to the " + std::to_string(layout_.feature_count) +
                           " features per record");
  std::vector<std::pair<std::string, std::string>> texts = {
      {"--name", options_.name}, {"--version", options_.version}, {"--licence", options_.licence}};
  for (const auto& uri : options_.source_uris) texts.push_back({"--source", uri});
  for (const auto& src : manifest_.sources()) texts.push_back({"input path", src.uri()});
  for (const auto& [what, text] : texts)
    if (!IsUtf8(text)) return InvalidArgument(what + " must be valid UTF-8 (it is stored in the manifest)");
  int num_classes = options_.num_classes > 0 ? options_.num_classes : max_label_ + 1;
  if (num_classes <= 0) return InvalidArgument("cannot infer the number of classes (no non-negative label)");

  manifest_.set_format(kManifestFormat);
  manifest_.set_name(options_.name.empty() ? fs::path(out_dir_).filename().string() : options_.name);
  manifest_.set_version(options_.version);
  manifest_.set_licence(options_.licence);
  for (const auto& uri : options_.source_uris) manifest_.add_source_uris(uri);
  if (options_.source_uris.empty())
    for (const auto& s : manifest_.sources()) manifest_.add_source_uris(s.uri());
  FeatureSchema* schema = manifest_.mutable_schema();
  for (int64_t d : shape) schema->add_shape(d);
  schema->set_dtype(DTypeName(layout_.feature_dtype));
  schema->set_label_dtype(DTypeName(layout_.label_dtype));
  schema->set_num_classes(num_classes);
  schema->set_value_min(options_.value_min);
  schema->set_value_max(options_.value_max);
  manifest_.set_total_records(next_id_);
  manifest_.set_created_by(created_by_);
  RETURN_IF_ERROR(ValidateManifest(manifest_));

  std::string manifest_bytes;
  if (!manifest_.SerializeToString(&manifest_bytes)) return Internal("cannot serialize the dataset manifest");
  RETURN_IF_ERROR(WriteFileAtomic(staging_ + "/" + kDatasetManifestFile, manifest_bytes));
  IngestReport report;
  if (options_.sign_key || !options_.sign_key_path.empty()) {
    KeyPair loaded;
    const KeyPair* key = options_.sign_key;
    if (!key) {
      ASSIGN_OR_RETURN(loaded, LoadSecretKey(options_.sign_key_path));
      key = &loaded;
    }
    RETURN_IF_ERROR(SignDataset(staging_, manifest_, manifest_bytes, *key));
    report.signer_key_id = key->public_key.key_id;
  }

  std::error_code ec;
  std::string aside;
  if (fs::exists(out_dir_, ec)) {
    aside = out_dir_ + ".replaced-" + std::to_string(::getpid());
    fs::remove_all(aside, ec);
    fs::rename(out_dir_, aside, ec);
    if (ec) return Internal("cannot move the old " + out_dir_ + " aside: " + ec.message());
  }
  fs::rename(staging_, out_dir_, ec);
  if (ec) return Internal("cannot move the staged dataset into " + out_dir_ + ": " + ec.message());
  committed_ = true;
  if (!aside.empty()) fs::remove_all(aside, ec);
  std::string parent = fs::path(out_dir_).parent_path().string();
  RETURN_IF_ERROR(FsyncDir(parent.empty() ? "." : parent));

  report.dir = out_dir_;
  report.name = manifest_.name();
  report.records = next_id_;
  report.shards = manifest_.shards_size();
  report.feature_count = static_cast<int>(layout_.feature_count);
  report.dtype = DTypeName(layout_.feature_dtype);
  report.num_classes = num_classes;
  report.manifest_sha256 = Sha256Hex(manifest_bytes);
  report.seconds = MonotonicSeconds() - start_;
  return report;
}

}  // namespace shoal
