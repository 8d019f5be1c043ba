// IDX reading: real Fashion-MNIST when installed, and hand-made good and broken files.
#include <gtest/gtest.h>
#include <zlib.h>

#include <filesystem>

#include "common/file_util.h"
#include "datapipe/idx.h"

namespace shoal {
namespace {

std::string Header(std::vector<uint32_t> dims) {
  std::string h = {0, 0, 8, static_cast<char>(dims.size())};
  for (uint32_t d : dims)
    for (int s = 24; s >= 0; s -= 8) h.push_back(static_cast<char>((d >> s) & 0xff));
  return h;
}

class IdxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("shoal-idx-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Write(const std::string& name, const std::string& content) {
    std::string p = (dir_ / name).string();
    EXPECT_TRUE(WriteFileAtomic(p, content).ok());
    return p;
  }
  std::filesystem::path dir_;
};

TEST_F(IdxTest, ReadsPlainPair) {
  auto img = Write("i", Header({2, 2, 2}) + std::string("\x00\xff\x10\x20\x01\x02\x03\x04", 8));
  auto lab = Write("l", Header({2}) + std::string("\x03\x01", 2));
  auto ds = LoadIdxPair(img, lab);
  ASSERT_TRUE(ds.ok()) << ds.status().ToString();
  EXPECT_EQ(ds->n, 2);
  EXPECT_EQ(ds->dim, 4);
  EXPECT_EQ(ds->num_classes, 4);
  EXPECT_FLOAT_EQ(ds->x[1], 1.0f);
  EXPECT_EQ(ds->y[0], 3);
}

TEST_F(IdxTest, RefusesBrokenFiles) {
  auto truncated = Write("t", Header({2, 2, 2}) + "abc");
  auto st = ReadIdxFile(truncated).status();
  EXPECT_EQ(st.code(), StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("truncated"), std::string::npos);
  EXPECT_EQ(ReadIdxFile(Write("m", "\x01\x02\x03\x04xxxx")).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadIdxFile((dir_ / "none").string()).status().code(), StatusCode::kNotFound);
  auto img = Write("i", Header({2, 1, 1}) + "ab");
  auto lab = Write("l", Header({3}) + "abc");
  auto mismatch = LoadIdxPair(img, lab).status();
  EXPECT_NE(mismatch.message().find("2 images but"), std::string::npos);
  // A gzip stream cut in the middle.
  std::string gz = (dir_ / "x.gz").string();
  gzFile f = gzopen(gz.c_str(), "wb");
  std::string payload = Header({1000}) + std::string(1000, 'x');
  gzwrite(f, payload.data(), payload.size());
  gzclose(f);
  std::filesystem::resize_file(gz, std::filesystem::file_size(gz) / 2);
  EXPECT_FALSE(ReadIdxFile(gz).ok());
  EXPECT_EQ(LoadFashionMnist("/nonexistent/dir", "train").status().code(), StatusCode::kNotFound);
}

TEST(IdxFashionMnist, LoadsDebianPackageWhenInstalled) {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  if (!PathExists(dir)) GTEST_SKIP() << "dataset-fashion-mnist not installed";
  auto test = LoadFashionMnist(dir, "t10k");
  ASSERT_TRUE(test.ok()) << test.status().ToString();
  EXPECT_EQ(test->n, 10000);
  EXPECT_EQ(test->dim, 784);
  EXPECT_EQ(test->num_classes, 10);
}

}  // namespace
}  // namespace shoal
