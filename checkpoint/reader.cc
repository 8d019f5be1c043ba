// Verified checkpoint loading: signature, manifest digest, directory contents, shard
// sizes, shard digests (parallel), then tensors. Shard bytes are read once: hashed and,
// when loading, scattered straight into the tensor buffers (no staging copy).
#include "checkpoint/reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "checkpoint/job_dir.h"
#include "common/file_util.h"
#include "common/log.h"
#include "common/sha256.h"

namespace shoal {

namespace fs = std::filesystem;

StatusOr<CheckpointSignature> ParseCheckpointSignature(const std::string& envelope_json, const TrustStore* trust) {
  StatusOr<VerifiedEnvelope> env = trust ? VerifyDsse(envelope_json, *trust) : ParseDsseUnverified(envelope_json);
  if (!env.ok()) return env.status();
  if (env->payload_type != kInTotoPayloadType)
    return InvalidArgument("payload type is '" + env->payload_type.substr(0, 64) + "', expected " + kInTotoPayloadType);
  // A statement signed for another purpose (a dataset manifest) must not pass for a
  // checkpoint's, even when the same key signed both.
  nlohmann::json j = nlohmann::json::parse(env->payload, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.contains("predicateType") || !j["predicateType"].is_string() ||
      j["predicateType"].get<std::string>() != kCheckpointPredicateType)
    return InvalidArgument(std::string("statement is not a checkpoint statement (predicateType ") +
                           kCheckpointPredicateType + ")");
  ASSIGN_OR_RETURN(auto subjects, ParseStatementSubjects(env->payload));
  for (const auto& [name, digest] : subjects) {
    bool hex = digest.size() == 64 &&
               std::all_of(digest.begin(), digest.end(), [](char c) { return std::isdigit(c) || (c >= 'a' && c <= 'f'); });
    if (!hex) return InvalidArgument("statement subject '" + name.substr(0, 64) + "' has a malformed sha256");
  }
  return CheckpointSignature{env->key_id, std::move(subjects)};
}

namespace {

// Where PATH led, and whether through a `latest` pointer that named an existing step
// (the pointer is then held to naming the newest checkpoint: a turned-back one is
// refused).
struct Resolved {
  std::string dir;
  bool via_latest = false;
};

StatusOr<Resolved> Resolve(const std::string& path) {
  if (!PathExists(path)) return NotFound("no checkpoint at " + path);
  // The `latest` pointer file itself stands for the job directory it lives in.
  std::error_code ec;
  if (fs::path(path).filename() == kLatestFile && fs::is_regular_file(path, ec)) {
    std::string job = fs::path(path).parent_path().string();
    return Resolve(job.empty() ? "." : job);
  }
  if (!fs::is_directory(path, ec)) {
    return InvalidArgument(path + " is a file, not a checkpoint: give a step-N directory, a job directory "
                           "holding `latest`, or that `latest` file");
  }
  if (PathExists(JoinPath(path, kManifestFile))) return Resolved{path, false};
  // A step directory without a manifest is a damaged checkpoint, not a job directory.
  if (ParseStepDirName(fs::path(path).filename().string())) return Resolved{path, false};
  auto latest = ReadLatestPointer(path);
  if (latest.ok()) {
    std::string dir = JoinPath(path, *latest);
    if (PathExists(dir)) return Resolved{dir, true};
    SHOAL_LOG_WARN("{} names {}, which does not exist; using the newest committed step", JoinPath(path, kLatestFile), dir);
  } else if (latest.status().code() != StatusCode::kNotFound) {
    return latest.status();
  }
  ASSIGN_OR_RETURN(std::vector<int64_t> steps, ListCommittedSteps(path));
  if (steps.empty()) return NotFound("no checkpoint in " + path + " (no latest pointer, no step-N directory)");
  return Resolved{JoinPath(path, StepDirName(steps.back())), false};
}

}  // namespace

StatusOr<std::string> ResolveCheckpointDir(const std::string& path) {
  ASSIGN_OR_RETURN(Resolved r, Resolve(path));
  return r.dir;
}

Status RefuseRollback(const std::string& what, int64_t step, int64_t newer_step, const std::string& evidence,
                      bool allow_rollback, std::string* warning) {
  const std::string s = std::to_string(step), t = std::to_string(newer_step);
  if (!allow_rollback)
    return FailedPrecondition(what + ": step " + s + " is older than step " + t + " of the same job (" + evidence +
                              "), so resuming from it would roll the job back; refused. Resume from step " + t +
                              ", or pass --allow-rollback (checkpoint.allow_rollback in a spec) to load step " + s +
                              " anyway");
  std::string w = "rolling back: " + what + ": loading step " + s + " although step " + t + " is newer (" + evidence +
                  "), as --allow-rollback allows";
  SHOAL_LOG_WARN("{}", w);
  if (warning) *warning = std::move(w);
  return OkStatus();
}

namespace {

constexpr size_t kReadChunk = 4 << 20;
// Read whole before anything checks them, so bounded: far above what any real job
// writes (a subject or a tensor entry is ~100 bytes), far below what exhausts memory.
constexpr size_t kMaxSignatureBytes = size_t{64} << 20;
constexpr size_t kMaxManifestBytes = size_t{256} << 20;

// ReadFile for manifest.sig and manifest.pb: kNotFound stays for the caller to word, an
// oversized file is refused as ReadFile words it (kInvalidArgument), and any other
// failure to read is kDataLoss.
StatusOr<std::string> ReadBounded(const std::string& path, size_t max_bytes) {
  StatusOr<std::string> bytes = ReadFile(path, max_bytes);
  const StatusCode code = bytes.status().code();
  if (bytes.ok() || code == StatusCode::kNotFound || code == StatusCode::kInvalidArgument) return bytes;
  return DataLoss(path + ": " + bytes.status().message());
}

// Where a shard's bytes go when loading: consecutive pieces of tensor buffers.
struct Span {
  char* data;
  uint64_t len;
};

// Reads one shard once: hashes it and, when `dest` is non-empty, scatters the bytes into
// those spans (they cover exactly `length` bytes), so loading needs no staging copy.
Status HashShard(const std::string& path, uint64_t length, const std::string& want_hex, const std::vector<Span>& dest) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return DataLoss(path + ": cannot open: " + std::strerror(errno));
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  std::unique_ptr<char[]> scratch(dest.empty() ? new char[kReadChunk] : nullptr);
  Sha256 h;
  uint64_t done = 0, span_off = 0;
  size_t span = 0;
  Status s;
  while (s.ok() && done < length) {
    char* buf = scratch.get();
    size_t want = static_cast<size_t>(std::min<uint64_t>(kReadChunk, length - done));
    if (!dest.empty()) {
      while (span_off == dest[span].len) span_off = 0, ++span;  // spans sum to `length`
      buf = dest[span].data + span_off;
      want = static_cast<size_t>(std::min<uint64_t>(want, dest[span].len - span_off));
    }
    ssize_t n = ::read(fd, buf, want);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) s = DataLoss(path + ": read failed: " + std::strerror(errno));
    else if (n == 0) s = DataLoss(path + ": truncated to " + std::to_string(done) + " of " + std::to_string(length) + " bytes");
    else {
      h.Update(buf, static_cast<size_t>(n));
      done += static_cast<uint64_t>(n);
      span_off += static_cast<uint64_t>(n);
    }
  }
  char extra;
  if (s.ok() && ::read(fd, &extra, 1) > 0) s = DataLoss(path + ": longer than the " + std::to_string(length) + " bytes in the manifest");
  ::close(fd);
  if (!s.ok()) return s;
  std::string got = ToHex(h.Finish());
  if (got != want_hex) return DataLoss(path + ": SHA-256 mismatch (manifest " + want_hex + ", file " + got + ")");
  return OkStatus();
}

