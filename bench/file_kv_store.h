// A KvStore over a shared directory, for benchmarks launched by mpirun without a
// coordinator: Set writes a file atomically, Get polls for it.
#pragma once

#include <thread>

#include "collectives/communicator.h"
#include "common/clock.h"
#include "common/file_util.h"

namespace shoal {

class FileKvStore : public KvStore {
 public:
  explicit FileKvStore(std::string dir) : dir_(std::move(dir)) { (void)MakeDirs(dir_); }
  Status Set(const std::string& key, const std::string& value) override {
    return WriteFileAtomic(Path(key), value);
  }
  StatusOr<std::string> Get(const std::string& key, std::chrono::milliseconds timeout) override {
    double deadline = MonotonicSeconds() + timeout.count() / 1000.0;
    for (;;) {
      auto v = ReadFile(Path(key));
      if (v.ok()) return v;
      if (MonotonicSeconds() > deadline) return DeadlineExceeded("key " + key + " never appeared");
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

 private:
  std::string Path(std::string key) const {
    for (char& c : key)
      if (c == '/') c = '_';
    return dir_ + "/" + key;
  }
  std::string dir_;
};

}  // namespace shoal
