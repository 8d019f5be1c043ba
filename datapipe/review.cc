// The signed review overlay. Reads treat the file as hostile: the signature is checked
// before any decision is believed, and every field is type-checked after that.
#include "datapipe/review.h"

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "common/clock.h"
#include "common/file_util.h"
#include "datapipe/scan_files.h"

namespace shoal {

namespace {
constexpr size_t kMaxReviewBytes = 64 << 20;

std::map<int64_t, const ReviewDecision*> Latest(const ReviewOverlay& r) {
  std::map<int64_t, const ReviewDecision*> out;
  for (const auto& d : r.decisions) out[d.record_id] = &d;
  return out;
}

StatusOr<ReviewOverlay> ParsePayload(const std::string& payload, const std::string& path) {
  nlohmann::json j = nlohmann::json::parse(payload, nullptr, false);
  auto bad = [&](const std::string& what) { return DataLoss(path + ": " + what); };
  if (j.is_discarded() || !j.is_object()) return bad("payload is not a JSON object");
  if (!j.contains("manifest_sha256") || !j["manifest_sha256"].is_string()) return bad("no manifest_sha256");
  if (!j.contains("decisions") || !j["decisions"].is_array()) return bad("no decisions list");
  ReviewOverlay r;
  r.manifest_sha256 = j["manifest_sha256"].get<std::string>();
  for (const auto& d : j["decisions"]) {
    if (!d.is_object() || !d.contains("record_id") || !d["record_id"].is_number_integer() || !d.contains("action") ||
        !d["action"].is_string())
      return bad("a decision lacks record_id or action");
    ReviewDecision x;
    x.record_id = d["record_id"].get<int64_t>();
    x.action = d["action"].get<std::string>();
    if (x.record_id < 0 || (x.action != "release" && x.action != "confirm"))
      return bad("decision about record " + std::to_string(x.record_id) + " has action '" + x.action + "'");
    if (d.contains("by") && d["by"].is_string()) x.by = d["by"].get<std::string>();
    if (d.contains("why") && d["why"].is_string()) x.why = d["why"].get<std::string>();
    if (d.contains("at_unix_ms") && d["at_unix_ms"].is_number_integer()) x.at_unix_ms = d["at_unix_ms"].get<int64_t>();
    if (d.contains("key_id") && d["key_id"].is_string()) x.key_id = d["key_id"].get<std::string>();
    r.decisions.push_back(std::move(x));
  }
  return r;
}

std::string EncodePayload(const ReviewOverlay& r) {
  nlohmann::json ds = nlohmann::json::array();
  for (const auto& d : r.decisions)
    ds.push_back({{"record_id", d.record_id}, {"action", d.action}, {"by", d.by}, {"why", d.why},
                  {"at_unix_ms", d.at_unix_ms}, {"key_id", d.key_id}});
  nlohmann::json j = {{"manifest_sha256", r.manifest_sha256}, {"decisions", ds}};
  return j.dump(1, ' ', false, nlohmann::json::error_handler_t::replace);
}

StatusOr<std::string> ReadEnvelope(const std::string& dir) {
  const std::string path = ReviewPath(dir);
  if (!PathExists(path)) return NotFound(dir + " has no review overlay (" + path + ")");
  return ReadFile(path, kMaxReviewBytes);
}
}  // namespace

std::string ReviewPath(const std::string& dir) { return dir + "/" + kScanDir + "/" + kReviewFile; }

std::vector<int64_t> ReviewOverlay::Released() const {
  std::vector<int64_t> out;
  for (const auto& [id, d] : Latest(*this))
    if (d->action == "release") out.push_back(id);
  return out;
}

std::vector<int64_t> ReviewOverlay::Confirmed() const {
  std::vector<int64_t> out;
  for (const auto& [id, d] : Latest(*this))
    if (d->action == "confirm") out.push_back(id);
  return out;
}

StatusOr<ReviewOverlay> ReadReview(const std::string& dir, const TrustStore& trust) {
  ASSIGN_OR_RETURN(std::string env, ReadEnvelope(dir));
  const std::string path = ReviewPath(dir);
  auto v = VerifyDsse(env, trust);
  if (!v.ok())
    return PermissionDenied("review overlay " + path + " is refused: " + v.status().message() +
                            " (it can release quarantined records, so it must be signed by a key in data.trust; "
                            "add the reviewer's public key there, or remove the file to use the scan alone)");
  if (v->payload_type != kReviewPayloadType)
    return InvalidArgument("review overlay " + path + " has payload type '" + v->payload_type + "'");
  ASSIGN_OR_RETURN(ReviewOverlay r, ParsePayload(v->payload, path));
  r.signer_key_id = v->key_id;
  return r;
}

StatusOr<ReviewOverlay> ReadReviewUnverified(const std::string& dir) {
  ASSIGN_OR_RETURN(std::string env, ReadEnvelope(dir));
  ASSIGN_OR_RETURN(VerifiedEnvelope v, ParseDsseUnverified(env));
  return ParsePayload(v.payload, ReviewPath(dir));
}

Status AddReviewDecisions(const std::string& dir, const std::string& manifest_sha256,
                          const std::vector<ReviewDecision>& decisions, const KeyPair& key, const TrustStore& trust) {
  TrustStore t = trust;
  t.Add(key.public_key);
  ReviewOverlay r;
  auto old = ReadReview(dir, t);
  if (old.ok()) {
    r = std::move(*old);
    if (r.manifest_sha256 != manifest_sha256)
      return FailedPrecondition("review overlay " + ReviewPath(dir) +
                                " is about another version of the dataset (manifest " + r.manifest_sha256 +
                                "); move it aside before reviewing this one");
  } else if (old.status().code() != StatusCode::kNotFound) {
    return old.status();
  }
  r.manifest_sha256 = manifest_sha256;
  ASSIGN_OR_RETURN(std::vector<QuarantineEntry> q, ReadQuarantine(dir));
  std::set<int64_t> known, unreadable;
  for (const auto& e : q) {
    known.insert(e.record_id);
    if (e.filter == "schema") unreadable.insert(e.record_id);
  }
  for (const auto& d : r.decisions) known.insert(d.record_id);
  const int64_t now = UnixMillis();
  for (ReviewDecision d : decisions) {
    if (d.action != "release" && d.action != "confirm") return InvalidArgument("unknown review action '" + d.action + "'");
    if (!known.count(d.record_id))
      return InvalidArgument("record " + std::to_string(d.record_id) + " is not in the quarantine list of " + dir +
                             " (see `shoalctl data quarantine " + dir + "`)");
    if (d.action == "release" && unreadable.count(d.record_id))
      return InvalidArgument("record " + std::to_string(d.record_id) +
                             " failed the schema check (non-finite or out-of-range values, or a bad label); it cannot "
                             "be trained on and cannot be released");
    if (d.by.empty() || d.why.empty()) return InvalidArgument("a review decision needs who (--by) and why (--why)");
    d.at_unix_ms = now;
    d.key_id = key.public_key.key_id;
    r.decisions.push_back(std::move(d));
  }
  return WriteFileAtomic(ReviewPath(dir), SignDsse(kReviewPayloadType, EncodePayload(r), key));
}

StatusOr<std::vector<int64_t>> ApplyReview(const std::vector<int64_t>& admitted, const ReviewOverlay& review,
                                           int64_t total_records, const std::string& manifest_sha256) {
  if (review.manifest_sha256 != manifest_sha256)
    return FailedPrecondition("the review overlay was made for another manifest (" + review.manifest_sha256 +
                              ", dataset has " + manifest_sha256 + ")");
  std::vector<int64_t> released = review.Released(), confirmed = review.Confirmed();
  for (int64_t id : released)
    if (id >= total_records)
      return DataLoss("the review overlay releases record " + std::to_string(id) + ", beyond the dataset's " +
                      std::to_string(total_records) + " records");
  std::vector<int64_t> merged;
  std::set_union(admitted.begin(), admitted.end(), released.begin(), released.end(), std::back_inserter(merged));
  std::vector<int64_t> out;
  std::set_difference(merged.begin(), merged.end(), confirmed.begin(), confirmed.end(), std::back_inserter(out));
  return out;
}

}  // namespace shoal
