// IDX reading through zlib's gz* interface, which also reads uncompressed files.
#include "datapipe/idx.h"

#include <zlib.h>

#include <random>

#include "common/file_util.h"

namespace shoal {

namespace {
StatusOr<std::string> ReadMaybeGzip(const std::string& path) {
  if (!PathExists(path)) return NotFound("no such file: " + path);
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) return NotFound("cannot open " + path);
  std::string out;
  char buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof(buf))) > 0) out.append(buf, n);
  int err = 0;
  const char* msg = gzerror(f, &err);
  gzclose(f);
  if (n < 0 || (err != Z_OK && err != Z_STREAM_END))
    return DataLoss(path + ": corrupt or truncated gzip stream (" + msg + ")");
  return out;
}

uint32_t BigEndian32(const std::string& s, size_t off) {
  auto b = [&](size_t i) { return static_cast<uint32_t>(static_cast<uint8_t>(s[off + i])); };
  return (b(0) << 24) | (b(1) << 16) | (b(2) << 8) | b(3);
}
}  // namespace

StatusOr<IdxArray> ReadIdxFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string raw, ReadMaybeGzip(path));
  if (raw.size() < 4) return DataLoss(path + ": too short for an IDX header");
  if (raw[0] != 0 || raw[1] != 0) return InvalidArgument(path + ": not an IDX file (bad magic)");
  if (static_cast<uint8_t>(raw[2]) != 0x08) return InvalidArgument(path + ": only unsigned-byte IDX is supported");
  int ndims = static_cast<uint8_t>(raw[3]);
  if (ndims < 1 || ndims > 4) return InvalidArgument(path + ": IDX with " + std::to_string(ndims) + " dimensions");
  size_t header = 4 + 4 * static_cast<size_t>(ndims);
  if (raw.size() < header) return DataLoss(path + ": truncated IDX header");
  IdxArray arr;
  int64_t total = 1;
  for (int i = 0; i < ndims; ++i) {
    int64_t d = BigEndian32(raw, 4 + 4 * i);
    if (d <= 0 || d > (1 << 28)) return InvalidArgument(path + ": implausible dimension " + std::to_string(d));
    arr.dims.push_back(d);
    total *= d;
    if (total > (int64_t{1} << 34)) return InvalidArgument(path + ": IDX array too large");
  }
  if (raw.size() - header != static_cast<size_t>(total))
    return DataLoss(path + ": expected " + std::to_string(total) + " data bytes, found " +
                    std::to_string(raw.size() - header) + " (truncated or inconsistent file)");
  arr.bytes = raw.substr(header);
  return arr;
}

StatusOr<InMemoryDataset> LoadIdxPair(const std::string& images_path, const std::string& labels_path) {
  ASSIGN_OR_RETURN(IdxArray images, ReadIdxFile(images_path));
  ASSIGN_OR_RETURN(IdxArray labels, ReadIdxFile(labels_path));
  if (images.dims.size() != 3) return InvalidArgument(images_path + ": expected a 3-D image array");
  if (labels.dims.size() != 1) return InvalidArgument(labels_path + ": expected a 1-D label array");
  if (images.dims[0] != labels.dims[0])
    return InvalidArgument(images_path + " has " + std::to_string(images.dims[0]) + " images but " + labels_path +
                           " has " + std::to_string(labels.dims[0]) + " labels");
  InMemoryDataset ds;
  ds.n = images.dims[0];
  ds.dim = static_cast<int>(images.dims[1] * images.dims[2]);
  ds.x.resize(images.bytes.size());
  for (size_t i = 0; i < images.bytes.size(); ++i) ds.x[i] = static_cast<uint8_t>(images.bytes[i]) / 255.0f;
  ds.y.resize(ds.n);
  for (int64_t i = 0; i < ds.n; ++i) {
    ds.y[i] = static_cast<uint8_t>(labels.bytes[i]);
    ds.num_classes = std::max(ds.num_classes, ds.y[i] + 1);
  }
  return ds;
}

StatusOr<InMemoryDataset> LoadFashionMnist(const std::string& dir, const std::string& split) {
  if (!PathExists(dir))
    return NotFound("dataset folder " + dir + " does not exist (on Debian: apt-get install dataset-fashion-mnist)");
  auto pick = [&](const std::string& stem) {
    std::string gz = dir + "/" + stem + ".gz";
    return PathExists(gz) ? gz : dir + "/" + stem;
  };
  return LoadIdxPair(pick(split + "-images-idx3-ubyte"), pick(split + "-labels-idx1-ubyte"));
}

InMemoryDataset RandomDataset(int64_t n, int dim, int classes, uint64_t seed) {
  InMemoryDataset ds;
  ds.n = n;
  ds.dim = dim;
  ds.num_classes = classes;
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(0, 1);
  ds.x.resize(static_cast<size_t>(n) * dim);
  for (auto& v : ds.x) v = u(rng);
  ds.y.resize(n);
  for (int64_t i = 0; i < n; ++i) ds.y[i] = static_cast<int32_t>(rng() % classes);
  return ds;
}

}  // namespace shoal
