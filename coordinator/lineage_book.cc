// Lineage records in the state store (lineage_book.h).
#include "coordinator/lineage_book.h"

#include <cstdio>
#include <set>

#include "lineage/digest.h"

namespace shoal {

namespace {
std::string Padded(int64_t n, int width) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%0*lld", width, static_cast<long long>(n));
  return buf;
}
std::string JobKey(const std::string& job) { return "lineage/job/" + job; }
std::string GenKey(const std::string& job, int64_t n) { return "lineage/gen/" + job + "/" + Padded(n, 10); }
std::string CkptKey(const std::string& job, int64_t step) { return "lineage/ckpt/" + job + "/" + Padded(step, 12); }
std::string DigestKey(const std::string& digest) { return "lineage/digest/" + digest; }

template <typename Proto>
StatusOr<Proto> Parsed(const std::string& key, const std::string& bytes) {
  Proto p;
  if (!p.ParseFromString(bytes)) return DataLoss("lineage entry " + key + " is corrupt");
  return p;
}
}  // namespace

Status LineageBook::RecordJob(JobLineage job) {
  job.set_digest(JobLineageDigest(job));
  return store_->Put(JobKey(job.job_id()), job.SerializeAsString());
}

std::pair<std::string, std::string> LineageBook::GenerationEntry(GenerationLineage g, std::string* digest) const {
  g.set_digest(GenerationLineageDigest(HeadOf(g.job_id(), g.number() - 1), g));
  *digest = g.digest();
  return {GenKey(g.job_id(), g.number()), g.SerializeAsString()};
}

std::string LineageBook::HeadOf(const std::string& job_id, int64_t number) const {
  auto bytes = store_->Get(number <= 0 ? JobKey(job_id) : GenKey(job_id, number));
  if (!bytes.ok()) return "";
  if (number <= 0) {
    JobLineage j;
    return j.ParseFromString(*bytes) ? j.digest() : "";
  }
  GenerationLineage g;
  return g.ParseFromString(*bytes) ? g.digest() : "";
}

Status LineageBook::RecordCheckpoint(const CheckpointLineage& c) {
  if (c.manifest_digest().size() != 64) return InvalidArgument("checkpoint lineage without a manifest digest");
  return store_->PutBatch({{CkptKey(c.job_id(), c.step()), c.SerializeAsString()},
                           {DigestKey(c.manifest_digest()), c.job_id() + "/" + Padded(c.step(), 12)}});
}

StatusOr<JobLineage> LineageBook::JobOf(const std::string& job_id) const {
  auto job = store_->Get(JobKey(job_id));
  if (!job.ok()) return NotFound("no lineage recorded for job '" + job_id + "'");
  return Parsed<JobLineage>(JobKey(job_id), *job);
}

StatusOr<JobLineageRecord> LineageBook::Of(const std::string& job_id) const {
  JobLineageRecord r;
  ASSIGN_OR_RETURN(*r.mutable_job(), JobOf(job_id));
  ASSIGN_OR_RETURN(auto gens, store_->Scan("lineage/gen/" + job_id + "/"));
  for (auto& [k, v] : gens) {
    ASSIGN_OR_RETURN(*r.add_generations(), Parsed<GenerationLineage>(k, v));
  }
  ASSIGN_OR_RETURN(auto ckpts, store_->Scan("lineage/ckpt/" + job_id + "/"));
  for (auto& [k, v] : ckpts) {
    ASSIGN_OR_RETURN(*r.add_checkpoints(), Parsed<CheckpointLineage>(k, v));
  }
  return r;
}

StatusOr<std::string> LineageBook::ResolveDigest(const std::string& prefix) const {
  if (prefix.size() < 8 || prefix.size() > 64 || prefix.find_first_not_of("0123456789abcdef") != std::string::npos)
    return InvalidArgument("'" + prefix + "' is not a checkpoint digest (8 to 64 lowercase hex digits)");
  ASSIGN_OR_RETURN(auto found, store_->Scan(DigestKey(prefix)));
  if (found.empty()) return NotFound("no checkpoint with digest " + prefix + " was committed to this coordinator");
  if (found.size() > 1) return InvalidArgument("digest prefix " + prefix + " names " + std::to_string(found.size()) + " checkpoints");
  return found[0].first.substr(DigestKey("").size());
}

StatusOr<CheckpointLineage> LineageBook::CheckpointByDigest(const std::string& digest) const {
  auto where = store_->Get(DigestKey(digest));
  if (!where.ok()) return NotFound("checkpoint " + digest.substr(0, 16) + "... has no lineage record");
  const std::string key = "lineage/ckpt/" + *where;
  ASSIGN_OR_RETURN(std::string bytes, store_->Get(key));
  return Parsed<CheckpointLineage>(key, bytes);
}

StatusOr<LineageResponse> LineageBook::Lookup(const LineageRequest& request) const {
  LineageResponse out;
  std::string job = request.job_id();
  std::string parent;
  if (!request.checkpoint_digest().empty()) {
    ASSIGN_OR_RETURN(std::string digest, ResolveDigest(request.checkpoint_digest()));
    ASSIGN_OR_RETURN(CheckpointLineage c, CheckpointByDigest(digest));
    out.set_checkpoint_digest(digest);
    if (!job.empty() && job != c.job_id())
      return InvalidArgument("checkpoint " + digest.substr(0, 16) + "... was saved by job " + c.job_id() + ", not " + job);
    job = c.job_id();
  }
  if (job.empty()) return InvalidArgument("a lineage request names a job or a checkpoint");
  // The asked job, then the job of every parent checkpoint its checkpoints chain to
  // (a job resumed from another job's checkpoint), each once.
  std::set<std::string> seen;
  std::vector<std::string> queue{job};
  while (!queue.empty() && seen.size() < 64) {
    const std::string j = queue.front();
    queue.erase(queue.begin());
    if (!seen.insert(j).second) continue;
    auto record = Of(j);
    if (!record.ok()) {
      if (j == job) return record.status();
      continue;  // a parent saved by a job this coordinator never ran
    }
    for (const CheckpointLineage& c : record->checkpoints()) {
      if (c.parent_digest().empty()) continue;
      auto p = CheckpointByDigest(c.parent_digest());
      if (p.ok() && !seen.count(p->job_id())) queue.push_back(p->job_id());
    }
    *out.add_jobs() = std::move(*record);
  }
  return out;
}

}  // namespace shoal
