// KvStore over the control client: each call on a client borrowed from a pool, so that
// concurrent calls (a long-poll Get and a Set) never wait for one another.
#include "worker/coordinator_kv.h"

#include <algorithm>
#include <utility>

namespace shoal {

// One borrowed client. It goes back to the pool after a call that got an answer; after
// kUnavailable (no answer in time) it is dropped instead, together with whatever its
// socket still queues, so a late request cannot reach the coordinator after the caller
// was told it failed, and the next call starts on a fresh connection.
class CoordinatorKvStore::Lease {
 public:
  explicit Lease(CoordinatorKvStore* store) : store_(store) {
    {
      std::lock_guard<std::mutex> l(store_->mu_);
      if (!store_->idle_.empty()) {
        client_ = std::move(store_->idle_.back());
        store_->idle_.pop_back();
      }
    }
    // Made outside the lock: creating a ZeroMQ context starts its I/O thread.
    if (!client_) client_ = std::make_unique<ControlClient>(store_->endpoint_);
  }
  ~Lease() {
    if (!reusable_) return;
    std::lock_guard<std::mutex> l(store_->mu_);
    if (store_->idle_.size() < kMaxIdleClients) store_->idle_.push_back(std::move(client_));
  }
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;

  ControlClient& client() { return *client_; }
  void set_reusable(bool reusable) { reusable_ = reusable; }

 private:
  CoordinatorKvStore* store_;
  std::unique_ptr<ControlClient> client_;
  bool reusable_ = true;
};

StatusOr<Response> CoordinatorKvStore::Call(const Request& request, std::chrono::milliseconds timeout) {
  Lease lease(this);
  StatusOr<Response> resp = lease.client().Call(request, timeout);
  lease.set_reusable(resp.ok() || resp.status().code() != StatusCode::kUnavailable);
  return resp;
}

// A coordinator that restarts loses the requests it held (a parked long poll, a set in
// flight): each call is therefore short and repeated until the caller's deadline, so a
// restart costs a rendezvous about a second, not the whole timeout (found by the chaos
// soak: a worker held 10 s publishing its address across a coordinator restart).
constexpr auto kTry = std::chrono::milliseconds(1000);
constexpr auto kSlack = std::chrono::milliseconds(500);  // the round trip's allowance

Status CoordinatorKvStore::Set(const std::string& key, const std::string& value) {
  Request r;
  r.mutable_kv_set()->set_key(key);
  r.mutable_kv_set()->set_value(value);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (;;) {
    Status s = Call(r, kTry).status();  // the same key and value again: idempotent
    if (s.ok() || s.code() != StatusCode::kUnavailable || std::chrono::steady_clock::now() >= deadline)
      return s.WithContext("kv set " + key);
  }
}

StatusOr<std::string> CoordinatorKvStore::Get(const std::string& key, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    const auto poll = std::max(std::chrono::milliseconds(1), std::min(left, kTry));
    Request r;
    r.mutable_kv_get()->add_keys(key);
    r.mutable_kv_get()->set_timeout_ms(poll.count());
    StatusOr<Response> resp = Call(r, poll + kSlack);
    const bool again = !resp.ok() && (resp.status().code() == StatusCode::kDeadlineExceeded ||
                                      resp.status().code() == StatusCode::kUnavailable);
    if (again && std::chrono::steady_clock::now() < deadline) continue;
    if (!resp.ok()) {
      if (resp.status().code() == StatusCode::kUnavailable) return resp.status().WithContext("kv get " + key);
      return resp.status();
    }
    if (resp->kv_get().values_size() != 1) return Internal("kv get " + key + ": malformed answer");
    return resp->kv_get().values(0);
  }
}

}  // namespace shoal
