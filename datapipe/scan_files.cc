// Encoding of the scan's outputs. Every read treats the file as hostile: sizes, order
// and checksum are checked before an id is believed.
#include "datapipe/scan_files.h"

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "common/file_util.h"
#include "common/sha256.h"
#include "datapipe/le_bytes.h"

namespace shoal {

namespace {
constexpr char kAdmittedMagic[] = "SHOALADM";
constexpr uint32_t kAdmittedVersion = 1;
constexpr size_t kAdmittedHeader = 8 + 4 + 4 + 8 + 8 + 32;

using datapipe_le::Get;
using datapipe_le::Put;
}  // namespace

std::string EncodeAdmitted(const AdmittedIndex& index) {
  std::string out(kAdmittedMagic, 8);
  Put(out, kAdmittedVersion, 4);
  Put(out, 0, 4);
  Put(out, index.ids.size(), 8);
  Put(out, static_cast<uint64_t>(index.total_records), 8);
  auto raw = FromHex(index.manifest_sha256);
  std::string digest = raw.ok() && raw->size() == 32 ? *raw : std::string(32, '\0');
  out += digest;
  for (int64_t id : index.ids) Put(out, static_cast<uint64_t>(id), 8);
  Digest d = Sha256Of(out);
  out.append(reinterpret_cast<const char*>(d.data()), d.size());
  return out;
}

StatusOr<AdmittedIndex> DecodeAdmitted(const std::string& bytes, const std::string& name) {
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  if (bytes.size() < kAdmittedHeader + 32) return DataLoss(name + " is truncated");
  if (std::memcmp(p, kAdmittedMagic, 8) != 0) return InvalidArgument(name + " is not an admitted-record index");
  if (Get(p + 8, 4) != kAdmittedVersion) return InvalidArgument(name + " has an unknown version");
  uint64_t count = Get(p + 16, 8);
  if (count > (bytes.size() - kAdmittedHeader - 32) / 8 || bytes.size() != kAdmittedHeader + count * 8 + 32)
    return DataLoss(name + " size does not match its record count (truncated or padded)");
  Digest d = Sha256Of(bytes.data(), bytes.size() - 32);
  if (std::memcmp(d.data(), p + bytes.size() - 32, 32) != 0)
    return DataLoss(name + " fails its checksum (altered or corrupt)");
  AdmittedIndex out;
  out.total_records = static_cast<int64_t>(Get(p + 24, 8));
  out.manifest_sha256 = ToHex(p + 32, 32);
  out.ids.resize(count);
  int64_t prev = -1;
  for (uint64_t i = 0; i < count; ++i) {
    uint64_t id = Get(p + kAdmittedHeader + 8 * i, 8);
    if (static_cast<int64_t>(id) <= prev || id >= static_cast<uint64_t>(out.total_records))
      return DataLoss(name + " holds ids out of order or out of range");
    out.ids[i] = prev = static_cast<int64_t>(id);
  }
  return out;
}

StatusOr<AdmittedIndex> ReadAdmitted(const std::string& dataset_dir) {
  std::string path = dataset_dir + "/" + kScanDir + "/" + kAdmittedFile;
  if (!PathExists(path)) return NotFound(dataset_dir + " has not been scanned (no " + kScanDir + "/" + kAdmittedFile +
                                         "); run `shoalctl data scan " + dataset_dir + "`");
  ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  return DecodeAdmitted(bytes, path);
}

std::string QuarantineJsonLine(const QuarantineEntry& e) {
  nlohmann::json j = {{"record_id", e.record_id}, {"shard", e.shard},   {"index", e.index},
                      {"label", e.label},         {"filter", e.filter}, {"reason", e.reason},
                      {"score", std::isfinite(e.score) ? e.score : 0.0}};
  // Reasons and names can carry bytes from a hostile manifest: never throw on bad UTF-8.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

StatusOr<std::vector<QuarantineEntry>> ReadQuarantine(const std::string& dataset_dir, const std::string& filter,
                                                      int64_t limit) {
  std::string path = dataset_dir + "/" + kScanDir + "/" + kQuarantineFile;
  if (!PathExists(path)) return NotFound(dataset_dir + " has not been scanned (no " + kScanDir + "/" +
                                         kQuarantineFile + "); run `shoalctl data scan " + dataset_dir + "`");
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  std::vector<QuarantineEntry> out;
  size_t pos = 0;
  int64_t line_no = 0;
  while (pos < text.size() && (limit < 0 || static_cast<int64_t>(out.size()) < limit)) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (line.empty()) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    auto bad = [&] { return DataLoss(path + " line " + std::to_string(line_no) + " is malformed"); };
    if (j.is_discarded() || !j.is_object()) return bad();
    QuarantineEntry e;
    if (!j.contains("record_id") || !j["record_id"].is_number_integer() || !j.contains("filter") ||
        !j["filter"].is_string())
      return bad();
    e.record_id = j["record_id"].get<int64_t>();
    e.filter = j["filter"].get<std::string>();
    if (j.contains("shard") && j["shard"].is_string()) e.shard = j["shard"].get<std::string>();
    if (j.contains("index") && j["index"].is_number_integer()) e.index = j["index"].get<int64_t>();
    if (j.contains("label") && j["label"].is_number_integer()) e.label = j["label"].get<int32_t>();
    if (j.contains("reason") && j["reason"].is_string()) e.reason = j["reason"].get<std::string>();
    if (j.contains("score") && j["score"].is_number()) e.score = j["score"].get<double>();
    if (!filter.empty() && e.filter != filter) continue;
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace shoal