// The tensor-buffer pieces that bytes [begin, end) of a file land in; `table` tiles the
// file's stream in order (ParseManifest guarantees it), `tensors` are its buffers.
std::vector<Span> SpansFor(NamedTensor* tensors, const google::protobuf::RepeatedPtrField<CheckpointTensor>& table,
                           uint64_t begin, uint64_t end) {
  std::vector<Span> out;
  for (int k = 0; k < table.size(); ++k) {
    uint64_t b = table[k].offset(), e = b + table[k].length();
    uint64_t lo = std::max(b, begin), hi = std::min(e, end);
    if (lo < hi) out.push_back({tensors[k].bytes.data() + (lo - b), hi - lo});
  }
  return out;
}

// One file the manifest accounts for: a shard or a rank state.
struct ListedFile {
  const std::string* name;
  uint64_t length;
  const std::string* sha256;
};

std::vector<ListedFile> ListedFiles(const CheckpointManifest& m) {
  std::vector<ListedFile> out;
  for (const auto& s : m.shards()) out.push_back({&s.file(), s.length(), &s.sha256()});
  for (const auto& s : m.rank_states()) out.push_back({&s.file(), s.length(), &s.sha256()});
  return out;
}

// Hashes `files` (ListedFiles(m)): every shard, and the rank-state files of the ranks
// marked in `rank_used`, with up to `threads` threads; the first failure in manifest
// order wins. With `snap` set (its tensors and the used ranks' rank_tensors sized from
// the manifest), file bytes are scattered into them.
Status HashFiles(const std::string& dir, const CheckpointManifest& m, const std::vector<ListedFile>& files, int threads,
                 const std::vector<bool>& rank_used, TrainerSnapshot* snap) {
  const int shards = m.shards_size();
  std::vector<std::vector<Span>> dest(files.size());
  if (snap) {
    uint64_t offset = 0;
    for (int i = 0; i < shards; ++i) {
      dest[i] = SpansFor(snap->tensors.data(), m.tensors(), offset, offset + files[i].length);
      offset += files[i].length;
    }
    NamedTensor* first = snap->rank_tensors.data();
    for (int r = 0; r < m.rank_states_size(); ++r) {
      if (!rank_used[r]) continue;
      const auto& table = m.rank_states(r).tensors();
      dest[shards + r] = SpansFor(first, table, 0, files[shards + r].length);
      first += table.size();
    }
  }
  std::vector<int> todo;  // indices into files
  for (int i = 0; i < static_cast<int>(files.size()); ++i)
    if (i < shards || rank_used[i - shards]) todo.push_back(i);
  const int n = static_cast<int>(todo.size());
  int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int workers = std::max(1, std::min(n, threads > 0 ? threads : hw));
  std::vector<Status> results(n);
  std::atomic<int> next{0};
  auto work = [&] {
    for (int k; (k = next.fetch_add(1)) < n;) {
      const int i = todo[k];
      results[k] = HashShard(JoinPath(dir, *files[i].name), files[i].length, *files[i].sha256, dest[i]);
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < workers; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  for (const auto& r : results) RETURN_IF_ERROR(r);
  return OkStatus();
}

// Every file in the directory must be one the manifest (`files`) or the signature
// accounts for.
Status CheckDirectoryContents(const std::string& dir, const std::vector<ListedFile>& files) {
  std::set<std::string> expected{kManifestFile, kSignatureFile};
  for (const auto& f : files) expected.insert(*f.name);
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (!expected.count(name)) return DataLoss(JoinPath(dir, name) + ": unexpected file in checkpoint directory");
  }
  if (ec) return DataLoss(dir + ": cannot list: " + ec.message());
  for (const auto& f : files) {
    std::string path = JoinPath(dir, *f.name);
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return DataLoss(path + ": missing file");
    if (!S_ISREG(st.st_mode)) return DataLoss(path + ": not a regular file");
    if (static_cast<uint64_t>(st.st_size) != f.length)
      return DataLoss(path + ": has " + std::to_string(st.st_size) + " bytes, the manifest says " + std::to_string(f.length) +
                      (static_cast<uint64_t>(st.st_size) < f.length ? " (truncated)" : ""));
  }
  return OkStatus();
}

// `hash`: false only for PrecheckCheckpoint, which reads no shard.
StatusOr<LoadedCheckpoint> Open(const std::string& path, const TrustStore& trust, const LoadOptions& o,
                                bool materialize, bool hash = true);

// The directory's name and the manifest's job must agree with what the manifest, now
// authenticated, says: a signed checkpoint copied under another step's name (or into
// another job's folder) is as unusable as a corrupt one.
Status CheckNameAndJob(const LoadedCheckpoint& c, const LoadOptions& o) {
  const CheckpointManifest& m = c.manifest;
  const std::string name = fs::path(c.dir).filename().string();
  const std::optional<int64_t> named_step = ParseStepDirName(name);
  const std::string holds = c.dir + " holds a manifest for step " + std::to_string(m.step()) + " of job " + m.job_id();
  if (named_step && *named_step != m.step())
    return DataLoss("checkpoint directory " + holds + ", not step " + std::to_string(*named_step) +
                    ": refused (renamed or substituted)");
  if (!o.expected_job.empty() && m.job_id() != o.expected_job)
    return DataLoss("checkpoint directory " + holds + ", not of job " + o.expected_job +
                    ": refused (renamed or substituted)");
  const std::string folder = fs::path(c.job_dir).filename().string();
  if (o.job_from_directory && named_step && m.job_id() != folder)
    return DataLoss("checkpoint directory " + holds + ", but sits in the folder of job " + folder +
                    ": refused (renamed or substituted; checkpoints live at <dir>/<job>/step-<N>)");
  return OkStatus();
}

// The newest known: no newer checkpoint of the same job in c's job directory may be
// skipped unless the caller allows a rollback (see LoadOptions). `via_latest` says c was
// reached through `latest`.
Status CheckNewest(LoadedCheckpoint* c, const TrustStore& trust, const LoadOptions& o, bool via_latest) {
  const CheckpointManifest& m = c->manifest;
  ASSIGN_OR_RETURN(std::vector<int64_t> steps, ListCommittedSteps(c->job_dir));
  std::vector<std::string> newer;  // newest first
  for (auto it = steps.rbegin(); it != steps.rend() && *it > m.step(); ++it)
    newer.push_back(JoinPath(c->job_dir, StepDirName(*it)));
  if (newer.empty()) return OkStatus();

  // A checkpoint's parent is the one its job resumed from, and training only moves
  // forward from there: a parent at a later step means the lineage is forged or mixed up.
  if (!m.parent_digest().empty()) {
    for (const std::string& dir : newer) {
      auto bytes = ReadBounded(JoinPath(dir, kManifestFile), kMaxManifestBytes);
      if (!bytes.ok() || Sha256Hex(*bytes) != m.parent_digest()) continue;
      auto parent = ParseManifest(*bytes);
      if (parent.ok() && parent->step() > m.step())
        return DataLoss(c->dir + " (step " + std::to_string(m.step()) + ") names " + dir + " (step " +
                        std::to_string(parent->step()) +
                        ") as its parent, a later checkpoint it cannot descend from: refused (renamed or substituted)");
    }
  }

  if (o.chosen_by_registry) {
    for (const std::string& dir : newer)
      SHOAL_LOG_WARN("{} is newer than {}, which the coordinator's registry names as job {}'s latest; it was never "
                     "registered (a writer stopped between committing and registering): resuming from the registered one",
                     dir, c->dir, m.job_id());
    return OkStatus();
  }
  // Verified like the checkpoint itself, as a checkpoint of the same job; one that fails
  // is not evidence of anything newer.
  LoadOptions check;
  check.allow_unsigned = o.allow_unsigned;
  check.threads = o.threads;
  check.expected_job = m.job_id();
  for (const std::string& dir : newer) {
    StatusOr<LoadedCheckpoint> v = Open(dir, trust, check, /*materialize=*/false);
    if (!v.ok()) {
      SHOAL_LOG_WARN("{} is newer than {} but does not verify, so it does not count: {}", dir, c->dir,
                     v.status().ToString());
      continue;
    }
    const std::string evidence = dir + " verifies";
    const std::string what = via_latest ? JoinPath(c->job_dir, kLatestFile) + " is turned back: it names " + c->dir
                                        : c->dir + " (job " + m.job_id() + ")";
    return RefuseRollback(what, m.step(), v->manifest.step(), evidence, o.allow_rollback, &c->rollback_warning);
  }
  return OkStatus();
}

StatusOr<LoadedCheckpoint> Open(const std::string& path, const TrustStore& trust, const LoadOptions& o,
                                bool materialize, bool hash) {
  const bool allow_unsigned = o.allow_unsigned;
  const std::optional<OwnRankState>& own = o.own;
  LoadedCheckpoint out;
  ASSIGN_OR_RETURN(Resolved resolved, Resolve(path));
  out.dir = resolved.dir;
  {
    const std::string parent = fs::path(out.dir).parent_path().string();
    out.job_dir = parent.empty() ? "." : parent;
  }
  const std::string sig_path = JoinPath(out.dir, kSignatureFile);
  const std::string manifest_path = JoinPath(out.dir, kManifestFile);

  // 1. Signature, before anything else is believed.
  std::optional<std::map<std::string, std::string>> subjects;
  StatusOr<std::string> envelope = ReadBounded(sig_path, kMaxSignatureBytes);
  if (!envelope.ok() && envelope.status().code() != StatusCode::kNotFound) return envelope.status();
  if (!envelope.ok()) {
    if (!allow_unsigned)
      return PermissionDenied(sig_path + ": missing, the checkpoint is unsigned (pass --allow-unsigned to load it anyway)");
    SHOAL_LOG_WARN("{}: missing; loading unsigned checkpoint because unsigned loading was allowed", sig_path);
  } else {
    StatusOr<CheckpointSignature> sig = ParseCheckpointSignature(*envelope, &trust);
    if (sig.ok()) {
      out.signer_key_id = sig->key_id;
      out.signature_verified = true;
      subjects = std::move(sig->subjects);
    } else if (!allow_unsigned) {
      std::string hint = sig.status().code() == StatusCode::kPermissionDenied && trust.empty()
                             ? " (no trusted keys given: pass the signer's public key with --trust)" : "";
      return Status(sig.status().code(), sig_path + ": " + sig.status().message() + hint);
    } else {
      SHOAL_LOG_WARN("{}: {}; ignored because unsigned loading was allowed", sig_path, sig.status().message());
    }
  }

  // 2. The manifest must be the one the statement signed.
  StatusOr<std::string> manifest_bytes = ReadBounded(manifest_path, kMaxManifestBytes);
  if (!manifest_bytes.ok())
    return manifest_bytes.status().code() == StatusCode::kNotFound ? DataLoss(manifest_path + ": missing")
                                                                    : manifest_bytes.status();
  out.manifest_digest = Sha256Hex(*manifest_bytes);
  if (subjects) {
    auto it = subjects->find(kManifestFile);
    if (it == subjects->end()) return InvalidArgument(sig_path + ": the signed statement does not cover manifest.pb");
    if (it->second != out.manifest_digest)
      return DataLoss(manifest_path + ": SHA-256 " + out.manifest_digest + " differs from the signed " + it->second);
  }
  StatusOr<CheckpointManifest> manifest = ParseManifest(*manifest_bytes);
  if (!manifest.ok()) return InvalidArgument(manifest_path + ": " + manifest.status().message());
  out.manifest = std::move(manifest).value();
  const CheckpointManifest& m = out.manifest;
  const std::vector<ListedFile> files = ListedFiles(m);
  if (subjects) {
    // The manifest is authenticated now; the statement must list exactly its files.
    if (subjects->size() != files.size() + 1)
      return InvalidArgument(sig_path + ": the signed statement lists " + std::to_string(subjects->size()) +
                             " files, the manifest " + std::to_string(files.size() + 1));
    for (const auto& f : files) {
      auto it = subjects->find(*f.name);
      if (it == subjects->end() || it->second != *f.sha256)
        return InvalidArgument(sig_path + ": the signed statement disagrees with the manifest about " + *f.name);
    }
  }

  // 3. The manifest is for the step and job its directory claims, and, where asked, no
  // newer checkpoint of the job is skipped (a rollback): refused before any shard is read.
  RETURN_IF_ERROR(CheckNameAndJob(out, o));
  if (resolved.via_latest || o.resume) RETURN_IF_ERROR(CheckNewest(&out, trust, o, resolved.via_latest));

  // 4. Files present, nothing extra, sizes right; then 5. digests, in parallel.
  RETURN_IF_ERROR(CheckDirectoryContents(out.dir, files));
  for (const auto& f : files) out.total_bytes += f.length;
  if (!hash) return out;
  std::vector<bool> rank_used(m.rank_states_size(), !own.has_value());
  if (own && own->world == m.world_size() && own->rank >= 0 && own->rank < m.rank_states_size())
    rank_used[own->rank] = true;
  TrainerSnapshot& snap = out.snapshot;
  if (materialize) {
    // Sizes are safe to allocate: they sum to the file sizes just checked on disk.
    auto add = [](const CheckpointTensor& t, std::vector<NamedTensor>* to) {
      to->push_back(NamedTensor{t.name(), t.dtype(), std::vector<int64_t>(t.shape().begin(), t.shape().end()),
                                std::string(t.length(), '\0')});
    };
    try {
      for (const auto& t : m.tensors()) add(t, &snap.tensors);
      for (int r = 0; r < m.rank_states_size(); ++r)
        if (rank_used[r])
          for (const auto& t : m.rank_states(r).tensors()) add(t, &snap.rank_tensors);
    } catch (const std::bad_alloc&) {
      return Internal("cannot allocate " + std::to_string(out.total_bytes) + " bytes to load " + out.dir);
    }
  }
  Status hashed = HashFiles(out.dir, m, files, o.threads, rank_used, materialize ? &snap : nullptr);
  if (!hashed.ok()) {
    snap.tensors.clear();  // bytes that failed verification are never handed out
    snap.rank_tensors.clear();
    return hashed;
  }

  // 6. Verified: only now is the state handed out.
  snap.job_id = m.job_id();
  snap.step = m.step();
  snap.epoch = m.epoch();
  snap.cursor = m.cursor();
  snap.rng_state = m.rng_state();
  snap.spec_digest = m.spec_digest();
  snap.codec = m.codec();
  snap.world_size = m.world_size();
  return out;
}

}  // namespace

