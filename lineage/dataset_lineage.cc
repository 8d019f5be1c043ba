// Describing a dataset for the lineage (dataset_lineage.h).
#include "lineage/dataset_lineage.h"

#include <algorithm>
#include <filesystem>

#include "common/file_util.h"
#include "common/log.h"
#include "common/sha256.h"
#include "datapipe/manifest.h"
#include "datapipe/review.h"
#include "datapipe/scan_check.h"
#include "datapipe/scan_files.h"
#include "lineage/code.h"

namespace fs = std::filesystem;

namespace shoal {

namespace {
std::string SchemaText(const FeatureSchema& s) {
  std::string shape;
  for (int64_t d : s.shape()) shape += (shape.empty() ? "" : ",") + std::to_string(d);
  std::string t = s.dtype() + "[" + shape + "]";
  if (s.dtype() == "u8") t += " read as value/255";
  t += "; label " + s.label_dtype() + " in [0," + std::to_string(s.num_classes()) + ")";
  return t;
}

// The scan that admitted the records (if the dataset has one) and a review on top.
void DescribeScan(const std::string& dir, LineageDataset* d) {
  auto report = ReadScanReport(dir);
  if (!report.ok()) return;
  LineageScan* s = d->mutable_scan();
  const std::string scan_dir = dir + "/" + kScanDir;
  if (auto h = Sha256FileHex(scan_dir + "/report.json"); h.ok()) s->set_report_digest(*h);
  if (auto h = Sha256FileHex(scan_dir + "/" + kAdmittedFile); h.ok()) s->set_admitted_digest(*h);
  s->set_records(report->records);
  s->set_admitted(report->admitted);
  s->set_quarantined(report->quarantined);
  for (const FilterReport& f : report->filters) {
    LineageFilter* lf = s->add_filters();
    lf->set_name(f.name);
    lf->set_enabled(f.enabled);
    lf->set_threshold(f.threshold);
    lf->set_version(std::to_string(f.version));
    lf->set_flagged(f.flagged);
    lf->set_settings(f.settings);
  }
  if (PathExists(ReviewPath(dir))) {
    if (auto h = Sha256FileHex(ReviewPath(dir)); h.ok()) s->set_review_overlay_digest(*h);
    if (auto review = ReadReviewUnverified(dir); review.ok()) {
      s->set_released(static_cast<int64_t>(review->Released().size()));
      s->set_confirmed(static_cast<int64_t>(review->Confirmed().size()));
    }
  }
}
}  // namespace

StatusOr<LineageDataset> DescribeDataset(const std::string& dir, const DataSpec& data, const std::string& split) {
  LineageDataset d;
  d.set_dir(dir);
  if (dir.empty()) return d;
  if (PathExists(dir + "/manifest.pb")) {
    ASSIGN_OR_RETURN(DatasetManifest m, ReadManifestUnverified(dir));
    d.set_format(m.format());
    d.set_name(m.name());
    d.set_version(m.version());
    d.set_licence(m.licence());
    d.set_records(m.total_records());
    d.set_schema(SchemaText(m.schema()));
    ASSIGN_OR_RETURN(std::string digest, Sha256FileHex(dir + "/manifest.pb"));
    d.set_manifest_digest(digest);
    for (const DatasetShard& s : m.shards()) {
      LineageShard* ls = d.add_shards();
      ls->set_file(s.file());
      ls->set_sha256(s.sha256());
      ls->set_records(s.records());
    }
    for (const SourceFile& s : m.sources()) {
      LineageSource* src = d.add_sources();
      src->set_uri(s.uri());
      src->set_sha256(s.sha256());
    }
    // The signer, as the workers will check it: with the spec's trust store. The shard
    // digests are the workers' to check; the manifest names them, and is signed.
    DatasetTrust trust;
    trust.allow_unsigned = true;
    for (const std::string& k : data.trust()) (void)trust.trust.AddFile(k);
    if (auto opened = OpenDataset(dir, trust, /*load_shards=*/false); opened.ok())
      d.set_signer(opened->signer_key_id);
    DescribeScan(dir, &d);
    return d;
  }
  // IDX files: the files are the shards.
  d.set_format("idx");
  d.set_schema("u8[28,28] read as value/255; label u8 in [0,10)");
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (const std::string name = e.path().filename().string();
        e.is_regular_file() && name.find("idx") != std::string::npos && name.rfind(split + "-", 0) == 0)
      files.push_back(name);
  if (ec) return NotFound("dataset " + dir + ": " + ec.message());
  std::sort(files.begin(), files.end());
  for (const std::string& f : files) {
    LineageShard* s = d.add_shards();
    s->set_file(f);
    ASSIGN_OR_RETURN(std::string h, Sha256FileHex(dir + "/" + f));
    s->set_sha256(h);
  }
  return d;
}

JobLineage SubmitterLineage(const JobSpec& spec) {
  JobLineage j;
  auto train = DescribeDataset(spec.data().dataset(), spec.data(), "train");
  if (train.ok()) *j.mutable_dataset() = std::move(*train);
  else {
    SHOAL_LOG_WARN("lineage: cannot describe dataset {}: {}", spec.data().dataset(), train.status().ToString());
    j.mutable_dataset()->set_dir(spec.data().dataset());
  }
  if (!spec.data().test_dataset().empty()) {
    auto test = DescribeDataset(spec.data().test_dataset(), spec.data(), "t10k");
    if (test.ok()) *j.mutable_test_dataset() = std::move(*test);
    else j.mutable_test_dataset()->set_dir(spec.data().test_dataset());
  }
  *j.mutable_submitter_code() = ThisBuildCode();
  return j;
}

}  // namespace shoal
