// safetensors writer and reader. The writer streams tensors into a temporary file (no
// second copy of the state in memory); the reader checks what the format promises:
// contiguous, in-bounds offsets whose sizes match dtype x shape.
#include "checkpoint/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/file_util.h"

namespace shoal {

namespace {
using nlohmann::json;

// The format caps the header at 100 MB; anything larger is hostile.
constexpr uint64_t kMaxHeader = 100'000'000;

Status WriteAllFd(int fd, const char* p, size_t n, const std::string& path) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return Internal("write failed on " + path + ": " + std::strerror(errno));
    p += w;
    n -= static_cast<size_t>(w);
  }
  return OkStatus();
}
}  // namespace

std::vector<const NamedTensor*> ExportedTensors(const TrainerSnapshot& snap, bool include_optimizer) {
  std::vector<const NamedTensor*> out;
  for (const auto& t : snap.tensors) {
    const bool state = t.name.rfind("optim.", 0) == 0 || t.name.rfind("codec.", 0) == 0;
    if (include_optimizer || !state) out.push_back(&t);
  }
  if (include_optimizer)
    for (const auto& t : snap.rank_tensors) out.push_back(&t);
  return out;
}

Status ExportSafetensors(const LoadedCheckpoint& ckpt, const std::string& out_path, bool include_optimizer,
                         const std::map<std::string, std::string>& extra_metadata) {
  json header = json::object();
  const std::vector<const NamedTensor*> chosen = ExportedTensors(ckpt.snapshot, include_optimizer);
  uint64_t offset = 0;
  for (const NamedTensor* t : chosen) {
    if (t->name == "__metadata__") return InvalidArgument("a tensor named __metadata__ cannot be exported");
    header[t->name] = {{"dtype", t->dtype}, {"shape", t->shape}, {"data_offsets", {offset, offset + t->bytes.size()}}};
    offset += t->bytes.size();
  }
  const CheckpointManifest& m = ckpt.manifest;
  header["__metadata__"] = {{"format", "pt"},
                            {"shoal.job_id", m.job_id()},
                            {"shoal.step", std::to_string(m.step())},
                            {"shoal.manifest_sha256", ckpt.manifest_digest},
                            {"shoal.signer", ckpt.signer_key_id},
                            {"shoal.spec_digest", m.spec_digest()},
                            {"shoal.code_version", m.code_version()},
                            {"shoal.lineage_digest", m.lineage_digest()},
                            {"shoal.parent_digest", m.parent_digest()},
                            {"shoal.world_size", std::to_string(m.world_size())},
                            {"shoal.codec", m.codec()}};
  // What a reader needs to use the weights without Shoal: how inputs were scaled and in
  // which order the layers apply (PyTorch's nn.Linear layout: weight [out, in]).
  std::string order;
  for (const NamedTensor* t : chosen)
    if (t->name.rfind("optim.", 0) != 0 && t->name.rfind("codec.", 0) != 0) order += (order.empty() ? "" : ",") + t->name;
  header["__metadata__"]["shoal.layer_order"] = order;
  header["__metadata__"]["shoal.model"] =
      "mlp: for each fcI in order, x = x @ fcI.weight^T + fcI.bias, ReLU after every layer but the last; "
      "the last layer's outputs are class logits (softmax for probabilities)";
  header["__metadata__"]["shoal.input_scaling"] =
      "features flattened row-major; u8 pixels as pixel / 255.0 (no mean or std normalisation); f32 as stored";
  for (const auto& [k, v] : extra_metadata) header["__metadata__"][k] = v;
  std::string text = header.dump(-1, ' ', false, json::error_handler_t::replace);
  text.append((8 - text.size() % 8) % 8, ' ');  // keeps the tensor data 8-byte aligned
  uint64_t n = text.size();
  char len_le[8];
  for (int i = 0; i < 8; ++i) len_le[i] = static_cast<char>((n >> (8 * i)) & 0xff);

  RETURN_IF_ERROR(MakeDirs(std::filesystem::path(out_path).parent_path().string().empty()
                               ? "." : std::filesystem::path(out_path).parent_path().string()));
  const std::string tmp = out_path + ".tmp-" + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Internal("cannot create " + tmp + ": " + std::strerror(errno));
  Status s = WriteAllFd(fd, len_le, 8, tmp);
  if (s.ok()) s = WriteAllFd(fd, text.data(), text.size(), tmp);
  for (const NamedTensor* t : chosen)
    if (s.ok()) s = WriteAllFd(fd, t->bytes.data(), t->bytes.size(), tmp);
  if (s.ok() && ::fsync(fd) != 0) s = Internal("fsync failed on " + tmp + ": " + std::strerror(errno));
  ::close(fd);
  if (s.ok() && ::rename(tmp.c_str(), out_path.c_str()) != 0)
    s = Internal("cannot rename " + tmp + " to " + out_path + ": " + std::strerror(errno));
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  return OkStatus();
}