StatusOr<LoadedCheckpoint> LoadCheckpoint(const std::string& path, const TrustStore& trust, const LoadOptions& options) {
  return Open(path, trust, options, /*materialize=*/true);
}

StatusOr<LoadedCheckpoint> LoadCheckpoint(const std::string& path, const TrustStore& trust, bool allow_unsigned, int threads) {
  LoadOptions o;
  o.allow_unsigned = allow_unsigned;
  o.threads = threads;
  return Open(path, trust, o, /*materialize=*/true);
}

StatusOr<LoadedCheckpoint> LoadCheckpointForRank(const std::string& path, const TrustStore& trust, bool allow_unsigned,
                                                 OwnRankState own, int threads) {
  LoadOptions o;
  o.allow_unsigned = allow_unsigned;
  o.threads = threads;
  o.own = own;
  return Open(path, trust, o, /*materialize=*/true);
}

StatusOr<LoadedCheckpoint> VerifyCheckpoint(const std::string& path, const TrustStore& trust, const LoadOptions& options) {
  LoadOptions o = options;
  o.own.reset();  // verifying checks every rank's file
  return Open(path, trust, o, /*materialize=*/false);
}

StatusOr<LoadedCheckpoint> PrecheckCheckpoint(const std::string& path, const TrustStore& trust, const LoadOptions& options) {
  LoadOptions o = options;
  o.own.reset();
  return Open(path, trust, o, /*materialize=*/false, /*hash=*/false);
}

StatusOr<LoadedCheckpoint> VerifyCheckpoint(const std::string& path, const TrustStore& trust, bool allow_unsigned, int threads) {
  LoadOptions o;
  o.allow_unsigned = allow_unsigned;
  o.threads = threads;
  return Open(path, trust, o, /*materialize=*/false);
}

}  // namespace shoal
