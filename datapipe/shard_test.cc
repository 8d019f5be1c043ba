// Shard format: round trips for every layout, and each kind of damage refused with the
// shard's name in the message.
#include <gtest/gtest.h>

#include <cmath>

#include "datapipe/shard.h"

namespace shoal {
namespace {

std::shared_ptr<const std::string> Bytes(std::string s) { return std::make_shared<const std::string>(std::move(s)); }

TEST(Shard, RoundTripU8) {
  RecordLayout l{3, RecordDType::kU8, RecordDType::kU8};
  ShardBuilder b(l, 100);
  const uint8_t r0[3] = {0, 128, 255}, r1[3] = {1, 2, 3};
  ASSERT_TRUE(b.Append(7, r0).ok());
  ASSERT_TRUE(b.Append(0, r1).ok());
  auto v = ShardView::Parse(Bytes(b.Finish()), "s.rec");
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(v->count(), 2);
  EXPECT_EQ(v->first_record_id(), 100);
  EXPECT_EQ(v->label(0), 7);
  EXPECT_EQ(v->label(1), 0);
  float f[3];
  v->ReadFeatures(0, f);
  EXPECT_FLOAT_EQ(f[0], 0.0f);
  EXPECT_FLOAT_EQ(f[1], 128 / 255.0f);
  EXPECT_FLOAT_EQ(f[2], 1.0f);
}

TEST(Shard, RoundTripF32WithI32LabelsKeepsHostileValues) {
  RecordLayout l{2, RecordDType::kF32, RecordDType::kI32};
  ShardBuilder b(l, 0);
  const float r0[2] = {NAN, -3.5f};
  ASSERT_TRUE(b.Append(-1, r0).ok());
  ASSERT_TRUE(b.Append(1 << 20, r0).ok());
  auto v = ShardView::Parse(Bytes(b.Finish()), "s.rec");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->label(0), -1);
  EXPECT_EQ(v->label(1), 1 << 20);
  float f[2];
  v->ReadFeatures(1, f);
  EXPECT_TRUE(std::isnan(f[0]));
  EXPECT_FLOAT_EQ(f[1], -3.5f);
}

TEST(Shard, EmptyShardIsValid) {
  ShardBuilder b(RecordLayout{4, RecordDType::kU8, RecordDType::kU8}, 0);
  auto v = ShardView::Parse(Bytes(b.Finish()), "e.rec");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->count(), 0);
}

TEST(Shard, LabelMustFitDtype) {
  ShardBuilder b(RecordLayout{1, RecordDType::kU8, RecordDType::kU8}, 0);
  uint8_t x = 0;
  EXPECT_EQ(b.Append(256, &x).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(b.Append(-1, &x).code(), StatusCode::kInvalidArgument);
}

class ShardDamage : public ::testing::Test {
 protected:
  void SetUp() override {
    ShardBuilder b(RecordLayout{16, RecordDType::kU8, RecordDType::kU8}, 0);
    std::string rec(16, 'a');
    for (int i = 0; i < 10; ++i) ASSERT_TRUE(b.Append(i % 3, rec.data()).ok());
    good_ = b.Finish();
  }
  Status Parse(const std::string& bytes) { return ShardView::Parse(Bytes(bytes), "shard-00003.rec").status(); }
  std::string good_;
};

TEST_F(ShardDamage, EveryDamageIsRefusedByName) {
  ASSERT_TRUE(Parse(good_).ok());
  std::string flipped = good_;
  flipped[kShardHeaderBytes + 20] ^= 0x01;  // one bit inside a record
  std::string truncated = good_.substr(0, good_.size() - 7);
  std::string padded = good_ + "x";
  std::string magic = good_;
  magic[0] = 'X';
  std::string version = good_;
  version[8] = 9;
  std::string layout = good_;
  layout[16] = 7;  // unknown dtype
  std::string footer = good_;
  footer[good_.size() - 24] ^= 0x10;  // the footer's record count
  for (const std::string* bad : {&flipped, &truncated, &padded, &magic, &version, &layout, &footer}) {
    Status s = Parse(*bad);
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find("shard-00003.rec"), std::string::npos) << s.ToString();
  }
  EXPECT_NE(Parse(flipped).message().find("CRC"), std::string::npos);
  EXPECT_NE(Parse(truncated).message().find("truncated"), std::string::npos);
  EXPECT_FALSE(Parse("").ok());
  EXPECT_FALSE(Parse(good_.substr(0, 10)).ok());
}

TEST_F(ShardDamage, HeaderCountCannotPromiseMoreThanTheFileHolds) {
  std::string bad = good_;
  bad[24 + 5] = 0x7f;  // record count in the header made enormous
  EXPECT_FALSE(Parse(bad).ok());
}

TEST(Shard, FileNames) {
  EXPECT_EQ(ShardFileName(0), "shard-00000.rec");
  EXPECT_EQ(ShardFileName(123), "shard-00123.rec");
  EXPECT_TRUE(ParseDType("f32").ok());
  EXPECT_FALSE(ParseDType("f64").ok());
}

}  // namespace
}  // namespace shoal
