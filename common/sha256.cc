// SHA-256 helpers over OpenSSL's EVP interface.
#include "common/sha256.h"

#include <cstdio>
#include <vector>

namespace shoal {

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
Sha256::~Sha256() { EVP_MD_CTX_free(ctx_); }

void Sha256::Update(const void* data, size_t len) {
  if (len > 0) EVP_DigestUpdate(ctx_, data, len);
}

Digest Sha256::Finish() {
  Digest d{};
  unsigned int n = 0;
  EVP_DigestFinal_ex(ctx_, d.data(), &n);
  EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr);  // ready for reuse
  return d;
}

Digest Sha256Of(const void* data, size_t len) {
  Sha256 h;
  h.Update(data, len);
  return h.Finish();
}

std::string Sha256Hex(std::string_view s) { return ToHex(Sha256Of(s)); }

StatusOr<std::string> Sha256FileHex(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return NotFound("cannot open " + path);
  Sha256 h;
  std::vector<char> buf(1 << 20);
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), f)) > 0) h.Update(buf.data(), n);
  bool failed = std::ferror(f);
  std::fclose(f);
  if (failed) return DataLoss("read error in " + path);
  return ToHex(h.Finish());
}

std::string ToHex(const void* data, size_t len) {
  static const char* kDigits = "0123456789abcdef";
  const auto* p = static_cast<const uint8_t*>(data);
  std::string out(len * 2, '0');
  for (size_t i = 0; i < len; ++i) {
    out[2 * i] = kDigits[p[i] >> 4];
    out[2 * i + 1] = kDigits[p[i] & 15];
  }
  return out;
}

StatusOr<std::string> FromHex(std::string_view hex) {
  if (hex.size() % 2) return InvalidArgument("hex string has odd length");
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out(hex.size() / 2, '\0');
  for (size_t i = 0; i < out.size(); ++i) {
    int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return InvalidArgument("invalid hex digit");
    out[i] = static_cast<char>(hi * 16 + lo);
  }
  return out;
}

}  // namespace shoal
