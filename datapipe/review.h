// A person's decisions about quarantined records: released (admitted after all) or
// confirmed (kept out), each with who, when and why, in DIR/scan/review.dsse.json, a
// DSSE envelope signed by the reviewer's key. The loader applies it on top of the scan's
// admitted list only when the signature verifies against the job's data.trust; a re-scan
// carries the file over; nothing in it or in the quarantine list is ever deleted (a
// later decision about the same record supersedes an earlier one, which stays on file).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/signing.h"
#include "common/status.h"

namespace shoal {

inline constexpr char kReviewFile[] = "review.dsse.json";
inline constexpr char kReviewPayloadType[] = "application/vnd.shoal.data-review+json";

struct ReviewDecision {
  int64_t record_id = 0;
  std::string action;      // "release" | "confirm"
  std::string by, why;
  int64_t at_unix_ms = 0;  // when it was recorded
  std::string key_id;      // the key that signed the overlay when it was added
};

struct ReviewOverlay {
  std::string manifest_sha256;           // the dataset the decisions are about
  std::vector<ReviewDecision> decisions;  // in the order they were made
  std::string signer_key_id;             // the key that verified (empty: not verified)
  // The latest decision per record: released ids (ascending) and confirmed ids.
  std::vector<int64_t> Released() const;
  std::vector<int64_t> Confirmed() const;
};

std::string ReviewPath(const std::string& dataset_dir);

// Reads DIR/scan/review.dsse.json and verifies its signature against `trust`. NotFound
// when there is none; PermissionDenied naming the file when no trusted key signed it;
// InvalidArgument / DataLoss when it is malformed (treated as hostile input).
StatusOr<ReviewOverlay> ReadReview(const std::string& dataset_dir, const TrustStore& trust);
// The same without checking the signature (listings only; never for admitting).
StatusOr<ReviewOverlay> ReadReviewUnverified(const std::string& dataset_dir);

// Appends decisions and re-signs the overlay with `key`. An existing overlay must verify
// against `trust` (the key's own public key is trusted too), so a tampered file is never
// re-signed. Each id must be in the scan's quarantine list, or already decided about.
Status AddReviewDecisions(const std::string& dataset_dir, const std::string& manifest_sha256,
                          const std::vector<ReviewDecision>& decisions, const KeyPair& key, const TrustStore& trust);

// admitted (ascending) + released - confirmed, ascending. Ids must be < total_records.
StatusOr<std::vector<int64_t>> ApplyReview(const std::vector<int64_t>& admitted, const ReviewOverlay& review,
                                           int64_t total_records, const std::string& manifest_sha256);

}  // namespace shoal
