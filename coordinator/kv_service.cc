// Key-value rendezvous with long-poll waiters.
#include "coordinator/kv_service.h"

#include <algorithm>

namespace shoal {

namespace {
constexpr char kPrefix[] = "kv/";
}

Status KvService::Load() {
  ASSIGN_OR_RETURN(auto entries, store_->Scan(kPrefix));
  for (auto& [k, v] : entries) values_[k.substr(sizeof(kPrefix) - 1)] = v;
  return OkStatus();
}

Status KvService::Set(const std::string& key, const std::string& value) {
  if (key.empty()) return InvalidArgument("empty key");
  if (value.size() > (1 << 20)) return InvalidArgument("value for " + key + " exceeds 1 MiB");
  RETURN_IF_ERROR(store_->Put(kPrefix + key, value));
  values_[key] = value;
  // Answer every waiter that is now complete; keep the others.
  std::vector<Waiter> still;
  for (auto& w : waiters_)
    if (!TryAnswer(w)) still.push_back(std::move(w));
  waiters_ = std::move(still);
  return OkStatus();
}

bool KvService::TryAnswer(Waiter& w) {
  std::vector<std::string> out;
  for (const auto& k : w.keys) {
    auto it = values_.find(k);
    if (it == values_.end()) return false;
    out.push_back(it->second);
  }
  w.answer(OkStatus(), out);
  return true;
}

void KvService::Get(const std::vector<std::string>& keys, int64_t deadline_ms, Answer answer) {
  Waiter w{keys, deadline_ms, std::move(answer)};
  if (!TryAnswer(w)) waiters_.push_back(std::move(w));
}

void KvService::Expire(int64_t now_ms) {
  std::vector<Waiter> still;
  for (auto& w : waiters_) {
    if (w.deadline_ms <= now_ms) {
      std::string missing;
      for (const auto& k : w.keys)
        if (!values_.count(k)) missing += (missing.empty() ? "" : ", ") + k;
      w.answer(DeadlineExceeded("key(s) not set before the deadline: " + missing), {});
    } else {
      still.push_back(std::move(w));
    }
  }
  waiters_ = std::move(still);
}

void KvService::DropPrefix(const std::string& prefix) {
  for (auto it = values_.lower_bound(prefix); it != values_.end() && it->first.starts_with(prefix);) {
    (void)store_->Delete(kPrefix + it->first);
    it = values_.erase(it);
  }
  // A rendezvous still waiting in a dropped scope can never complete: answer it now,
  // so that a member stuck building a superseded generation's communicator moves on.
  std::vector<Waiter> still;
  for (auto& w : waiters_) {
    const bool dropped = std::any_of(w.keys.begin(), w.keys.end(), [&](const std::string& k) { return k.starts_with(prefix); });
    if (dropped)
      w.answer(Aborted("rendezvous scope " + prefix + " was dropped (its generation ended)"), {});
    else
      still.push_back(std::move(w));
  }
  waiters_ = std::move(still);
}

}  // namespace shoal
