// The coordinator's durable state: one key-value interface with a RocksDB
// implementation (production) and an in-memory one (unit tests), as Gloo and Ray do.
// Keys are namespaced by prefix: job/, member/, gen/, event/, kv/, meta/, ckpt/.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

namespace shoal {

class StateStore {
 public:
  virtual ~StateStore() = default;
  virtual Status Put(const std::string& key, const std::string& value) = 0;
  // Applies all puts atomically (one RocksDB WriteBatch).
  virtual Status PutBatch(const std::vector<std::pair<std::string, std::string>>& kvs) = 0;
  virtual StatusOr<std::string> Get(const std::string& key) = 0;  // kNotFound if absent
  virtual Status Delete(const std::string& key) = 0;
  // All entries whose key starts with `prefix`, in key order.
  virtual StatusOr<std::vector<std::pair<std::string, std::string>>> Scan(const std::string& prefix) = 0;
};

// Opens (creating if needed) a RocksDB database at `path`. Fails with kUnavailable when
// another process holds it (RocksDB's LOCK file), naming the path.
StatusOr<std::unique_ptr<StateStore>> OpenRocksStore(const std::string& path);
std::unique_ptr<StateStore> NewMemoryStore();

}  // namespace shoal
