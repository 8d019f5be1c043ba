// Lets Gloo's rendezvous (connectFullMesh) run over Shoal's KvStore: every key is
// scoped under "<prefix>/gloo/" so each job generation, and each backend, rendezvous
// separately, and one deadline bounds the whole rendezvous.
#pragma once

#include <chrono>
#include <mutex>
#include <string>
#include <vector>

#include <gloo/rendezvous/store.h>

#include "collectives/communicator.h"

namespace shoal {

class KvStoreAdapter : public gloo::rendezvous::Store {
 public:
  // `kv` must outlive the adapter. The deadline starts now.
  KvStoreAdapter(KvStore* kv, std::string prefix, std::chrono::milliseconds timeout);

  // Gloo's Store interface reports failure by throwing; each failure throws a
  // gloo::IoException and keeps the Status so the factory can return it as is.
  void set(const std::string& key, const std::vector<char>& data) override;
  std::vector<char> get(const std::string& key) override;
  void wait(const std::vector<std::string>& keys) override;
  // Gloo passes its context timeout here; we use the rendezvous deadline instead so
  // waiting for several peers in turn cannot add up to several timeouts.
  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override;

  // The first failure seen (OK if none).
  Status error() const;
  std::string ScopedKey(const std::string& key) const;

 private:
  std::chrono::milliseconds Remaining() const;
  [[noreturn]] void Fail(Status status);

  KvStore* kv_;
  std::string prefix_;
  std::chrono::milliseconds timeout_;
  std::chrono::steady_clock::time_point deadline_;
  mutable std::mutex mu_;
  Status error_;
};

}  // namespace shoal
