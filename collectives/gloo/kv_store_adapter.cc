// KvStoreAdapter: Gloo's rendezvous store contract (set/get/wait that throw) mapped
// onto KvStore's Status results. Values are hex-encoded because Gloo stores raw
// sockaddr bytes and the coordinator's store may only carry text.
#include "collectives/gloo/kv_store_adapter.h"

#include <algorithm>
#include <utility>

#include <gloo/common/error.h>

namespace shoal {
namespace {

std::string HexEncode(const std::vector<char>& data) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(data.size() * 2);
  for (char c : data) {
    const auto b = static_cast<unsigned char>(c);
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 0xF]);
  }
  return out;
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

StatusOr<std::vector<char>> HexDecode(const std::string& text) {
  if (text.size() % 2 != 0) return DataLoss("odd-length hex value");
  std::vector<char> out(text.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) {
    const int hi = HexDigit(text[2 * i]);
    const int lo = HexDigit(text[2 * i + 1]);
    if (hi < 0 || lo < 0) return DataLoss("non-hex character in value");
    out[i] = static_cast<char>((hi << 4) | lo);
  }
  return out;
}

}  // namespace

KvStoreAdapter::KvStoreAdapter(KvStore* kv, std::string prefix, std::chrono::milliseconds timeout)
    : kv_(kv),
      prefix_(std::move(prefix)),
      timeout_(timeout),
      deadline_(std::chrono::steady_clock::now() + timeout) {}

std::string KvStoreAdapter::ScopedKey(const std::string& key) const {
  return prefix_ + "/gloo/" + key;
}

std::chrono::milliseconds KvStoreAdapter::Remaining() const {
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline_ -
                                                                  std::chrono::steady_clock::now());
  return std::max(left, std::chrono::milliseconds(0));
}

Status KvStoreAdapter::error() const {
  std::lock_guard<std::mutex> lock(mu_);
  return error_;
}

void KvStoreAdapter::Fail(Status status) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (error_.ok()) error_ = status;
  }
  throw gloo::IoException(status.ToString());
}

void KvStoreAdapter::set(const std::string& key, const std::vector<char>& data) {
  const Status s = kv_->Set(ScopedKey(key), HexEncode(data));
  if (!s.ok()) Fail(s.WithContext("gloo rendezvous: publishing '" + ScopedKey(key) + "'"));
}

std::vector<char> KvStoreAdapter::get(const std::string& key) {
  auto value = kv_->Get(ScopedKey(key), Remaining());
  if (!value.ok()) {
    Fail(value.status().WithContext("gloo rendezvous: reading '" + ScopedKey(key) + "'"));
  }
  auto bytes = HexDecode(*value);
  if (!bytes.ok()) {
    Fail(bytes.status().WithContext("gloo rendezvous: value of '" + ScopedKey(key) + "'"));
  }
  return std::move(bytes).value();
}

void KvStoreAdapter::wait(const std::vector<std::string>& keys) {
  for (const auto& key : keys) {
    auto value = kv_->Get(ScopedKey(key), Remaining());
    if (value.ok()) continue;
    if (value.status().code() == StatusCode::kDeadlineExceeded) {
      Fail(DeadlineExceeded("gloo rendezvous: '" + ScopedKey(key) + "' not published within " +
                            std::to_string(timeout_.count()) +
                            " ms; has every rank of this generation started? (" +
                            value.status().message() + ")"));
    }
    Fail(value.status().WithContext("gloo rendezvous: waiting for '" + ScopedKey(key) + "'"));
  }
}

void KvStoreAdapter::wait(const std::vector<std::string>& keys,
                          const std::chrono::milliseconds& /*timeout*/) {
  wait(keys);
}

}  // namespace shoal
