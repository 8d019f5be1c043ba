// The scan records each filter's switch, threshold and version, and a job whose
// data.filters differ from what the scan ran is refused with the difference and the
// re-scan command; a matching spec passes, and so does the same spec after a re-scan.
#include <gtest/gtest.h>

#include "common/file_util.h"
#include "datapipe/scan_check.h"
#include "datapipe/test_util.h"

namespace shoal {
namespace {

using testing_util::MakeClusters;
using testing_util::Synthetic;
using testing_util::TempDir;

DataFilters AllOn() {
  DataFilters f;
  f.mutable_schema()->set_enabled(true);
  f.mutable_exact_duplicates()->set_enabled(true);
  f.mutable_near_duplicates()->set_enabled(true);
  f.mutable_outliers()->set_enabled(true);
  f.mutable_label_consistency()->set_enabled(true);
  return f;
}

class ScanCheckTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Synthetic s = MakeClusters(4, 100, 32);
    dir_ = tmp_ / "ds";
    ASSERT_TRUE(WriteRawRecords(tmp_ / "in.raw", s.x.data(), s.y.data(), s.n(), s.dim).ok());
    IngestOptions io;
    io.num_classes = s.classes;
    ASSERT_TRUE(IngestRaw(tmp_ / "in.raw", s.dim, dir_, io).ok());
  }
  Status Scan(const DataFilters& f) {
    ScanOptions o = ScanOptionsFromSpec(f);
    o.threads = 2;
    return ScanDataset(dir_, o).status();
  }
  TempDir tmp_;
  std::string dir_;
};

TEST_F(ScanCheckTest, ReportRecordsSwitchThresholdAndVersion) {
  DataFilters f = AllOn();
  f.mutable_outliers()->set_threshold(4.5);
  ASSERT_TRUE(Scan(f).ok());
  auto r = ReadScanReport(dir_);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->filters.size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(r->filters[i].name, kFilterNames[i]);
    EXPECT_TRUE(r->filters[i].enabled);
    EXPECT_EQ(r->filters[i].version, kFilterVersions[i]);
  }
  EXPECT_DOUBLE_EQ(r->filters[3].threshold, 4.5);
  EXPECT_DOUBLE_EQ(r->filters[4].threshold, ScanOptions().LabelMargin());  // spec 0: the default, as resolved
  EXPECT_TRUE(CheckDatasetScanMatchesSpec(dir_, f).ok());
}

TEST_F(ScanCheckTest, DifferentSwitchOrThresholdIsRefusedWithTheFix) {
  ASSERT_TRUE(Scan(AllOn()).ok());
  DataFilters off = AllOn();
  off.mutable_label_consistency()->set_enabled(false);
  Status s = CheckDatasetScanMatchesSpec(dir_, off);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("data.filters.label_consistency.enabled is false"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("shoalctl data scan " + dir_ + " --filters schema,exact,near,outliers"), std::string::npos)
      << s.message();
  EXPECT_EQ(s.message().find(",label"), std::string::npos) << s.message();

  DataFilters stricter = AllOn();
  stricter.mutable_outliers()->set_threshold(3);
  s = CheckDatasetScanMatchesSpec(dir_, stricter);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("data.filters.outliers.threshold is 3 in the job spec"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("--threshold outliers=3"), std::string::npos) << s.message();

  // Running the command the error names makes the same spec pass.
  ASSERT_TRUE(Scan(stricter).ok());
  EXPECT_TRUE(CheckDatasetScanMatchesSpec(dir_, stricter).ok());
  EXPECT_FALSE(CheckDatasetScanMatchesSpec(dir_, AllOn()).ok());
}

// A job spec cannot name the label filter's inner settings, so a scan made with any of
// them changed (here the backdoor view and the flip-campaign search turned off) must not
// pass for the default scan the spec implies, and a report that does not record them
// (written before they were) must not either.
TEST_F(ScanCheckTest, SettingsTheSpecCannotNameMustBeAtTheirDefaults) {
  ScanOptions o = ScanOptionsFromSpec(AllOn());
  o.threads = 2;
  o.label_views = 1;
  o.label_campaign_rounds = 0;
  o.label_trigger_share = 0;
  ASSERT_TRUE(ScanDataset(dir_, o).ok());
  auto r = ReadScanReport(dir_);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_NE(r->filters[4].settings.find("label_views=1"), std::string::npos) << r->filters[4].settings;
  Status s = CheckDatasetScanMatchesSpec(dir_, AllOn());
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("data.filters.label_consistency ran with label_views=1 (the job expects 2)"),
            std::string::npos)
      << s.message();
  EXPECT_NE(s.message().find("label_campaign_rounds=0 (the job expects 3)"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("label_trigger_share=0 (the job expects 0.005)"), std::string::npos) << s.message();
  EXPECT_EQ(s.message().find("data.filters.outliers"), std::string::npos) << s.message();  // its view is the default
  // The command it names (no inner settings: their defaults) makes the spec pass.
  EXPECT_NE(s.message().find("shoalctl data scan " + dir_ + " --filters schema,exact,near,outliers,label"),
            std::string::npos)
      << s.message();
  ASSERT_TRUE(Scan(AllOn()).ok());
  EXPECT_TRUE(CheckDatasetScanMatchesSpec(dir_, AllOn()).ok());

  r = ReadScanReport(dir_);
  ASSERT_TRUE(r.ok());
  r->filters[3].settings.clear();  // a report from before settings were recorded
  s = CheckScanMatchesFilters(*r, AllOn());
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("data.filters.outliers ran with dims unrecorded (the job expects 32)"), std::string::npos)
      << s.message();
}

TEST_F(ScanCheckTest, OlderFilterVersionUnscannedAndDamagedAreRefused) {
  DataFilters f = AllOn();
  EXPECT_EQ(CheckDatasetScanMatchesSpec(dir_, f).code(), StatusCode::kNotFound);
  ASSERT_TRUE(Scan(f).ok());
  auto r = ReadScanReport(dir_);
  ASSERT_TRUE(r.ok());
  r->filters[4].version = 1;  // a scan made before the label filter was replaced
  Status s = CheckScanMatchesFilters(*r, f);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("label_consistency ran at filter version 1"), std::string::npos) << s.message();
  // A disabled filter's threshold and version do not matter.
  f.mutable_label_consistency()->set_enabled(false);
  r->filters[4].enabled = false;
  r->filters[4].threshold = 0.9;
  EXPECT_TRUE(CheckScanMatchesFilters(*r, f).ok());

  ASSERT_TRUE(WriteFileAtomic(dir_ + "/scan/report.json", "{\"filters\": 3}").ok());
  EXPECT_EQ(ReadScanReport(dir_).status().code(), StatusCode::kDataLoss);
}

}  // namespace
}  // namespace shoal
