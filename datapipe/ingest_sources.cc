// The ingest front ends: IDX (through ReadIdxFile, which refuses truncated files), raw
// binary records and CSV. Each one checks its input's consistency before the first
// record is written and records the input files' digests in the manifest.
#include <sys/stat.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common/file_util.h"
#include "common/sha256.h"
#include "datapipe/idx.h"
#include "datapipe/ingest.h"

namespace shoal {

namespace {
Status AddSourceDigest(DatasetWriter& w, const std::string& path) {
  ASSIGN_OR_RETURN(std::string digest, Sha256FileHex(path));
  w.AddSource(path, digest);
  return OkStatus();
}

// RAII for stdio files so every early return closes the file.
struct File {
  FILE* f = nullptr;
  ~File() {
    if (f) std::fclose(f);
  }
};
}  // namespace

StatusOr<IngestReport> IngestIdx(const std::string& images_path, const std::string& labels_path,
                                 const std::string& out_dir, const IngestOptions& options) {
  ASSIGN_OR_RETURN(IdxArray images, ReadIdxFile(images_path));
  ASSIGN_OR_RETURN(IdxArray labels, ReadIdxFile(labels_path));
  if (images.dims.size() < 2) return InvalidArgument(images_path + ": expected an image array of 2 or more dimensions");
  if (labels.dims.size() != 1) return InvalidArgument(labels_path + ": expected a 1-D label array");
  if (images.dims[0] != labels.dims[0])
    return InvalidArgument("inconsistent input: " + images_path + " has " + std::to_string(images.dims[0]) +
                           " images but " + labels_path + " has " + std::to_string(labels.dims[0]) + " labels");
  std::vector<int64_t> shape(images.dims.begin() + 1, images.dims.end());
  int64_t dim = 1;
  for (int64_t d : shape) dim *= d;
  if (dim > (1 << 24)) return InvalidArgument(images_path + ": images too large");
  RecordLayout layout{static_cast<uint32_t>(dim), RecordDType::kU8, RecordDType::kU8};
  ASSIGN_OR_RETURN(auto writer, DatasetWriter::Create(out_dir, layout, options));
  RETURN_IF_ERROR(AddSourceDigest(*writer, images_path));
  RETURN_IF_ERROR(AddSourceDigest(*writer, labels_path));
  writer->set_created_by("shoal data ingest --format idx");
  const int64_t n = images.dims[0];
  for (int64_t i = 0; i < n; ++i)
    RETURN_IF_ERROR(writer->Append(static_cast<uint8_t>(labels.bytes[i]), images.bytes.data() + i * dim));
  return writer->Commit(shape);
}

StatusOr<IngestReport> IngestRaw(const std::string& path, int features, const std::string& out_dir,
                                 const IngestOptions& options) {
  if (features <= 0 || features > (1 << 24))
    return InvalidArgument("--features must be in [1, 2^24] for raw input, got " + std::to_string(features));
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return NotFound("no such file: " + path);
  const size_t record = 4 + 4 * static_cast<size_t>(features);
  if (st.st_size == 0) return InvalidArgument(path + " is empty");
  if (static_cast<size_t>(st.st_size) % record != 0)
    return DataLoss(path + " is " + std::to_string(st.st_size) + " bytes, not a whole number of " +
                    std::to_string(record) + "-byte records (i32 label + " + std::to_string(features) +
                    " f32): truncated, or --features is wrong");
  RecordLayout layout{static_cast<uint32_t>(features), RecordDType::kF32, RecordDType::kI32};
  ASSIGN_OR_RETURN(auto writer, DatasetWriter::Create(out_dir, layout, options));
  RETURN_IF_ERROR(AddSourceDigest(*writer, path));
  writer->set_created_by("shoal data ingest --format raw");
  File in;
  in.f = std::fopen(path.c_str(), "rb");
  if (!in.f) return NotFound("cannot open " + path + ": " + std::strerror(errno));
  const int64_t n = st.st_size / static_cast<int64_t>(record);
  // Read in chunks of about 16 MiB whatever the record size.
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(1024, (int64_t{16} << 20) / static_cast<int64_t>(record)));
  std::vector<char> buf(record * static_cast<size_t>(chunk));
  for (int64_t done = 0; done < n;) {
    size_t want = static_cast<size_t>(std::min<int64_t>(chunk, n - done));
    if (std::fread(buf.data(), record, want, in.f) != want)
      return DataLoss(path + ": short read at record " + std::to_string(done) + " (file changed while reading?)");
    for (size_t r = 0; r < want; ++r) {
      int32_t label;
      std::memcpy(&label, buf.data() + r * record, 4);
      RETURN_IF_ERROR(writer->Append(label, buf.data() + r * record + 4));
    }
    done += static_cast<int64_t>(want);
  }
  return writer->Commit(options.shape);
}

StatusOr<IngestReport> IngestCsv(const std::string& path, const std::string& out_dir, const IngestOptions& options) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  std::unique_ptr<DatasetWriter> writer;
  std::vector<float> values;
  int64_t line_no = 0;
  size_t pos = 0;
  int features = -1;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    auto where = [&] { return path + " line " + std::to_string(line_no); };
    const char* p = line.c_str();
    char* q = nullptr;
    errno = 0;
    long long label = std::strtoll(p, &q, 10);
    if (q == p || errno == ERANGE || (*q != ',' && *q != '\0'))
      return InvalidArgument(where() + ": the first field must be an integer label");
    values.clear();
    while (*q == ',') {
      p = q + 1;
      float v = std::strtof(p, &q);
      if (q == p) return InvalidArgument(where() + ": field " + std::to_string(values.size() + 2) + " is not a number");
      values.push_back(v);
    }
    if (*q != '\0') return InvalidArgument(where() + ": unexpected text after field " + std::to_string(values.size() + 1));
    if (features < 0) {
      if (values.empty()) return InvalidArgument(where() + ": a record needs at least one feature");
      features = static_cast<int>(values.size());
      RecordLayout layout{static_cast<uint32_t>(features), RecordDType::kF32, RecordDType::kI32};
      ASSIGN_OR_RETURN(writer, DatasetWriter::Create(out_dir, layout, options));
      RETURN_IF_ERROR(AddSourceDigest(*writer, path));
      writer->set_created_by("shoal data ingest --format csv");
    } else if (static_cast<int>(values.size()) != features) {
      return InvalidArgument(where() + ": " + std::to_string(values.size()) + " features, but earlier lines have " +
                             std::to_string(features) + " (inconsistent input)");
    }
    RETURN_IF_ERROR(writer->Append(label, values.data()));
  }
  if (!writer) return InvalidArgument(path + " holds no records");
  return writer->Commit(options.shape);
}

Status WriteRawRecords(const std::string& path, const float* x, const int32_t* y, int64_t n, int dim) {
  std::string out;
  out.reserve(static_cast<size_t>(n) * (4 + 4 * static_cast<size_t>(dim)));
  for (int64_t i = 0; i < n; ++i) {
    out.append(reinterpret_cast<const char*>(&y[i]), 4);
    out.append(reinterpret_cast<const char*>(x + i * dim), 4 * static_cast<size_t>(dim));
  }
  return WriteFileAtomic(path, out);
}

}  // namespace shoal
