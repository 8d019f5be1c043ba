// The coordinator's tamper-evident audit log, in its RocksDB:
//   audit/<seq, 16 digits>   AuditEntry: time, key, role, action, job, outcome; its hash
//                            covers the previous entry's hash and its own fields
//   audit-head/<seq>         AuditHead: the chain's hash at seq, signed (DSSE, Ed25519)
//                            with the coordinator's signing key every kSignEvery entries,
//                            every kSignIntervalMs while entries arrive, and at shutdown
// Editing an entry breaks its hash; deleting one leaves a gap; inserting or reordering
// breaks the sequence or the chain; rewriting the whole chain from some entry on
// disagrees with the next signed head. VerifyAuditLog names the first entry that fails.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/signing.h"
#include "common/status.h"
#include "control.pb.h"
#include "coordinator/store.h"

namespace shoal {

inline constexpr int64_t kAuditSignEvery = 64;
inline constexpr int64_t kAuditSignIntervalMs = 5000;
inline constexpr char kAuditHeadPayloadType[] = "application/vnd.shoal.audit-head+json";

// SHA-256 (hex) over the previous hash and every field but `hash`, length-prefixed.
std::string AuditEntryHash(const AuditEntry& entry);
std::string AuditKey(int64_t seq);

class AuditLog {
 public:
  explicit AuditLog(StateStore* store) : store_(store) {}

  // Finds the chain's end to continue it. A chain that does not verify is not fatal (the
  // coordinator must still start): `warning` says what is wrong, and the next entry
  // records it.
  Status Load(std::string* warning);
  // The key that signs chain heads (none: heads are not signed; --verify says so).
  void SetSigner(std::optional<KeyPair> key) { signer_ = std::move(key); }
  Status Append(AuditEntry entry, int64_t now_ms);
  // Signs the head when entries arrived since the last signature and the interval
  // passed (or `force`, at shutdown).
  void MaybeSignHead(int64_t now_ms, bool force = false);
  // Entries (filtered by job and time) for `shoalctl audit`; with `all`, every stored
  // record as it is in the store, and every head, for verification.
  StatusOr<AuditResponse> Read(const AuditRequest& request) const;
  int64_t entries() const { return next_seq_ - 1; }

 private:
  StateStore* store_;
  std::optional<KeyPair> signer_;
  int64_t next_seq_ = 1;
  std::string last_hash_;
  int64_t signed_seq_ = 0;
  int64_t last_sign_ms_ = 0;
};

struct AuditVerdict {
  bool ok = true;
  int64_t entries = 0;        // entries checked
  int64_t heads = 0;          // signed heads that verified
  int64_t unsigned_tail = 0;  // entries after the last signed head
  int64_t first_bad_seq = 0;  // the first entry that fails (0 when none can be named)
  std::string problem;        // what is wrong, naming that entry
};

// `records`: every (store key, value) under audit/, in key order; `heads` likewise under
// audit-head/. Without a trusted key, signatures are not checked (heads stays 0).
AuditVerdict VerifyAuditLog(const std::vector<std::pair<std::string, std::string>>& records,
                            const std::vector<std::pair<std::string, std::string>>& heads, const TrustStore* trust);

}  // namespace shoal
