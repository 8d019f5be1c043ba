// The rendezvous key-value store the coordinator serves: keys are scoped by the client
// ("<job>/gen-<n>/..."), values are opaque. A get on missing keys is a long poll: it is
// answered when every key exists or at its deadline, never by blocking the server loop.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/store.h"

namespace shoal {

class KvService {
 public:
  // answer(status, values) is called exactly once per Get, now or later.
  using Answer = std::function<void(const Status&, const std::vector<std::string>&)>;

  explicit KvService(StateStore* store) : store_(store) {}
  Status Load();  // reloads persisted keys after a coordinator restart

  Status Set(const std::string& key, const std::string& value);
  void Get(const std::vector<std::string>& keys, int64_t deadline_ms, Answer answer);
  // Answers waiters whose deadline passed with kDeadlineExceeded.
  void Expire(int64_t now_ms);
  // Drops every key under `prefix` (a finished generation's scope).
  void DropPrefix(const std::string& prefix);
  size_t waiting() const { return waiters_.size(); }

 private:
  struct Waiter {
    std::vector<std::string> keys;
    int64_t deadline_ms;
    Answer answer;
  };
  bool TryAnswer(Waiter& w);

  StateStore* store_;
  std::map<std::string, std::string> values_;
  std::vector<Waiter> waiters_;
};

}  // namespace shoal
