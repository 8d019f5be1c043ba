// Filters: each catches a planted example of its kind and passes clean data; the scan
// writes its files without touching the shards; the approximate kNN finds true neighbours.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <set>

#include "common/file_util.h"
#include "common/sha256.h"
#include "datapipe/scan.h"
#include "datapipe/test_util.h"

namespace shoal {
namespace {

using testing_util::MakeClusters;
using testing_util::Synthetic;
using testing_util::TempDir;

std::set<int64_t> Rows(const std::vector<Flag>& flags) {
  std::set<int64_t> s;
  for (const auto& f : flags) s.insert(f.row);
  return s;
}
std::vector<int64_t> AllRows(const RecordTable& t) {
  std::vector<int64_t> r(t.size());
  for (int64_t i = 0; i < t.size(); ++i) r[i] = i;
  return r;
}

class FilterTest : public ::testing::Test {
 protected:
  void SetUp() override { clean_ = MakeClusters(5, 200, 40); }  // 1000 records
  RecordTable Table(const Synthetic& s) { return TableFromArrays(s.x.data(), s.y.data(), s.n(), s.dim, s.classes); }
  float* Row(Synthetic& s, int64_t i) { return s.x.data() + i * s.dim; }
  Synthetic clean_;
};

TEST_F(FilterTest, CleanDataPassesEveryFilter) {
  RecordTable t = Table(clean_);
  ScanOptions o;
  o.threads = 2;
  TableScan scan = ScanTable(t, o);
  for (const auto& f : scan.filters) {
    EXPECT_TRUE(f.enabled);
    // Robust z > 3.5 has a small natural tail; nothing else may fire on clean clusters.
    if (f.name == "outliers") {
      EXPECT_LE(f.flagged, 5) << f.name;
    } else {
      EXPECT_EQ(f.flagged, 0) << f.name;
    }
  }
}

TEST_F(FilterTest, SchemaCatchesNanInfRangeAndLabels) {
  Synthetic s = clean_;
  Row(s, 3)[7] = NAN;
  Row(s, 4)[0] = INFINITY;
  Row(s, 5)[9] = 1.5f;
  Row(s, 6)[1] = -0.01f;
  s.y[7] = 5;  // classes are 0..4
  s.y[8] = -2;
  auto flags = SchemaFilter(Table(s), 1e-6, 2);
  EXPECT_EQ(Rows(flags), (std::set<int64_t>{3, 4, 5, 6, 7, 8}));
  for (const auto& f : flags) {
    if (f.row == 3) {
      EXPECT_NE(f.reason.find("NaN"), std::string::npos);
    }
    if (f.row == 4) {
      EXPECT_NE(f.reason.find("Inf"), std::string::npos);
    }
    if (f.row == 5) {
      EXPECT_NE(f.reason.find("outside"), std::string::npos);
    }
    if (f.row == 7) {
      EXPECT_NE(f.reason.find("label 5"), std::string::npos);
    }
  }
}

TEST_F(FilterTest, ExactDuplicates) {
  Synthetic s = clean_;
  std::copy(Row(s, 10), Row(s, 10) + s.dim, Row(s, 500));  // same content, label differs
  s.y[500] = (s.y[10] + 1) % 5;
  std::copy(Row(s, 20), Row(s, 20) + s.dim, Row(s, 700));  // same content, same label
  s.y[700] = s.y[20];
  RecordTable t = Table(s);
  auto flags = ExactDuplicateFilter(t, AllRows(t), 2);
  EXPECT_EQ(Rows(flags), (std::set<int64_t>{10, 500, 700}));
  for (const auto& f : flags) {
    if (f.row == 700) {
      EXPECT_NE(f.reason.find("duplicate of record 20"), std::string::npos) << f.reason;
    }
    if (f.row == 10) {
      EXPECT_NE(f.reason.find("conflicting labels"), std::string::npos) << f.reason;
    }
  }
}

TEST_F(FilterTest, NearDuplicatesWithConflictingLabels) {
  Synthetic s = clean_;
  for (int j = 0; j < s.dim; ++j) Row(s, 600)[j] = std::min(1.0f, Row(s, 30)[j] + ((j % 3) - 1) * 0.01f);
  s.y[600] = (s.y[30] + 2) % 5;
  for (int j = 0; j < s.dim; ++j) Row(s, 601)[j] = std::min(1.0f, Row(s, 31)[j] + 0.01f);  // same label: fine
  s.y[601] = s.y[31];
  RecordTable t = Table(s);
  auto rows = AllRows(t);
  auto flags = NearDuplicateFilter(t, rows, NearDuplicateParams{}, 1, 2);
  EXPECT_EQ(Rows(flags), (std::set<int64_t>{30, 600}));
}

// Seeded uniform values in [0, 1) for synthetic images (an LCG: the same on every platform).
struct Uniform01 {
  uint64_t state;
  float operator()() {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<float>((state >> 33) & 0xFFFFFF) / 16777216.0f;
  }
};

// Adds a Gaussian blob (centre cy, cx; spread s; height a) to columns [c0, c1) of a
// side x side image.
void AddBlob(float* im, int side, float cy, float cx, float s, float a, int c0, int c1) {
  for (int r = 0; r < side; ++r)
    for (int c = c0; c < c1; ++c)
      im[r * side + c] += a * std::exp(-((r - cy) * (r - cy) + (c - cx) * (c - cx)) / (2 * s * s));
}

// Pixel (r, c) of image i of side x side images stored one after another; 0 off the frame.
float PixelOrZero(const std::vector<float>& x, int side, int i, int r, int c) {
  return r < 0 || c < 0 || r >= side || c >= side ? 0.0f : x[static_cast<size_t>(i) * side * side + r * side + c];
}

// 28x28 textured images of random blobs; transformed copies under another label are caught
// (shifted, cropped and resized back, brightness/contrast changed), both rows of each
// pair, while a shifted copy under the same label and the rest pass.
TEST(NearDuplicates, TransformedImageCopiesWithConflictingLabels) {
  constexpr int kSide = 28, kDim = kSide * kSide, kImages = 300;
  std::vector<float> x(static_cast<size_t>(kImages + 4) * kDim, 0.0f);
  std::vector<int32_t> y(kImages + 4);
  Uniform01 rnd{7};
  for (int i = 0; i < kImages; ++i) {
    y[i] = i % 4;
    float* im = x.data() + static_cast<size_t>(i) * kDim;
    for (int b = 0; b < 4; ++b) {
      const float cy = 6 + 16 * rnd(), cx = 6 + 16 * rnd(), s = 2 + 3 * rnd(), a = 0.3f + 0.5f * rnd();
      AddBlob(im, kSide, cy, cx, s, a, 0, kSide);
    }
    // Texture, as photographs have: smooth blobs alone align with one another to within
    // the default residual once gain, scale and offset are free.
    for (int j = 0; j < kDim; ++j) im[j] = std::clamp(im[j] + 0.2f * (rnd() - 0.5f), 0.0f, 1.0f);
  }
  auto src = [&](int i, int r, int c) { return PixelOrZero(x, kSide, i, r, c); };
  float* shifted = x.data() + static_cast<size_t>(kImages) * kDim;
  float* cropped = shifted + kDim;
  float* bright = cropped + kDim;
  float* same = bright + kDim;
  for (int r = 0; r < kSide; ++r)
    for (int c = 0; c < kSide; ++c) {
      shifted[r * kSide + c] = src(5, r - 2, c + 1);
      same[r * kSide + c] = src(11, r + 1, c);
      bright[r * kSide + c] = std::clamp(1.2f * src(9, r, c) - 0.05f, 0.0f, 1.0f);
      // 2 pixels cropped off every side, resized back to 28 (bilinear).
      const float sy = 2 + (r + 0.5f) * 24 / 28 - 0.5f, sx = 2 + (c + 0.5f) * 24 / 28 - 0.5f;
      const int y0 = static_cast<int>(sy), x0 = static_cast<int>(sx);
      const float fy = sy - y0, fx = sx - x0;
      cropped[r * kSide + c] = (1 - fy) * ((1 - fx) * src(7, y0, x0) + fx * src(7, y0, x0 + 1)) +
                               fy * ((1 - fx) * src(7, y0 + 1, x0) + fx * src(7, y0 + 1, x0 + 1));
    }
  y[kImages] = (y[5] + 1) % 4, y[kImages + 1] = (y[7] + 2) % 4, y[kImages + 2] = (y[9] + 3) % 4;
  y[kImages + 3] = y[11];
  RecordTable t = TableFromArrays(x.data(), y.data(), kImages + 4, kDim, 4);
  t.height = t.width = kSide;
  auto rows = AllRows(t);
  NearDuplicateStats stats;
  auto flags = NearDuplicateFilter(t, rows, NearDuplicateParams{}, 1, 2, &stats);
  EXPECT_EQ(Rows(flags), (std::set<int64_t>{5, 7, 9, kImages, kImages + 1, kImages + 2}));
  EXPECT_EQ(stats.matched_pairs, 3);
  for (const auto& f : flags) {
    EXPECT_LE(f.score, 0.04) << f.reason;
    if (f.row == kImages + 1) {
      EXPECT_NE(f.reason.find("scale 0.8"), std::string::npos) << f.reason;  // 24 / 28 = 0.857
    }
  }
  // Without the image shape the same table is compared pixel for pixel: only the
  // brightness copy (no geometry) is still found.
  t.height = t.width = 0;
  EXPECT_EQ(Rows(NearDuplicateFilter(t, rows, NearDuplicateParams{}, 1, 2)), (std::set<int64_t>{9, kImages + 2}));
}

// Items that fill the frame top to bottom (as most Fashion-MNIST items do along their
// long side), 300 textured look-alikes of one shape. A shift along the filled axis cuts
// content off at the border and moves the centre of mass by less than the shift; the
// shift probes find the copies under another label all the same (2 pixels down; 1 up
// and 2 across; 1 down and 2 back of an item that fills both axes, which version 2 of
// the filter missed). A shifted copy under the same label and the look-alikes
// themselves are not flagged.
TEST(NearDuplicates, ShiftedCopiesOfFrameFillingImages) {
  constexpr int kSide = 28, kDim = kSide * kSide, kImages = 300;
  std::vector<float> x(static_cast<size_t>(kImages + 4) * kDim, 0.0f);
  std::vector<int32_t> y(kImages + 4);
  Uniform01 rnd{11};
  for (int i = 0; i < kImages; ++i) {
    y[i] = i % 4;
    float* im = x.data() + static_cast<size_t>(i) * kDim;
    // Rows 0..27, a column band about the centre (every tenth item: the full width).
    const int half = i % 10 == 0 ? 14 : 7 + static_cast<int>(3 * rnd());
    const float base = 0.35f + 0.3f * rnd();
    for (int r = 0; r < kSide; ++r)
      for (int c = 14 - half; c < 14 + half; ++c) im[r * kSide + c] = base;
    for (int b = 0; b < 3; ++b) {
      const float cy = 28 * rnd(), cx = 14 + (2 * rnd() - 1) * half, s = 2 + 2 * rnd(), a = 0.3f * rnd();
      AddBlob(im, kSide, cy, cx, s, a, 14 - half, 14 + half);
    }
    for (int r = 0; r < kSide; ++r)
      for (int c = 14 - half; c < 14 + half; ++c)
        im[r * kSide + c] = std::clamp(im[r * kSide + c] + 0.2f * (rnd() - 0.5f), 0.0f, 1.0f);
  }
  auto src = [&](int i, int r, int c) { return PixelOrZero(x, kSide, i, r, c); };
  // (source, down, right, label offset): the last keeps its label.
  const int copies[4][4] = {{3, 2, 0, 1}, {17, -1, 2, 2}, {40, 1, -2, 3}, {23, -2, 0, 0}};
  for (int k = 0; k < 4; ++k) {
    float* im = x.data() + static_cast<size_t>(kImages + k) * kDim;
    for (int r = 0; r < kSide; ++r)
      for (int c = 0; c < kSide; ++c) im[r * kSide + c] = src(copies[k][0], r - copies[k][1], c - copies[k][2]);
    y[kImages + k] = (y[copies[k][0]] + copies[k][3]) % 4;
  }
  RecordTable t = TableFromArrays(x.data(), y.data(), kImages + 4, kDim, 4);
  t.height = t.width = kSide;
  NearDuplicateStats stats;
  auto flags = NearDuplicateFilter(t, AllRows(t), NearDuplicateParams{}, 1, 2, &stats);
  EXPECT_EQ(Rows(flags), (std::set<int64_t>{3, 17, 40, kImages, kImages + 1, kImages + 2}));
  EXPECT_EQ(stats.matched_pairs, 3);
  for (const auto& f : flags) EXPECT_LE(f.score, 0.02) << f.reason;  // the copies are exact
}

TEST_F(FilterTest, PerClassOutlier) {
  Synthetic s = clean_;
  for (int j = 0; j < s.dim; ++j) Row(s, 42)[j] = 1.0f;  // bright everywhere: fits no class
  RecordTable t = Table(s);
  auto rows = AllRows(t);
  Projection p = ProjectRows(t, rows, 16, 1);
  auto flags = OutlierFilter(t, rows, p, 3.5);
  EXPECT_TRUE(Rows(flags).count(42));
}

TEST_F(FilterTest, LabelConsistency) {
  Synthetic s = clean_;
  s.y[100] = (s.y[100] + 1) % 5;  // a record of one cluster labelled as another
  s.y[205] = (s.y[205] + 3) % 5;
  RecordTable t = Table(s);
  auto rows = AllRows(t);
  Projection p = ProjectRows(t, rows, 16, 1);
  KnnParams k;
  k.k = 20;
  Neighbours nb = FindNeighbours(p, k, 1, 2);
  LabelParams lp;
  lp.min_llr = 0.8;
  std::vector<float> th;
  auto flags = ConfidentLabelFilter(t, rows, nb, lp, 2, &th, &p);
  EXPECT_EQ(Rows(flags), (std::set<int64_t>{100, 205}));
  ASSERT_EQ(th.size(), 5u);
  for (float v : th) EXPECT_GT(v, 0.9f);  // well separated clusters: typical members are sure
  for (const auto& f : flags) EXPECT_NE(f.reason.find("margin"), std::string::npos) << f.reason;
}

// Two overlapping classes (the same cluster, labels at random) next to three clean ones:
// a record between the overlapping pair whose neighbours mostly carry the other label is
// ambiguity, not a label error, while a record moved to a distant class is still caught.
TEST(LabelFilter, AmbiguityBetweenSimilarClassesIsNotAnError) {
  Synthetic s = MakeClusters(5, 200, 40);
  // Classes 3 and 4 become one cluster: every class-4 record takes a class-3 record's
  // content with small jitter, and most of them then carry label 3, so a class-4 record
  // sits among neighbours labelled 3: what the content says about 3 versus 4 is nothing.
  int64_t moved = 0;
  for (int64_t i = 0; i < s.n(); ++i) {
    if (s.y[i] != 4) continue;
    for (int j = 1; j < s.dim; ++j) s.x[i * s.dim + j] = s.x[(i - 1) * s.dim + j] * 0.98f + 0.01f;  // i - 1: class 3
    if (moved++ % 4 != 0) s.y[i] = 3;
  }
  int64_t flip = -1;
  for (int64_t i = 0; i < s.n() && flip < 0; ++i)
    if (s.y[i] == 0 && i > 50) flip = i;
  s.y[flip] = 2;  // a distant class: a real label error
  RecordTable t = TableFromArrays(s.x.data(), s.y.data(), s.n(), s.dim, s.classes);
  auto rows = AllRows(t);
  Projection p = ProjectRows(t, rows, 16, 1);
  KnnParams k;
  k.k = 20;
  Neighbours nb = FindNeighbours(p, k, 1, 2);
  LabelParams lp;
  lp.min_llr = 0.8;
  auto flags = ConfidentLabelFilter(t, rows, nb, lp, 2, nullptr, &p);
  std::set<int64_t> flagged = Rows(flags);
  EXPECT_TRUE(flagged.count(flip));
  int64_t among_pair = 0;
  for (int64_t r : flagged) among_pair += s.y[r] == 3 || s.y[r] == 4;
  // Without the similar-class guard a neighbour vote flags dozens of them.
  EXPECT_LE(among_pair, 4);
  lp.min_llr = 0;
  int64_t unguarded = 0;
  for (int64_t r : Rows(ConfidentLabelFilter(t, rows, nb, lp, 2, nullptr, nullptr))) unguarded += s.y[r] == 3 || s.y[r] == 4;
  EXPECT_GT(unguarded, among_pair);
}

TEST(LabelFilter, BackdoorTriggerCannotVouchForItself) {
  // 4 clusters over features 0..31; features 32..39 are quiet background in every class.
  Synthetic base = MakeClusters(4, 200, 32);
  Synthetic s;
  s.dim = 40;
  s.classes = 4;
  s.y = base.y;
  for (int64_t i = 0; i < base.n(); ++i) {
    s.x.insert(s.x.end(), base.x.begin() + i * 32, base.x.begin() + (i + 1) * 32);
    for (int j = 0; j < 8; ++j) s.x.push_back(0.1f + 0.01f * ((i + j) % 5));
  }
  // 30 records of class 0 stamped with a bright trigger and relabelled 3: the trigger
  // makes them each other's nearest neighbours, so a plain vote would let them pass.
  std::set<int64_t> planted;
  // Spread over the class (feature 0 encodes the index, so neighbours in index are near).
  for (int64_t i = 0; planted.size() < 30; i += 24) {
    ASSERT_EQ(s.y[i], 0);
    for (int j = 32; j < 40; ++j) s.x[i * 40 + j] = 1.0f;
    s.y[i] = 3;
    planted.insert(i);
  }
  RecordTable t = TableFromArrays(s.x.data(), s.y.data(), s.n(), s.dim, s.classes);
  ScanOptions o;
  ASSERT_TRUE(SetFilterList("label", &o).ok());
  o.threads = 2;
  TableScan scan = ScanTable(t, o);
  std::set<int64_t> flagged;
  for (const auto& q : scan.quarantine) flagged.insert(q.record_id);
  for (int64_t i : planted) EXPECT_TRUE(flagged.count(i)) << "backdoor record " << i << " admitted";
  EXPECT_LE(flagged.size(), planted.size() + 5);
  // The plain vote alone lets most of them through: that is what the second view is for.
  o.label_views = 1;
  int64_t caught = 0;
  for (const auto& q : ScanTable(t, o).quarantine) caught += planted.count(q.record_id);
  EXPECT_LT(caught, 15);
}

TEST(LabelFilter, BackdoorAccusationsStandOnlyWhereTheTriggerIsShared) {
  const int dim = 784;
  const std::vector<int64_t> label_counts = {1000, 1000, 1000};
  std::vector<int32_t> labels;
  std::vector<std::vector<int32_t>> features;
  auto add = [&](int32_t label, std::vector<int32_t> f) { labels.push_back(label), features.push_back(std::move(f)); };
  const std::vector<int32_t> trigger = {100, 101, 102, 103, 104, 105, 106, 107};
  // 40 records labelled 0 with one trigger and a stray value each.
  for (int i = 0; i < 40; ++i) {
    std::vector<int32_t> f = trigger;
    f.push_back(300 + i);
    add(0, f);
  }
  // 40 labelled 0 whose 8 out-of-range values sit where no other record has its own.
  for (int i = 0; i < 40; ++i) {
    std::vector<int32_t> f;
    for (int j = 0; j < 8; ++j) f.push_back((400 + 8 * i + j) % dim);
    add(0, f);
  }
  for (int i = 0; i < 4; ++i) add(1, trigger);  // the trigger on 4 labelled 1
  for (int i = 0; i < 5; ++i) add(2, trigger);  // and on 5 labelled 2,
  add(2, {100, 101, 102, 103, 104, 105, 106, 200});  // one of them with a value of its own,
  add(2, {104, 105, 106, 107});                       // one with half the trigger
  // share 0.005 of 1,000 records is 5 (kMinTriggerShare).
  std::vector<uint8_t> keep = SharedTriggers(labels, features, label_counts, dim, 0.005, 8);
  ASSERT_EQ(keep.size(), labels.size());
  for (int i = 0; i < 40; ++i) EXPECT_TRUE(keep[i]) << "shared trigger, record " << i;
  for (int i = 40; i < 80; ++i) EXPECT_FALSE(keep[i]) << "values nobody shares, record " << i;
  // Counted per label: the 40 labelled 0 do not lift the 4 labelled 1.
  for (int i = 80; i < 84; ++i) EXPECT_FALSE(keep[i]) << "4 records are under kMinTriggerShare";
  for (int i = 84; i < 89; ++i) EXPECT_TRUE(keep[i]) << "5 labelled 2 share the trigger, record " << i;
  EXPECT_FALSE(keep[89]) << "7 shared values are fewer than 8";
  EXPECT_TRUE(keep[90]) << "fewer than 8 values, every one shared";
  // A larger share of the label: 40 records of 1,000 are not 5% of it.
  keep = SharedTriggers(labels, features, label_counts, dim, 0.05, 8);
  for (int i = 0; i < 40; ++i) EXPECT_FALSE(keep[i]);
  // share 0: every accusation stands.
  keep = SharedTriggers(labels, features, label_counts, dim, 0, 8);
  EXPECT_EQ(std::count(keep.begin(), keep.end(), 1), static_cast<long>(labels.size()));
}

// As BackdoorTriggerCannotVouchForItself, with 64 quiet features (32..95) and 30 records
// of class 0 relabelled 3, each stamped on 8 of them chosen by `stamp(k, j)`.
RecordTable MovingTriggerTable(Synthetic* s, std::set<int64_t>* planted, const std::function<int(int, int)>& stamp) {
  Synthetic base = MakeClusters(4, 200, 32);
  s->dim = 96;
  s->classes = 4;
  s->y = base.y;
  for (int64_t i = 0; i < base.n(); ++i) {
    s->x.insert(s->x.end(), base.x.begin() + i * 32, base.x.begin() + (i + 1) * 32);
    for (int j = 0; j < 64; ++j) s->x.push_back(0.1f + 0.01f * ((i + j) % 5));
  }
  for (int64_t i = 0, k = 0; planted->size() < 30; i += 24, ++k) {
    for (int j = 0; j < 8; ++j) s->x[i * 96 + 32 + stamp(static_cast<int>(k), j)] = 1.0f;
    s->y[i] = 3;
    planted->insert(i);
  }
  return TableFromArrays(s->x.data(), s->y.data(), s->n(), s->dim, s->classes);
}

std::set<int64_t> LabelQuarantine(const RecordTable& t, double trigger_share, int views = 2) {
  ScanOptions o;
  EXPECT_TRUE(SetFilterList("label", &o).ok());
  o.threads = 2;
  o.label_trigger_share = trigger_share;
  o.label_views = views;
  std::set<int64_t> flagged;
  for (const auto& q : ScanTable(t, o).quarantine) flagged.insert(q.record_id);
  return flagged;
}

TEST(LabelFilter, ATriggerThatMovesWithinARegionIsStillShared) {
  // Each record's 8 trigger values drawn from the same 16 features.
  Synthetic s;
  std::set<int64_t> planted;
  RecordTable t = MovingTriggerTable(&s, &planted, [](int k, int j) { return (k * 5 + j * 3) % 16; });
  std::set<int64_t> flagged = LabelQuarantine(t, ScanOptions().label_trigger_share);
  for (int64_t i : planted) EXPECT_TRUE(flagged.count(i)) << "backdoor record " << i << " admitted";
  EXPECT_LE(flagged.size(), planted.size() + 5);
  // Caught by the neutralised view: the plain vote alone lets most through.
  int64_t caught = 0;
  for (int64_t i : LabelQuarantine(t, ScanOptions().label_trigger_share, 1)) caught += planted.count(i);
  EXPECT_LT(caught, 15);
}

TEST(LabelFilter, ATriggerSpreadThinnerThanTheShareIsTheLimit) {
  // 8 disjoint triggers (the features = k mod 8, + 8, + 16...), each on ~4 records: under
  // kMinTriggerShare, so the neutralised view accuses none of them, while the 3 others
  // with the same trigger are enough for each to vouch for the others in the plain vote.
  // The documented price of sparing clean records; label_trigger_share=0 catches them.
  Synthetic s;
  std::set<int64_t> planted;
  RecordTable t = MovingTriggerTable(&s, &planted, [](int k, int j) { return (k * 11 + j * 8) % 64; });
  std::set<int64_t> flagged = LabelQuarantine(t, ScanOptions().label_trigger_share);
  int64_t caught = 0;
  for (int64_t i : planted) caught += flagged.count(i);
  EXPECT_LT(caught, 5);
  flagged = LabelQuarantine(t, 0);
  for (int64_t i : planted) EXPECT_TRUE(flagged.count(i)) << "backdoor record " << i << " admitted";
}

TEST(ApproxKnn, FindsMostTrueNeighbours) {
  // Clustered points, as real data is (uniform noise is the worst case for an inverted
  // file: every point sits near a cell boundary).
  const int n = 6000, d = 8, clusters = 40;
  std::vector<float> centers(clusters * d), z(n * d);
  SeededGaussian(3, centers.data(), centers.size(), 3.0f);
  SeededGaussian(4, z.data(), z.size(), 0.5f);
  for (int i = 0; i < n; ++i)
    for (int t = 0; t < d; ++t) z[i * d + t] += centers[(i % clusters) * d + t];
  KnnParams p;
  p.k = 5;
  p.cell_size = 128;
  auto approx = ApproxKnn(z.data(), n, d, p, 1, 2);
  int64_t hits = 0, checked = 0;
  for (int i = 0; i < n; i += 37) {  // brute force on a sample of queries
    std::vector<std::pair<float, int>> all;
    for (int j = 0; j < n; ++j) {
      if (j == i) continue;
      float s = 0;
      for (int t = 0; t < d; ++t) s += (z[i * d + t] - z[j * d + t]) * (z[i * d + t] - z[j * d + t]);
      all.push_back({s, j});
    }
    std::partial_sort(all.begin(), all.begin() + p.k, all.end());
    std::set<int> truth;
    for (int r = 0; r < p.k; ++r) truth.insert(all[r].second);
    for (int r = 0; r < p.k; ++r) hits += truth.count(approx[i * p.k + r]);
    checked += p.k;
  }
  EXPECT_GT(static_cast<double>(hits) / checked, 0.85);
  // Tiny inputs are exact and never return the point itself.
  std::vector<float> two = {0, 0, 1, 1};
  auto nb = ApproxKnn(two.data(), 2, 2, p, 1, 1);
  EXPECT_EQ(nb[0], 1);
  EXPECT_EQ(nb[1], -1);
  EXPECT_EQ(nb[p.k], 0);
}

TEST(ScanDataset, WritesResultsAndNeverTouchesShards) {
  TempDir tmp;
  Synthetic s = MakeClusters(4, 100, 24);
  s.x[5 * s.dim + 2] = NAN;
  s.y[9] = 17;
  auto report = testing_util::WriteDataset(s, tmp / "ds", 150, nullptr, tmp.path());
  std::vector<std::string> before;
  for (int i = 0; i < report.shards; ++i) before.push_back(*Sha256FileHex(tmp / ("ds/" + ShardFileName(i))));
  ScanOptions o;
  auto r = ScanDataset(tmp / "ds", o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->records, 400);
  EXPECT_GE(r->quarantined, 2);
  EXPECT_EQ(r->admitted + r->quarantined, 400);
  for (int i = 0; i < report.shards; ++i) EXPECT_EQ(*Sha256FileHex(tmp / ("ds/" + ShardFileName(i))), before[i]);
  auto admitted = ReadAdmitted(tmp / "ds");
  ASSERT_TRUE(admitted.ok()) << admitted.status().ToString();
  EXPECT_EQ(static_cast<int64_t>(admitted->ids.size()), r->admitted);
  EXPECT_EQ(admitted->manifest_sha256, r->manifest_sha256);
  auto q = ReadQuarantine(tmp / "ds", "schema");
  ASSERT_TRUE(q.ok());
  ASSERT_EQ(q->size(), 2u);
  EXPECT_EQ((*q)[0].record_id, 5);
  EXPECT_EQ((*q)[1].record_id, 9);
  EXPECT_EQ((*q)[1].shard, "shard-00000.rec");
  EXPECT_TRUE(PathExists(tmp / "ds/scan/report.json"));
  EXPECT_EQ(ReadQuarantine(tmp / "ds", "", 1)->size(), 1u);
  // A damaged admitted index is refused, not believed.
  auto bytes = ReadFile(tmp / "ds/scan/admitted.idx");
  (*bytes)[80] ^= 1;
  ASSERT_TRUE(WriteFileAtomic(tmp / "ds/scan/admitted.idx", *bytes).ok());
  EXPECT_EQ(ReadAdmitted(tmp / "ds").status().code(), StatusCode::kDataLoss);
}

TEST(ScanOptions, FromSpecListsAndThresholds) {
  DataFilters f;
  f.mutable_schema()->set_enabled(true);
  f.mutable_outliers()->set_enabled(true);
  f.mutable_outliers()->set_threshold(2.5);
  f.mutable_label_consistency()->set_enabled(false);
  ScanOptions o = ScanOptionsFromSpec(f);
  EXPECT_TRUE(o.schema);
  EXPECT_FALSE(o.exact);
  EXPECT_FALSE(o.label);
  EXPECT_DOUBLE_EQ(o.OutlierZ(), 2.5);
  EXPECT_DOUBLE_EQ(o.LabelMargin(), 0.3);  // threshold 0: the default
  ASSERT_TRUE(SetFilterList("near,label", &o).ok());
  EXPECT_TRUE(o.near && o.label && !o.schema && !o.outliers);
  EXPECT_FALSE(SetFilterList("near,bogus", &o).ok());
  ASSERT_TRUE(SetThreshold("near=0.07", &o).ok());
  EXPECT_DOUBLE_EQ(o.NearMaxRms(), 0.07);
  EXPECT_FALSE(SetThreshold("label=2", &o).ok());
  EXPECT_FALSE(SetThreshold("near", &o).ok());
  EXPECT_FALSE(SetThreshold("outliers=abc", &o).ok());
  EXPECT_FALSE(SetThreshold("nope=1", &o).ok());
  EXPECT_EQ(o.label_campaign_rounds, 3);
  ASSERT_TRUE(SetThreshold("label_campaign_rounds=0", &o).ok());
  EXPECT_EQ(o.label_campaign_rounds, 0);
  EXPECT_FALSE(SetThreshold("label_campaign_rounds=1.5", &o).ok());
  EXPECT_FALSE(SetThreshold("label_campaign_rounds=11", &o).ok());
  ASSERT_TRUE(SetThreshold("label_pair_rate=0.2", &o).ok());
  EXPECT_DOUBLE_EQ(o.label_pair_rate, 0.2);
  EXPECT_FALSE(SetThreshold("label_pair_rate=0", &o).ok());
  EXPECT_FALSE(SetThreshold("label_pair_rate=1.5", &o).ok());
  ASSERT_TRUE(SetThreshold("label_trigger_share=0", &o).ok());
  EXPECT_DOUBLE_EQ(o.label_trigger_share, 0);
  EXPECT_FALSE(SetThreshold("label_trigger_share=2", &o).ok());
}

}  // namespace
}  // namespace shoal
