// MemoryKvStore: a map under one mutex; Get blocks on a condition variable so that a
// waiting rank wakes as soon as its peer publishes, not on a polling interval.
#include "collectives/memory_kv_store.h"

namespace shoal {

Status MemoryKvStore::Set(const std::string& key, const std::string& value) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    values_[key] = value;
  }
  cv_.notify_all();
  return OkStatus();
}

StatusOr<std::string> MemoryKvStore::Get(const std::string& key,
                                         std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  const auto deadline =
      std::chrono::steady_clock::now() + std::max(timeout, std::chrono::milliseconds(0));
  const bool found = cv_.wait_until(lock, deadline, [&] { return values_.count(key) > 0; });
  if (!found) {
    return DeadlineExceeded("key '" + key + "' not set within " +
                            std::to_string(timeout.count()) + " ms");
  }
  return values_[key];
}

size_t MemoryKvStore::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return values_.size();
}

}  // namespace shoal
