// KvStore over the control client.
#include "worker/coordinator_kv.h"

namespace shoal {

Status CoordinatorKvStore::Set(const std::string& key, const std::string& value) {
  std::lock_guard<std::mutex> l(mu_);
  Request r;
  r.mutable_kv_set()->set_key(key);
  r.mutable_kv_set()->set_value(value);
  return client_.Call(r, std::chrono::seconds(10)).status().WithContext("kv set " + key);
}

StatusOr<std::string> CoordinatorKvStore::Get(const std::string& key, std::chrono::milliseconds timeout) {
  std::lock_guard<std::mutex> l(mu_);
  Request r;
  r.mutable_kv_get()->add_keys(key);
  r.mutable_kv_get()->set_timeout_ms(timeout.count());
  // The coordinator answers at the deadline at the latest; allow for the round trip.
  ASSIGN_OR_RETURN(Response resp, client_.Call(r, timeout + std::chrono::seconds(5)));
  if (resp.kv_get().values_size() != 1) return Internal("kv get " + key + ": malformed answer");
  return resp.kv_get().values(0);
}

}  // namespace shoal