namespace {
StatusOr<SafetensorsFile> ParseUnguarded(std::string_view bytes) {
  if (bytes.size() < 8) return InvalidArgument("safetensors file shorter than its 8-byte header length");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  if (n > kMaxHeader || n > bytes.size() - 8) return InvalidArgument("safetensors header length " + std::to_string(n) + " is out of bounds");
  std::string_view data = bytes.substr(8 + n);
  json header = json::parse(bytes.begin() + 8, bytes.begin() + 8 + n, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) return InvalidArgument("safetensors header is not a JSON object");

  SafetensorsFile out;
  struct Entry {
    uint64_t begin, end;
    NamedTensor t;
  };
  std::vector<Entry> entries;
  for (const auto& [name, v] : header.items()) {
    if (name == "__metadata__") {
      if (!v.is_object()) return InvalidArgument("__metadata__ is not an object");
      for (const auto& [k, mv] : v.items()) {
        if (!mv.is_string()) return InvalidArgument("__metadata__." + k + " is not a string");
        out.metadata[k] = mv.get<std::string>();
      }
      continue;
    }
    if (!v.is_object() || !v.contains("dtype") || !v["dtype"].is_string() || !v.contains("shape") ||
        !v["shape"].is_array() || !v.contains("data_offsets") || !v["data_offsets"].is_array() ||
        v["data_offsets"].size() != 2)
      return InvalidArgument("tensor '" + name + "' lacks dtype, shape or data_offsets");
    Entry e;
    e.t.name = name;
    e.t.dtype = v["dtype"].get<std::string>();
    for (const auto& d : v["shape"]) {
      if (!d.is_number_unsigned()) return InvalidArgument("tensor '" + name + "' has a bad dimension");
      if (d.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) return InvalidArgument("tensor '" + name + "' dimension too large");
      e.t.shape.push_back(static_cast<int64_t>(d.get<uint64_t>()));
    }
    const json& off = v["data_offsets"];
    if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      return InvalidArgument("tensor '" + name + "' has bad data_offsets");
    e.begin = off[0].get<uint64_t>();
    e.end = off[1].get<uint64_t>();
    auto len = TensorByteLength(e.t.dtype, e.t.shape);
    if (!len.ok()) return len.status().WithContext("tensor '" + name + "'");
    if (e.end < e.begin || e.end - e.begin != *len || e.end > data.size())
      return InvalidArgument("tensor '" + name + "' data_offsets disagree with its dtype, shape or the file size");
    entries.push_back(std::move(e));
  }
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expect = 0;
  for (auto& e : entries) {
    if (e.begin != expect) return InvalidArgument("tensor '" + e.t.name + "' overlaps another or leaves a hole");
    expect = e.end;
    e.t.bytes.assign(data.data() + e.begin, e.end - e.begin);
    out.tensors.push_back(std::move(e.t));
  }
  if (expect != data.size()) return InvalidArgument("safetensors data has trailing bytes no tensor covers");
  return out;
}
}  // namespace

StatusOr<SafetensorsFile> ParseSafetensors(std::string_view bytes) {
  try {
    return ParseUnguarded(bytes);
  } catch (const std::exception& e) {  // nlohmann accessors; the checks above should make this unreachable
    return InvalidArgument(std::string("malformed safetensors file: ") + e.what());
  }
}

StatusOr<SafetensorsFile> ReadSafetensors(const std::string& path) {
  ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  auto parsed = ParseSafetensors(bytes);
  if (!parsed.ok()) return parsed.status().WithContext(path);
  return parsed;
}

}  // namespace shoal
