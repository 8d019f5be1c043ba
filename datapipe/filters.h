// The scan's poisoning filters, as pure functions over a table of records held in
// memory. Each returns the rows it flags with a reason and a score; the scan turns them
// into the quarantine list. Statistical filters see only rows that passed the schema.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "datapipe/shard.h"

namespace shoal {

// Views of every record, in record-id order. Feature pointers point into shard bytes
// (or a caller's array), so building a table copies no features.
struct RecordTable {
  RecordLayout layout;
  int num_classes = 0;
  double value_min = 0.0, value_max = 1.0;
  std::vector<const uint8_t*> features;  // stored dtype, layout.feature_count values
  std::vector<int32_t> labels;
  std::vector<int64_t> ids;              // global record ids
  std::vector<int32_t> shard;            // index into shard_names
  std::vector<int64_t> index_in_shard;
  std::vector<std::string> shard_names;
  int height = 0, width = 0;             // image rows x columns when the schema's shape is 2-D; else 0
  int64_t size() const { return static_cast<int64_t>(labels.size()); }
  int dim() const { return static_cast<int>(layout.feature_count); }
  void ReadRow(int64_t row, float* out) const { FeaturesToF32(layout.feature_dtype, features[row], dim(), out); }
};
RecordTable TableFromShards(const std::vector<ShardView>& shards, int num_classes, double value_min, double value_max);
// A table over caller-owned f32 features (n x dim) and labels; ids are 0..n-1.
RecordTable TableFromArrays(const float* x, const int32_t* y, int64_t n, int dim, int num_classes);

struct Flag {
  int64_t row = 0;
  double score = 0;
  std::string reason;
};

// Schema and range: labels in [0, num_classes); f32 features finite and inside the
// declared range widened by `tolerance`. (Shape is fixed per shard and checked against
// the manifest when the dataset is opened.)
std::vector<Flag> SchemaFilter(const RecordTable& t, double tolerance, int threads);

// Exact duplicates by content hash, confirmed byte for byte. Identical content under
// different labels: every copy is flagged (nothing says which label is right). Same
// label: the first copy is kept, the rest are flagged.
std::vector<Flag> ExactDuplicateFilter(const RecordTable& t, const std::vector<int64_t>& rows, int threads);

// Rows projected to `dims` and centred on their mean: the shared input of the filters
// below. kRandom: a seeded Gaussian matrix scaled so distances are kept in expectation.
// kPca: the top principal subspace of a sample (randomized range finder seeded the same
// way), an orthogonal projection, so projected distances never exceed true ones.
enum class ProjectionKind { kRandom, kPca };
struct Projection {
  int dims = 0;
  std::vector<float> z;      // rows.size() x dims
  std::vector<float> basis;  // features x dims: z = (x - mean) * basis
  const float* row(int64_t i) const { return z.data() + i * dims; }
};
Projection ProjectRows(const RecordTable& t, const std::vector<int64_t>& rows, int dims, uint64_t seed,
                       ProjectionKind kind = ProjectionKind::kPca, int threads = 1);

// Near duplicates with conflicting labels, exact or transformed (shifted, cropped and
// resized, noised, brightness/contrast changed): candidates are each row's `neighbours`
// nearest rows in a gain-tolerant image descriptor that follows shifts of content
// inside the frame, plus the nearest row to each of its shifted descriptions (along an
// axis the content fills, where a shift cuts content off) and magnified ones (crops)
// (filter_near.cc); a pair with different labels is a duplicate when, after the best
// alignment and gain/offset fit (image_align.h), the RMS pixel residual is at most
// `max_rms` and at most `max_relative` of the image's own standard deviation (smooth,
// low-contrast images align with almost anything to a small absolute residual). Both
// rows are flagged. Tables without a 2-D image shape are compared feature for feature
// (gain and offset still fitted). With skip_identical, byte-identical pairs are left to
// the exact-duplicate filter.
struct NearDuplicateParams {
  double max_rms = 0.04;
  double max_relative = 0.2;
  int neighbours = 3;
  bool skip_identical = true;
};
struct NearDuplicateStats {
  int64_t descriptor_pairs = 0;  // conflicting candidate pairs aligned
  int64_t matched_pairs = 0;     // of those, within max_rms
};
std::vector<Flag> NearDuplicateFilter(const RecordTable& t, const std::vector<int64_t>& rows,
                                      const NearDuplicateParams& params, uint64_t seed, int threads,
                                      NearDuplicateStats* stats = nullptr);

// Approximate k nearest neighbours (squared L2) of every point among the others: an
// inverted file over k-means cells, each cell searched against its `nprobe` nearest
// cells with sgemm. Exact (brute force) when n is small. Result: n x k indices
// (-1 where fewer than k others exist), nearest first.
struct KnnParams {
  int k = 10;
  int nprobe = 6;
  int cell_size = 256;  // target points per k-means cell
};
// With `queries`, only those points are searched (the others get -1 rows); every point
// is still a candidate neighbour. `reuse`: an empty one receives the k-means cells; a
// filled one (same n) is used instead of training, with only the queries re-assigned
// (for a second search after only the queries moved).
struct KnnCells {
  std::vector<float> centroids;
  std::vector<int32_t> cell_of;
};
std::vector<int32_t> ApproxKnn(const float* z, int64_t n, int dims, const KnnParams& params, uint64_t seed,
                               int threads, const std::vector<int32_t>* queries = nullptr, KnnCells* reuse = nullptr);

// Per-class feature medians and inverse robust scales (1 / max(1.4826 MAD, floor)),
// from an evenly spread sample of each class (classes under 8 rows are left empty).
struct ClassFeatureStats {
  std::vector<float> median, inv_scale;  // per feature; empty for a class too small
};
std::vector<ClassFeatureStats> ComputeClassFeatureStats(const RecordTable& t, const std::vector<int64_t>& rows,
                                                        double floor, int threads = 1);
// The projection as if every feature value that no class ever takes (further than `cut`
// robust sd from the median of every class) were its class's median: a trigger stamped
// into a few features is removed from the view, while content typical of some other
// class (the evidence of a wrong label) is kept. A sparse update of z through the
// basis. `changed` receives the indices of the rows whose projection moved and
// `features` (aligned with it) which of their features were neutralised, ascending.
Projection NeutralizeExtremes(const RecordTable& t, const std::vector<int64_t>& rows, const Projection& p,
                              const std::vector<ClassFeatureStats>& stats, double cut, int threads,
                              std::vector<int32_t>* changed, std::vector<std::vector<int32_t>>* features = nullptr);

// Which backdoor accusations point at a shared trigger. A trigger puts out-of-range
// values at the same features (or, if it moves, within one region) of every record it
// poisons, all relabelled to its target; a clean record's out-of-range values (a shirt
// wider than any class's range) sit where few others of its label have theirs. Accused
// record i, with label labels[i] and out-of-range features features[i], is kept when at
// least `need` of those features (every one, if it has fewer) are out of range in at least
// max(kMinTriggerShare, share x label_counts[label]) accused records of its label,
// itself included. share 0 keeps every record.
inline constexpr int kMinTriggerShare = 5;
std::vector<uint8_t> SharedTriggers(const std::vector<int32_t>& labels, const std::vector<std::vector<int32_t>>& features,
                                    const std::vector<int64_t>& label_counts, int dim, double share, int need);

// Neighbour lists shared by the outlier and label filters (computed once per scan).
struct Neighbours {
  int k = 0;
  std::vector<int32_t> idx;  // rows.size() x k, indices into rows, nearest first, -1 pads
  const int32_t* of(int64_t i) const { return idx.data() + i * k; }
};
Neighbours FindNeighbours(const Projection& p, const KnnParams& params, uint64_t seed, int threads,
                          const std::vector<int32_t>* queries = nullptr, KnnCells* reuse = nullptr);

// Per-class robust outliers: distance of each row's projection to its class's
// coordinate-wise median; flagged when 0.6745 * (d - median(d)) / MAD(d) > z_cut.
std::vector<Flag> OutlierFilter(const RecordTable& t, const std::vector<int64_t>& rows, const Projection& p,
                                double z_cut);

// Out-of-sample class probabilities of every row: the rank-weighted label shares of its
// k nearest neighbours (itself never among them), skipping `excluded` rows.
struct LabelProbabilities {
  int classes = 0;
  std::vector<float> p;        // rows.size() x classes
  std::vector<int32_t> votes;  // neighbours that voted (0: no probabilities)
  const float* row(int64_t i) const { return p.data() + i * classes; }
};
LabelProbabilities NeighbourProbabilities(const RecordTable& t, const std::vector<int64_t>& rows, const Neighbours& nb,
                                          int k, const std::vector<uint8_t>* excluded, int threads);
// A robust generative model of each class in the projection: per-coordinate median and
// MAD scale, Student-t tails. Fit on the labels as given; medians barely move when a
// quarter of a class is flipped in from elsewhere.
struct RobustClassModel {
  int classes = 0, dims = 0;
  std::vector<float> median, inv_scale, log_norm;
  std::vector<uint8_t> present;
  std::vector<float> typical;  // classes x classes: median log-ratio (c vs o) of rows labelled c
  std::vector<uint8_t> similar;  // classes x classes: the pair overlaps (typical ratio under half the median pair's)
  float similar_cut = 0;         // that half of the median pair's typical ratio
  float LogLikelihood(const float* z, int c) const;
};
RobustClassModel FitRobustClassModel(const RecordTable& t, const std::vector<int64_t>& rows, const Projection& proj);
// Confident learning's per-class thresholds: the mean probability of class c over the
// rows labelled c (rows marked in `excluded` left out).
std::vector<float> ClassThresholds(const RecordTable& t, const std::vector<int64_t>& rows, const LabelProbabilities& lp,
                                   const std::vector<uint8_t>* excluded);

// Confident learning's decision for one row labelled y with probabilities p: the most
// likely class among those whose threshold p reaches, when it is not y and beats y by
// `margin`; else -1.
int32_t LikelyOtherClass(const float* p, const std::vector<float>& thresholds, int32_t y, double margin);

// Label errors by confident learning: a row labelled y is flagged when the most likely
// class c among those whose threshold it reaches is not y, and p(c) - p(y) >= margin.
// `rounds` rounds in which the previous round's flagged rows do not vote (nb should
// hold about 2k neighbours so a vote can skip suspects and still see k).
// `thresholds`: when given non-empty they are used as they are (a second view of the
// same data); otherwise computed, and returned through it when non-null.
struct LabelParams {
  int k = 10;
  double margin = 0.5;
  int rounds = 3;
  // With `proj`: a flagged row's log-likelihood ratio (likely vs given class) must reach
  // this share of a typical member's; `similar_llr` for pairs of similar classes.
  double min_llr = 0;
  double similar_llr = 1.5;
};
std::vector<Flag> ConfidentLabelFilter(const RecordTable& t, const std::vector<int64_t>& rows, const Neighbours& nb,
                                       const LabelParams& params, int threads, std::vector<float>* thresholds = nullptr,
                                       const Projection* proj = nullptr);

// Out-of-fold class probabilities from a quick model (filter_model.cc), as confident
// learning gets them: rows are dealt into `folds` seeded folds, and for each a
// one-hidden-layer MLP (ReLU, softmax) is trained on up to `max_train` rows of the other
// folds (an even spread) for `epochs`, on the projection at unit variance per
// coordinate, and predicts the fold. Rows marked in `exclude` are predicted, never
// trained on. Too few rows: every row gets votes 0 (no probabilities).
struct ModelParams {
  int folds = 2;
  int hidden = 64;
  int epochs = 4;
  int batch = 128;
  double lr = 0.05;
  int max_train = 10000;  // per fold; 0: every row of the other folds
};
LabelProbabilities OutOfFoldProbabilities(const RecordTable& t, const std::vector<int64_t>& rows, const Projection& proj,
                                          const ModelParams& params, uint64_t seed, int threads,
                                          const std::vector<uint8_t>* exclude = nullptr);

// Label-flip campaigns: labels moved wholesale from one class to another, which the
// neighbour vote cannot tell from ambiguity between look-alike classes. Up to `rounds`
// rounds of out-of-fold probabilities, each trained without the previous round's
// suspects (LikelyOtherClass with `margin` under per-class thresholds). A round in which
// no ordered pair (label y, likely c) holds suspects from at least `pair_rate` of the
// rows labelled y ends the search with nothing flagged (one round on clean data). After
// the last round, a pair is a campaign when at least `pair_rate` of the rows labelled y
// are class c with probability >= kConfidentProbability; its suspects are flagged.
inline constexpr float kConfidentProbability = 0.9f;
struct FlipCampaignParams {
  ModelParams model;  // the first round: a screen that every scan pays for
  // Later rounds, only where some pair is a candidate: twice the rows, 6 epochs (flip
  // recall 0.81 -> 0.84 on the poison benchmark, for 0.08 s more).
  ModelParams refine = [] {
    ModelParams m;
    m.epochs = 6;
    m.max_train = 20000;
    return m;
  }();
  int rounds = 3;
  double margin = 0.3;
  double pair_rate = 0.1;
};
struct FlipCampaignReport {
  int rounds = 0;  // model rounds trained
  struct Pair {
    int label = 0, likely = 0;
    double share = 0;  // of the rows labelled `label`, confidently `likely`
    int64_t flagged = 0;
  };
  std::vector<Pair> pairs;  // the campaigns found
};
std::vector<Flag> FlipCampaignFilter(const RecordTable& t, const std::vector<int64_t>& rows, const Projection& proj,
                                     const FlipCampaignParams& params, uint64_t seed, int threads,
                                     FlipCampaignReport* report = nullptr);

// Deterministic N(0, 1) values from a seed (SplitMix64 + Box-Muller), identical on
// every platform, unlike std::normal_distribution.
void SeededGaussian(uint64_t seed, float* out, size_t n, float stddev);

}  // namespace shoal
