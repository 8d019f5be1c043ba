// Manifest validation, signing and the verifying open. Shards are read and hashed in
// parallel (SHA-256 is the bulk of opening a dataset), and the bytes that were hashed
// are the bytes handed out, so nothing can change between check and use.
#include "datapipe/manifest.h"

#include <dirent.h>

#include <nlohmann/json.hpp>
#include <set>

#include "common/file_util.h"
#include "common/sha256.h"
#include "datapipe/parallel.h"

namespace shoal {

namespace {
// The manifest and its signature are read whole before they are checked: bounded, far
// above what a real dataset's (a line per shard) reach.
constexpr size_t kMaxDatasetManifestBytes = size_t{64} << 20;

bool IsPlainShardName(const std::string& f) {
  if (f.empty() || f.size() > 200 || f[0] == '.') return false;
  if (f.find('/') != std::string::npos || f.find('\\') != std::string::npos) return false;
  return f.size() > 4 && f.compare(f.size() - 4, 4, ".rec") == 0;
}
bool LooksLikeShard(const std::string& f) {
  return (f.size() > 4 && f.compare(f.size() - 4, 4, ".rec") == 0) || f.rfind("shard-", 0) == 0;
}
StatusOr<std::string> ReadManifestBytes(const std::string& dir) {
  if (!PathExists(dir)) return NotFound("dataset folder " + dir + " does not exist");
  std::string path = dir + "/" + kDatasetManifestFile;
  if (!PathExists(path))
    return NotFound(dir + " has no " + kDatasetManifestFile + " (not an ingested dataset; run `shoalctl data ingest`)");
  return ReadFile(path, kMaxDatasetManifestBytes);
}
}  // namespace

StatusOr<RecordLayout> ManifestLayout(const DatasetManifest& m) {
  const FeatureSchema& s = m.schema();
  RecordLayout l;
  int64_t features = 1;
  if (s.shape().empty()) return InvalidArgument("manifest schema has no feature shape");
  for (int64_t d : s.shape()) {
    if (d <= 0 || d > (1 << 24)) return InvalidArgument("manifest schema has a bad dimension " + std::to_string(d));
    features *= d;
    if (features > (1 << 24)) return InvalidArgument("manifest schema shape is too large");
  }
  l.feature_count = static_cast<uint32_t>(features);
  ASSIGN_OR_RETURN(l.feature_dtype, ParseDType(s.dtype()));
  ASSIGN_OR_RETURN(l.label_dtype, ParseDType(s.label_dtype()));
  RETURN_IF_ERROR(ValidateLayout(l));
  return l;
}

Status ValidateManifest(const DatasetManifest& m) {
  if (m.format() != kManifestFormat)
    return InvalidArgument("manifest format is '" + m.format() + "', expected '" + kManifestFormat + "'");
  RETURN_IF_ERROR(ManifestLayout(m).status());
  if (m.schema().num_classes() <= 0) return InvalidArgument("manifest schema num_classes must be positive");
  if (!(m.schema().value_min() <= m.schema().value_max()))
    return InvalidArgument("manifest schema value range is empty");
  int64_t next_id = 0;
  std::set<std::string> names;
  for (const DatasetShard& s : m.shards()) {
    if (!IsPlainShardName(s.file())) return InvalidArgument("manifest lists a bad shard name '" + s.file() + "'");
    if (!names.insert(s.file()).second) return InvalidArgument("manifest lists shard " + s.file() + " twice");
    if (s.sha256().size() != 64) return InvalidArgument("manifest has a malformed digest for shard " + s.file());
    if (s.records() < 0 || s.first_record_id() != next_id)
      return InvalidArgument("manifest record ids are not contiguous at shard " + s.file());
    next_id += s.records();
  }
  if (next_id != m.total_records())
    return InvalidArgument("manifest total_records " + std::to_string(m.total_records()) + " != sum over shards " +
                           std::to_string(next_id));
  return OkStatus();
}

std::string DatasetStatement(const DatasetManifest& m, const std::string& manifest_sha256_hex) {
  std::vector<Subject> subjects{{kDatasetManifestFile, manifest_sha256_hex}};
  for (const DatasetShard& s : m.shards()) subjects.push_back({s.file(), s.sha256()});
  nlohmann::json pred = {{"name", m.name()},
                         {"version", m.version()},
                         {"licence", m.licence()},
                         {"records", m.total_records()},
                         {"sourceUris", m.source_uris()}};
  return MakeStatement(subjects, kDatasetPredicateType, pred.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

Status SignDataset(const std::string& dir, const DatasetManifest& m, const std::string& manifest_bytes,
                   const KeyPair& key) {
  std::string statement = DatasetStatement(m, Sha256Hex(manifest_bytes));
  return WriteFileAtomic(dir + "/" + kManifestSigFile, SignDsse(kInTotoPayloadType, statement, key));
}

StatusOr<DatasetManifest> ReadManifestUnverified(const std::string& dir) {
  ASSIGN_OR_RETURN(std::string bytes, ReadManifestBytes(dir));
  DatasetManifest m;
  if (!m.ParseFromString(bytes))
    return DataLoss(dir + "/" + kDatasetManifestFile + " is not a valid dataset manifest (corrupt or edited)");
  return m;
}

namespace {
// Checks manifest.sig against the trust settings; fills signer and provenance in `out`.
Status CheckSignature(const std::string& dir, const DatasetManifest& m, const std::string& manifest_sha,
                      const DatasetTrust& trust, VerifiedDataset* out) {
  std::string sig_path = dir + "/" + kManifestSigFile;
  if (!PathExists(sig_path)) {
    if (!trust.allow_unsigned)
      return PermissionDenied("dataset " + dir + " is unsigned (no " + kManifestSigFile +
                              "); sign it at ingest with --sign-key, or pass --allow-unsigned");
    out->provenance = "unsigned (allowed)";
    return OkStatus();
  }
  ASSIGN_OR_RETURN(std::string env, ReadFile(sig_path, kMaxDatasetManifestBytes));
  VerifiedEnvelope verified;
  if (trust.trust.empty()) {
    if (!trust.allow_unsigned)
      return PermissionDenied("no trusted keys to check " + sig_path + " with; pass --trust KEY.pub or --allow-unsigned");
    auto parsed = ParseDsseUnverified(env);
    if (!parsed.ok()) return parsed.status().WithContext(sig_path);
    verified = *parsed;
    out->provenance = "signature present but not checked (no trusted keys; allowed)";
  } else {
    auto v = VerifyDsse(env, trust.trust);
    if (!v.ok()) return Status(v.status().code(), sig_path + ": " + v.status().message());
    verified = *v;
    out->signer_key_id = verified.key_id;
    out->provenance = "signed by trusted key " + verified.key_id;
  }
  if (verified.payload_type != kInTotoPayloadType)
    return PermissionDenied(sig_path + " does not carry an in-toto statement");
  auto subjects = ParseStatementSubjects(verified.payload);
  if (!subjects.ok()) return subjects.status().WithContext(sig_path);
  auto it = subjects->find(kDatasetManifestFile);
  if (it == subjects->end() || it->second != manifest_sha)
    return PermissionDenied(std::string(kDatasetManifestFile) + " in " + dir +
                            " does not match its signature (the manifest was edited after signing)");
  for (const DatasetShard& s : m.shards()) {
    auto sit = subjects->find(s.file());
    if (sit == subjects->end() || sit->second != s.sha256())
      return PermissionDenied("shard " + s.file() + " is not covered by the signature in " + sig_path);
  }
  if (subjects->size() != static_cast<size_t>(m.shards_size()) + 1)
    return PermissionDenied(sig_path + " signs files the manifest does not list");
  return OkStatus();
}

Status CheckNoUnknownShards(const std::string& dir, const DatasetManifest& m) {
  std::set<std::string> listed;
  for (const DatasetShard& s : m.shards()) listed.insert(s.file());
  DIR* d = opendir(dir.c_str());
  if (!d) return NotFound("cannot list dataset folder " + dir);
  std::string unknown;
  while (dirent* e = readdir(d)) {
    std::string f = e->d_name;
    if (LooksLikeShard(f) && !listed.count(f)) {
      unknown = f;
      break;
    }
  }
  closedir(d);
  if (!unknown.empty())
    return PermissionDenied("unknown shard file " + unknown + " in " + dir +
                            " is not listed in the signed manifest (remove it or re-ingest)");
  return OkStatus();
}
}  // namespace

StatusOr<VerifiedDataset> OpenDataset(const std::string& dir, const DatasetTrust& trust, bool load_shards) {
  VerifiedDataset out;
  out.dir = dir;
  ASSIGN_OR_RETURN(std::string manifest_bytes, ReadManifestBytes(dir));
  out.manifest_sha256 = Sha256Hex(manifest_bytes);
  if (!out.manifest.ParseFromString(manifest_bytes))
    return DataLoss(dir + "/" + kDatasetManifestFile + " is not a valid dataset manifest (corrupt or edited)");
  // The signature is checked before the manifest's content is trusted for anything else.
  RETURN_IF_ERROR(CheckSignature(dir, out.manifest, out.manifest_sha256, trust, &out));
  Status valid = ValidateManifest(out.manifest);
  if (!valid.ok()) return valid.WithContext(dir + "/" + kDatasetManifestFile);
  RETURN_IF_ERROR(CheckNoUnknownShards(dir, out.manifest));
  ASSIGN_OR_RETURN(RecordLayout layout, ManifestLayout(out.manifest));

  const int n = out.manifest.shards_size();
  std::vector<Status> errors(n);
  out.shards.resize(n);
  ParallelForEach(n, std::min(DefaultThreads(), 4), [&](int64_t i, int) {
    const DatasetShard& info = out.manifest.shards(static_cast<int>(i));
    std::string path = dir + "/" + info.file();
    if (!PathExists(path)) {
      errors[i] = NotFound("shard " + info.file() + " listed in the manifest is missing from " + dir);
      return;
    }
    auto bytes = ReadFile(path);
    if (!bytes.ok()) {
      errors[i] = bytes.status();
      return;
    }
    if (Sha256Hex(*bytes) != info.sha256()) {
      errors[i] = DataLoss("shard " + info.file() + " in " + dir +
                           " does not match its SHA-256 in the manifest (altered, truncated or corrupt)");
      return;
    }
    auto view = ShardView::Parse(std::make_shared<const std::string>(std::move(*bytes)), info.file());
    if (!view.ok()) {
      errors[i] = view.status();
      return;
    }
    if (!(view->layout() == layout) || view->count() != info.records() ||
        view->first_record_id() != info.first_record_id()) {
      errors[i] = DataLoss("shard " + info.file() + " header disagrees with the manifest (layout, count or first id)");
      return;
    }
    if (load_shards) out.shards[i] = std::move(*view);
  });
  for (const Status& s : errors) RETURN_IF_ERROR(s);
  if (!load_shards) out.shards.clear();
  return out;
}

}  // namespace shoal
