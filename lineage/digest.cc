// Lineage digests (digest.h).
#include "lineage/digest.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include "common/sha256.h"

namespace shoal {

namespace {
std::string Deterministic(const google::protobuf::Message& m) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream stream(&out);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    m.SerializeToCodedStream(&coded);
  }
  return out;
}

std::string Tagged(const char* tag, const std::string& a, const std::string& b = "") {
  std::string in = tag;
  in.push_back('\0');
  in += a;
  in.push_back('\0');
  in += b;
  return Sha256Hex(in);
}
}  // namespace

std::string JobLineageDigest(const JobLineage& job) {
  JobLineage copy = job;
  copy.clear_digest();
  return Tagged("shoal-lineage/job/v1", Deterministic(copy));
}

std::string GenerationLineageDigest(const std::string& previous, const GenerationLineage& generation) {
  GenerationLineage copy = generation;
  copy.clear_digest();
  return Tagged("shoal-lineage/generation/v1", previous, Deterministic(copy));
}

StatusOr<std::string> RecomputeLineageChain(const JobLineageRecord& record, int64_t upto) {
  const std::string& job = record.job().job_id();
  std::string head = JobLineageDigest(record.job());
  if (head != record.job().digest())
    return DataLoss("the lineage record of job " + job + " was changed after it was recorded (its digest " +
                    record.job().digest().substr(0, 16) + "... no longer matches its content, " + head.substr(0, 16) +
                    "...)");
  int64_t expect = 1;
  for (const GenerationLineage& g : record.generations()) {
    if (g.number() > upto) break;
    if (g.number() != expect)
      return DataLoss("the lineage of job " + job + " lacks generation " + std::to_string(expect) +
                      " (next recorded: " + std::to_string(g.number()) + ")");
    head = GenerationLineageDigest(head, g);
    if (head != g.digest())
      return DataLoss("the lineage record of job " + job + " generation " + std::to_string(g.number()) +
                      " was changed after it was recorded (or one before it was)");
    ++expect;
  }
  if (expect <= upto)
    return DataLoss("the lineage of job " + job + " lacks generation " + std::to_string(expect));
  return head;
}

LineageVerdict VerifyCheckpointLineage(const std::string& manifest_digest, const std::string& job_id, int64_t step,
                                       const std::string& parent_digest, const std::string& lineage_digest,
                                       const JobLineageRecord& record) {
  LineageVerdict v;
  v.signed_digest = lineage_digest;
  if (lineage_digest.empty()) {
    v.problem = "the checkpoint's manifest carries no lineage digest (saved without a coordinator, or by an "
                "older Shoal): there is nothing signed to check the lineage against";
    return v;
  }
  const CheckpointLineage* ck = nullptr;
  for (const CheckpointLineage& c : record.checkpoints())
    if (c.manifest_digest() == manifest_digest) ck = &c;
  if (!ck) {
    v.problem = "the lineage store has no record of checkpoint " + manifest_digest.substr(0, 16) + "... of job " + job_id;
    return v;
  }
  v.generation = ck->generation();
  auto differs = [&](const std::string& field, const std::string& stored, const std::string& signed_value) {
    v.problem = "the lineage record of checkpoint step " + std::to_string(step) + " says " + field + " " +
                (stored.empty() ? "(none)" : stored) + " but the signed manifest says " +
                (signed_value.empty() ? "(none)" : signed_value);
  };
  if (ck->job_id() != job_id) return differs("job", ck->job_id(), job_id), v;
  if (ck->step() != step) return differs("step", std::to_string(ck->step()), std::to_string(step)), v;
  if (ck->parent_digest() != parent_digest) return differs("parent", ck->parent_digest(), parent_digest), v;
  if (ck->lineage_digest() != lineage_digest) return differs("lineage digest", ck->lineage_digest(), lineage_digest), v;
  auto head = RecomputeLineageChain(record, ck->generation());
  if (!head.ok()) {
    v.problem = head.status().message();
    return v;
  }
  v.recomputed_digest = *head;
  if (*head != lineage_digest) {
    v.problem = "the lineage recomputed from the store for job " + job_id + " up to generation " +
                std::to_string(ck->generation()) + " (" + head->substr(0, 16) +
                "...) differs from the digest signed in the checkpoint's manifest (" + lineage_digest.substr(0, 16) +
                "...): a record was edited after the checkpoint was saved";
    return v;
  }
  v.ok = true;
  return v;
}

}  // namespace shoal
