// RocksDB and in-memory StateStore implementations.
#include "coordinator/store.h"

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>

#include <mutex>

#include "common/file_util.h"

namespace shoal {

namespace {

// Every RocksDB call is checked where it happens and turned into a Status.
Status FromRocks(const rocksdb::Status& s, const std::string& what) {
  if (s.ok()) return OkStatus();
  if (s.IsNotFound()) return NotFound(what + ": not found");
  if (s.IsIOError() && s.ToString().find("lock") != std::string::npos)
    return Unavailable(what + ": " + s.ToString() + " (is another coordinator using this state dir?)");
  return Internal(what + ": " + s.ToString());
}

class RocksStore : public StateStore {
 public:
  explicit RocksStore(rocksdb::DB* db) : db_(db) {}
  ~RocksStore() override { delete db_; }

  Status Put(const std::string& key, const std::string& value) override {
    return FromRocks(db_->Put(SyncWrite(), key, value), "rocksdb put " + key);
  }
  Status PutBatch(const std::vector<std::pair<std::string, std::string>>& kvs) override {
    rocksdb::WriteBatch batch;
    for (const auto& [k, v] : kvs) batch.Put(k, v);
    return FromRocks(db_->Write(SyncWrite(), &batch), "rocksdb write batch");
  }
  StatusOr<std::string> Get(const std::string& key) override {
    std::string value;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), key, &value);
    if (s.IsNotFound()) return NotFound("no state for " + key);
    RETURN_IF_ERROR(FromRocks(s, "rocksdb get " + key));
    return value;
  }
  Status Delete(const std::string& key) override {
    return FromRocks(db_->Delete(SyncWrite(), key), "rocksdb delete " + key);
  }
  StatusOr<std::vector<std::pair<std::string, std::string>>> Scan(const std::string& prefix) override {
    std::vector<std::pair<std::string, std::string>> out;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next())
      out.emplace_back(it->key().ToString(), it->value().ToString());
    RETURN_IF_ERROR(FromRocks(it->status(), "rocksdb scan " + prefix));
    return out;
  }

 private:
  // Every write goes through RocksDB's write-ahead log, so a coordinator process crash
  // loses nothing acknowledged. No fsync per write: heartbeats arrive several times a
  // second per worker and an fsync costs milliseconds; a machine crash may lose the
  // last moments of heartbeats, which the workers resend anyway.
  static rocksdb::WriteOptions SyncWrite() { return rocksdb::WriteOptions(); }
  rocksdb::DB* db_;
};

class MemoryStore : public StateStore {
 public:
  Status Put(const std::string& key, const std::string& value) override {
    std::lock_guard<std::mutex> l(mu_);
    data_[key] = value;
    return OkStatus();
  }
  Status PutBatch(const std::vector<std::pair<std::string, std::string>>& kvs) override {
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& [k, v] : kvs) data_[k] = v;
    return OkStatus();
  }
  StatusOr<std::string> Get(const std::string& key) override {
    std::lock_guard<std::mutex> l(mu_);
    auto it = data_.find(key);
    if (it == data_.end()) return NotFound("no state for " + key);
    return it->second;
  }
  Status Delete(const std::string& key) override {
    std::lock_guard<std::mutex> l(mu_);
    data_.erase(key);
    return OkStatus();
  }
  StatusOr<std::vector<std::pair<std::string, std::string>>> Scan(const std::string& prefix) override {
    std::lock_guard<std::mutex> l(mu_);
    std::vector<std::pair<std::string, std::string>> out;
    for (auto it = data_.lower_bound(prefix); it != data_.end() && it->first.starts_with(prefix); ++it)
      out.push_back(*it);
    return out;
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::string> data_;
};

}  // namespace

StatusOr<std::unique_ptr<StateStore>> OpenRocksStore(const std::string& path) {
  RETURN_IF_ERROR(MakeDirs(path));
  rocksdb::Options options;
  options.create_if_missing = true;
  options.max_open_files = 64;
  options.keep_log_file_num = 2;
  rocksdb::DB* db = nullptr;
  RETURN_IF_ERROR(FromRocks(rocksdb::DB::Open(options, path, &db), "open state store " + path));
  return std::unique_ptr<StateStore>(new RocksStore(db));
}

std::unique_ptr<StateStore> NewMemoryStore() { return std::make_unique<MemoryStore>(); }

}  // namespace shoal
