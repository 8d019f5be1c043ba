#include "coordinator/audit.h"

#include <cstdio>
#include <cstdlib>

#include <nlohmann/json.hpp>

#include "common/log.h"
#include "common/sha256.h"

namespace shoal {

namespace {

void AddField(Sha256& h, const std::string& s) {
  const uint64_t n = s.size();
  h.Update(&n, sizeof(n));
  h.Update(s);
}

// "audit/0000000000000042" -> 42; -1 when the key is not one the log writes.
int64_t SeqOfKey(const std::string& key, const std::string& prefix) {
  if (key.size() != prefix.size() + 16 || key.compare(0, prefix.size(), prefix) != 0) return -1;
  int64_t v = 0;
  for (size_t i = prefix.size(); i < key.size(); ++i) {
    if (key[i] < '0' || key[i] > '9') return -1;
    v = v * 10 + (key[i] - '0');
  }
  return v;
}

std::string HeadKey(int64_t seq) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "audit-head/%016lld", static_cast<long long>(seq));
  return buf;
}

}  // namespace

std::string AuditKey(int64_t seq) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "audit/%016lld", static_cast<long long>(seq));
  return buf;
}

std::string AuditEntryHash(const AuditEntry& e) {
  Sha256 h;
  AddField(h, "shoal-audit v1");
  AddField(h, e.prev_hash());
  AddField(h, std::to_string(e.seq()));
  AddField(h, std::to_string(e.unix_ms()));
  for (const std::string* f : {&e.key(), &e.role(), &e.action(), &e.job_id(), &e.outcome(), &e.detail()}) AddField(h, *f);
  return ToHex(h.Finish());
}

Status AuditLog::Load(std::string* warning) {
  ASSIGN_OR_RETURN(auto records, store_->Scan("audit/"));
  ASSIGN_OR_RETURN(auto heads, store_->Scan("audit-head/"));
  AuditVerdict v = VerifyAuditLog(records, heads, nullptr);
  if (!v.ok && warning) *warning = v.problem;
  // Continue after the highest entry that parses, chaining to its stored hash: the log
  // keeps growing, and the break stays where --verify will find it.
  next_seq_ = 1;
  last_hash_.clear();
  for (auto it = records.rbegin(); it != records.rend(); ++it) {
    AuditEntry e;
    const int64_t seq = SeqOfKey(it->first, "audit/");
    if (seq < 1 || !e.ParseFromString(it->second)) continue;
    next_seq_ = seq + 1;
    last_hash_ = e.hash();
    break;
  }
  signed_seq_ = 0;
  if (!heads.empty()) signed_seq_ = std::max<int64_t>(0, SeqOfKey(heads.back().first, "audit-head/"));
  return OkStatus();
}

Status AuditLog::Append(AuditEntry e, int64_t now_ms) {
  e.set_seq(next_seq_);
  e.set_unix_ms(now_ms);
  e.set_prev_hash(last_hash_);
  e.set_hash(AuditEntryHash(e));
  RETURN_IF_ERROR(store_->Put(AuditKey(e.seq()), e.SerializeAsString()));
  ++next_seq_;
  last_hash_ = e.hash();
  if (next_seq_ - 1 - signed_seq_ >= kAuditSignEvery) MaybeSignHead(now_ms, true);
  return OkStatus();
}

void AuditLog::MaybeSignHead(int64_t now_ms, bool force) {
  const int64_t head = next_seq_ - 1;
  if (!signer_ || head <= signed_seq_) return;
  if (!force && now_ms - last_sign_ms_ < kAuditSignIntervalMs) return;
  AuditHead h;
  h.set_seq(head);
  h.set_hash(last_hash_);
  h.set_unix_ms(now_ms);
  const nlohmann::json payload = {{"seq", head}, {"hash", last_hash_}, {"unix_ms", now_ms}};
  h.set_envelope(SignDsse(kAuditHeadPayloadType, payload.dump(), *signer_));
  Status s = store_->Put(HeadKey(head), h.SerializeAsString());
  if (!s.ok()) {
    SHOAL_LOG_ERROR("cannot store the audit log's signed head: {}", s.ToString());
    return;
  }
  signed_seq_ = head;
  last_sign_ms_ = now_ms;
}

