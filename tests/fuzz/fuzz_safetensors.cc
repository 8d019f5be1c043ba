// Fuzz target: the safetensors reader (header length, JSON header, offsets) and the
// ShardInfo wire decoder, both of which read bytes from outside the process.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "checkpoint/safetensors.h"
#include "checkpoint/writer.h"

extern const char kShoalFuzzTarget[] = "safetensors";

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  (void)shoal::ParseSafetensors(in);
  (void)shoal::DecodeShardInfo(in);
  return 0;
}

std::vector<std::string> ShoalFuzzSeeds() {
  nlohmann::json h = {{"w", {{"dtype", "F32"}, {"shape", {2, 2}}, {"data_offsets", {0, 16}}}},
                      {"b", {{"dtype", "BF16"}, {"shape", {4}}, {"data_offsets", {16, 24}}}},
                      {"__metadata__", {{"format", "pt"}, {"shoal.step", "7"}}}};
  std::string header = h.dump();
  header.append((8 - header.size() % 8) % 8, ' ');
  std::string file(8, '\0');
  for (int i = 0; i < 8; ++i) file[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  file += header + std::string(24, '\x3f');
  shoal::ShardInfo info{"/d/step-1.tmp-n", 1, 2, "shard-1-of-2.bin", 99, std::string(64, 'a'), "", std::nullopt};
  return {file, shoal::EncodeShardInfo(info)};
}
