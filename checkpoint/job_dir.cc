// Job checkpoint folder housekeeping: committed-step listing, the `latest` pointer,
// retention and crash leftovers. Deletions go through a rename so that a committed name
// always denotes a complete checkpoint.
#include "checkpoint/job_dir.h"

#include <sodium.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "checkpoint/format.h"
#include "common/file_util.h"
#include "common/log.h"
#include "common/sha256.h"

namespace shoal {

namespace fs = std::filesystem;

std::string JoinPath(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

std::string RandomNonce() {
  static const int init = sodium_init();
  (void)init;
  unsigned char raw[8];
  randombytes_buf(raw, sizeof(raw));
  return ToHex(raw, sizeof(raw));
}

StatusOr<std::vector<int64_t>> ListCommittedSteps(const std::string& job_dir) {
  std::vector<int64_t> steps;
  std::error_code ec;
  if (!fs::exists(job_dir, ec)) return steps;
  fs::directory_iterator it(job_dir, ec), end;
  if (ec) return Internal("cannot list " + job_dir + ": " + ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec) return Internal("cannot list " + job_dir + ": " + ec.message());
    auto step = ParseStepDirName(it->path().filename().string());
    if (step && it->is_directory(ec)) steps.push_back(*step);
  }
  std::sort(steps.begin(), steps.end());
  return steps;
}

StatusOr<std::string> ReadLatestPointer(const std::string& job_dir) {
  auto text = ReadFile(JoinPath(job_dir, kLatestFile), 4096);  // "step-<N>\n"
  if (!text.ok()) return text.status();
  std::string name = *text;
  while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
  if (!ParseStepDirName(name))
    return InvalidArgument(JoinPath(job_dir, kLatestFile) + " does not name a step directory: '" + name.substr(0, 64) + "'");
  return name;
}

Status UpdateLatestPointer(const std::string& job_dir, int64_t step) {
  auto current = ReadLatestPointer(job_dir);
  if (current.ok()) {
    auto cur_step = ParseStepDirName(*current);
    if (cur_step && *cur_step > step && PathExists(JoinPath(job_dir, *current))) return OkStatus();
  }
  return WriteFileAtomic(JoinPath(job_dir, kLatestFile), StepDirName(step) + "\n");
}

std::vector<int64_t> StepsToDelete(const std::vector<int64_t>& steps, const RetentionPolicy& policy,
                                   std::optional<int64_t> protect) {
  std::set<int64_t> keep;
  size_t n = steps.size();
  size_t first_kept = policy.keep_last > 0 && static_cast<size_t>(policy.keep_last) < n ? n - policy.keep_last : 0;
  for (size_t i = first_kept; i < n; ++i) keep.insert(steps[i]);
  for (int64_t s : steps)
    if (policy.keep_every_steps > 0 && s % policy.keep_every_steps == 0) keep.insert(s);
  if (protect) keep.insert(*protect);
  std::vector<int64_t> out;
  for (int64_t s : steps)
    if (!keep.count(s)) out.push_back(s);
  return out;
}

Status ApplyRetention(const std::string& job_dir, const RetentionPolicy& policy) {
  if (policy.keep_last <= 0) return OkStatus();
  ASSIGN_OR_RETURN(std::vector<int64_t> steps, ListCommittedSteps(job_dir));
  std::optional<int64_t> protect;
  if (auto latest = ReadLatestPointer(job_dir); latest.ok()) protect = ParseStepDirName(*latest);
  std::vector<int64_t> doomed = StepsToDelete(steps, policy, protect);
  if (doomed.empty()) return OkStatus();
  std::vector<std::string> renamed;
  for (int64_t s : doomed) {
    std::string from = JoinPath(job_dir, StepDirName(s));
    std::string to = from + ".del-" + RandomNonce();
    std::error_code ec;
    fs::rename(from, to, ec);
    if (ec) return Internal("retention: cannot rename " + from + ": " + ec.message());
    renamed.push_back(to);
  }
  // The renames must be on disk before any file inside is unlinked.
  RETURN_IF_ERROR(FsyncDir(job_dir));
  for (const auto& dir : renamed) {
    std::error_code ec;
    fs::remove_all(dir, ec);
    if (ec) SHOAL_LOG_WARN("retention: cannot remove {}: {} (the next writer start retries)", dir, ec.message());
  }
  return OkStatus();
}

StatusOr<int> CleanStaleStaging(const std::string& job_dir, const std::string& keep_nonce) {
  std::error_code ec;
  if (!fs::exists(job_dir, ec)) return 0;
  std::vector<fs::path> stale;
  fs::directory_iterator it(job_dir, ec), end;
  if (ec) return Internal("cannot list " + job_dir + ": " + ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec) return Internal("cannot list " + job_dir + ": " + ec.message());
    std::string name = it->path().filename().string();
    if (name.rfind("step-", 0) == 0) {
      size_t tmp = name.find(".tmp-"), del = name.find(".del-");
      if (tmp != std::string::npos && name.substr(tmp + 5) != keep_nonce) stale.push_back(it->path());
      if (del != std::string::npos) stale.push_back(it->path());
    } else if (name.rfind(std::string(kLatestFile) + ".tmp-", 0) == 0) {
      stale.push_back(it->path());
    }
  }
  int removed = 0;
  for (const auto& p : stale) {
    fs::remove_all(p, ec);
    if (ec) return Internal("cannot remove stale " + p.string() + ": " + ec.message());
    ++removed;
  }
  if (removed > 0) SHOAL_LOG_INFO("checkpoint: removed {} leftover(s) of an interrupted writer in {}", removed, job_dir);
  return removed;
}

}  // namespace shoal
