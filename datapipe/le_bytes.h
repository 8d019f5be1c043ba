// Little-endian integers written and read byte by byte, so that the datapipe's file
// formats (shards, the admitted-id index) do not depend on the host's byte order.
#pragma once

#include <cstdint>
#include <string>

namespace shoal::datapipe_le {

// Appends the low `bytes` bytes of v.
inline void Put(std::string& s, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
// The `bytes`-byte integer at p.
inline uint64_t Get(const uint8_t* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

}  // namespace shoal::datapipe_le
