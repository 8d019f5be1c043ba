// SHA-256 through OpenSSL (hardware accelerated): digests of shards, manifests, specs.
#pragma once

#include <openssl/evp.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace shoal {

using Digest = std::array<uint8_t, 32>;

// Incremental hasher, so a writer can hash while it writes (no second read pass).
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(const void* data, size_t len);
  void Update(std::string_view s) { Update(s.data(), s.size()); }
  Digest Finish();

 private:
  EVP_MD_CTX* ctx_;
};

Digest Sha256Of(const void* data, size_t len);
inline Digest Sha256Of(std::string_view s) { return Sha256Of(s.data(), s.size()); }
std::string Sha256Hex(std::string_view s);
StatusOr<std::string> Sha256FileHex(const std::string& path);

std::string ToHex(const void* data, size_t len);
inline std::string ToHex(const Digest& d) { return ToHex(d.data(), d.size()); }
StatusOr<std::string> FromHex(std::string_view hex);

}  // namespace shoal