StatusOr<AuditResponse> AuditLog::Read(const AuditRequest& req) const {
  AuditResponse out;
  ASSIGN_OR_RETURN(auto records, store_->Scan("audit/"));
  for (auto& [k, v] : records) {
    if (req.all()) {
      out.add_raw_keys(k);
      out.add_raw_values(v);
      continue;
    }
    AuditEntry e;
    if (!e.ParseFromString(v)) continue;
    if (!req.job_id().empty() && e.job_id() != req.job_id()) continue;
    if (e.unix_ms() < req.since_ms()) continue;
    *out.add_entries() = std::move(e);
  }
  if (req.all()) {
    ASSIGN_OR_RETURN(auto heads, store_->Scan("audit-head/"));
    for (auto& [k, v] : heads) {
      out.add_head_keys(k);
      out.add_head_values(v);
    }
  }
  return out;
}

AuditVerdict VerifyAuditLog(const std::vector<std::pair<std::string, std::string>>& records,
                            const std::vector<std::pair<std::string, std::string>>& heads, const TrustStore* trust) {
  AuditVerdict v;
  auto fail = [&v](int64_t seq, const std::string& why) {
    if (!v.ok) return;
    v.ok = false;
    v.first_bad_seq = seq;
    v.problem = why;
  };
  std::map<int64_t, std::string> hash_at;  // entries that verified, for the heads
  std::string prev_hash;
  int64_t expected = 1;
  for (const auto& [key, value] : records) {
    const int64_t seq = SeqOfKey(key, "audit/");
    if (seq < 1) {
      fail(expected, "a record stored as '" + key + "' after entry " + std::to_string(expected - 1) +
                         " is not one the log writes (inserted)");
      break;
    }
    if (seq > expected) {
      fail(expected, "entry " + std::to_string(expected) + " is missing (deleted): the log goes on at entry " +
                         std::to_string(seq));
      break;
    }
    AuditEntry e;
    if (!e.ParseFromString(value)) {
      fail(seq, "entry " + std::to_string(seq) + " does not parse (edited)");
      break;
    }
    if (e.seq() != seq) {
      fail(seq, "entry " + std::to_string(seq) + " holds the record of entry " + std::to_string(e.seq()) +
                    " (moved or reordered)");
      break;
    }
    if (AuditEntryHash(e) != e.hash()) {
      fail(seq, "entry " + std::to_string(seq) + " was edited: its fields do not match its hash");
      break;
    }
    if (e.prev_hash() != prev_hash) {
      fail(seq - 1, "entry " + std::to_string(seq) + " does not chain to entry " + std::to_string(seq - 1) +
                        ": entry " + std::to_string(seq - 1) + " was replaced, or one was inserted before " +
                        std::to_string(seq));
      break;
    }
    hash_at[seq] = e.hash();
    prev_hash = e.hash();
    ++expected;
    ++v.entries;
  }
  int64_t last_signed = 0;
  for (const auto& [key, value] : heads) {
    const int64_t seq = SeqOfKey(key, "audit-head/");
    AuditHead h;
    if (seq < 1 || !h.ParseFromString(value) || h.seq() != seq) {
      fail(std::max<int64_t>(seq, 0), "signed head record '" + key + "' is corrupt");
      continue;
    }
    if (trust != nullptr) {
      auto env = VerifyDsse(h.envelope(), *trust);
      if (!env.ok()) {
        fail(seq, "the signed head at entry " + std::to_string(seq) + " does not verify: " + env.status().message());
        continue;
      }
      const auto payload = nlohmann::json::parse(env->payload, nullptr, false);
      if (env->payload_type != kAuditHeadPayloadType || payload.is_discarded() || !payload.is_object() ||
          payload.value("seq", int64_t{-1}) != seq || payload.value("hash", std::string()) != h.hash()) {
        fail(seq, "the signed head at entry " + std::to_string(seq) + " signs something else than its record says");
        continue;
      }
    }
    auto it = hash_at.find(seq);
    if (it == hash_at.end()) {
      // The chain stopped earlier (already reported) or the entry is gone.
      if (v.ok) fail(seq, "entry " + std::to_string(seq) + ", which a signed head covers, is missing (deleted)");
      continue;
    }
    if (it->second != h.hash()) {
      fail(last_signed + 1, "entries " + std::to_string(last_signed + 1) + ".." + std::to_string(seq) +
                                " were rewritten after they were signed (the head signed at entry " +
                                std::to_string(seq) + " does not match the chain)");
      continue;
    }
    if (trust != nullptr) ++v.heads;
    last_signed = seq;
  }
  v.unsigned_tail = v.entries - last_signed;
  return v;
}

}  // namespace shoal
