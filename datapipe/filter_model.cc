// Label-flip campaigns, found with out-of-fold probabilities from a quick model, as
// cleanlab gets them. The k-NN vote of filter_label.cc cannot tell a sandal relabelled
// sneaker from a shirt that looks like a T-shirt: in the PCA view both pairs are equally
// confusable. A small MLP trained on other folds separates sandal from sneaker twice as
// well as T-shirt from shirt, and the difference shows at the level of a class pair: once
// the clearest suspects stop training the model, a flipped pair has far more records that
// are *confidently* the other class (p >= 0.9) than any pair that is merely ambiguous.
// On clean Fashion-MNIST no pair comes close, so no record is flagged and one round of
// the model is all a clean scan pays for.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>

#include "datapipe/filters.h"
#include "datapipe/parallel.h"

namespace shoal {

namespace {

// One ReLU hidden layer and a softmax head; w1 is in x hidden, w2 hidden x out, row-major.
struct Mlp {
  int in = 0, hidden = 0, out = 0;
  std::vector<float> w1, b1, w2, b2;
};

// Fills rows x hidden activations and rows x out class probabilities for the rows of x.
void Forward(const Mlp& m, const float* x, int rows, float* h, float* probs) {
  for (int r = 0; r < rows; ++r) std::copy(m.b1.begin(), m.b1.end(), h + static_cast<size_t>(r) * m.hidden);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, m.hidden, m.in, 1.0f, x, m.in, m.w1.data(), m.hidden,
              1.0f, h, m.hidden);
  for (size_t i = 0; i < static_cast<size_t>(rows) * m.hidden; ++i) h[i] = std::max(h[i], 0.0f);
  for (int r = 0; r < rows; ++r) std::copy(m.b2.begin(), m.b2.end(), probs + static_cast<size_t>(r) * m.out);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, m.out, m.hidden, 1.0f, h, m.hidden, m.w2.data(), m.out,
              1.0f, probs, m.out);
  for (int r = 0; r < rows; ++r) {
    float* l = probs + static_cast<size_t>(r) * m.out;
    const float top = *std::max_element(l, l + m.out);
    float sum = 0;
    for (int c = 0; c < m.out; ++c) sum += (l[c] = std::exp(l[c] - top));
    for (int c = 0; c < m.out; ++c) l[c] /= sum;
  }
}

// SGD with momentum on softmax cross-entropy over `train` (indices into x), learning
// rate cosine-decayed to 0; then the probabilities of every row of `test` into probs.
void TrainAndPredict(const std::vector<float>& x, int dims, const std::vector<int32_t>& y, int classes,
                     const std::vector<int32_t>& train, const std::vector<int32_t>& test, const ModelParams& p,
                     uint64_t seed, float* probs) {
  Mlp m;
  m.in = dims, m.hidden = p.hidden, m.out = classes;
  m.w1.resize(static_cast<size_t>(dims) * p.hidden);
  m.w2.resize(static_cast<size_t>(p.hidden) * classes);
  m.b1.assign(p.hidden, 0.0f);
  m.b2.assign(classes, 0.0f);
  SeededGaussian(seed, m.w1.data(), m.w1.size(), std::sqrt(2.0f / dims));
  SeededGaussian(seed + 1, m.w2.data(), m.w2.size(), std::sqrt(1.0f / p.hidden));
  std::vector<float> v1(m.w1.size(), 0.0f), v2(m.w2.size(), 0.0f), vb1(p.hidden, 0.0f), vb2(classes, 0.0f);
  std::vector<float> g1(m.w1.size()), g2(m.w2.size()), gb1(p.hidden), gb2(classes);
  const int batch = std::max(p.batch, 1);
  std::vector<float> xb(static_cast<size_t>(batch) * dims), h(static_cast<size_t>(batch) * p.hidden),
      dl(static_cast<size_t>(batch) * classes), dh(static_cast<size_t>(batch) * p.hidden);
  std::vector<int32_t> order = train;
  std::mt19937_64 rng(seed);
  const int64_t total_steps = std::max<int64_t>((static_cast<int64_t>(order.size()) + batch - 1) / batch * p.epochs, 1);
  int64_t step = 0;
  auto update = [](std::vector<float>& w, std::vector<float>& v, const std::vector<float>& g, float lr, float decay) {
    for (size_t i = 0; i < w.size(); ++i) {
      v[i] = 0.9f * v[i] + g[i] + decay * w[i];
      w[i] -= lr * v[i];
    }
  };
  for (int epoch = 0; epoch < p.epochs; ++epoch) {
    std::shuffle(order.begin(), order.end(), rng);
    for (size_t b = 0; b < order.size(); b += batch, ++step) {
      const int rows = static_cast<int>(std::min<size_t>(batch, order.size() - b));
      for (int r = 0; r < rows; ++r)
        std::copy_n(x.data() + static_cast<size_t>(order[b + r]) * dims, dims, xb.data() + static_cast<size_t>(r) * dims);
      Forward(m, xb.data(), rows, h.data(), dl.data());
      // Gradient of the mean loss with respect to the logits: (softmax - one-hot) / rows.
      for (int r = 0; r < rows; ++r) dl[static_cast<size_t>(r) * classes + y[order[b + r]]] -= 1.0f;
      for (size_t i = 0; i < static_cast<size_t>(rows) * classes; ++i) dl[i] /= rows;
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, p.hidden, classes, rows, 1.0f, h.data(), p.hidden, dl.data(),
                  classes, 0.0f, g2.data(), classes);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, p.hidden, classes, 1.0f, dl.data(), classes,
                  m.w2.data(), classes, 0.0f, dh.data(), p.hidden);
      std::fill(gb2.begin(), gb2.end(), 0.0f);
      std::fill(gb1.begin(), gb1.end(), 0.0f);
      for (int r = 0; r < rows; ++r) {
        for (int c = 0; c < classes; ++c) gb2[c] += dl[static_cast<size_t>(r) * classes + c];
        for (int j = 0; j < p.hidden; ++j) {
          float& d = dh[static_cast<size_t>(r) * p.hidden + j];
          if (h[static_cast<size_t>(r) * p.hidden + j] <= 0.0f) d = 0.0f;  // ReLU
          gb1[j] += d;
        }
      }
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, dims, p.hidden, rows, 1.0f, xb.data(), dims, dh.data(),
                  p.hidden, 0.0f, g1.data(), p.hidden);
      const float lr = static_cast<float>(0.5 * p.lr * (1.0 + std::cos(M_PI * static_cast<double>(step) / total_steps)));
      update(m.w1, v1, g1, lr, 1e-4f);
      update(m.w2, v2, g2, lr, 1e-4f);
      update(m.b1, vb1, gb1, lr, 0.0f);
      update(m.b2, vb2, gb2, lr, 0.0f);
    }
  }
  for (size_t b = 0; b < test.size(); b += batch) {
    const int rows = static_cast<int>(std::min<size_t>(batch, test.size() - b));
    for (int r = 0; r < rows; ++r)
      std::copy_n(x.data() + static_cast<size_t>(test[b + r]) * dims, dims, xb.data() + static_cast<size_t>(r) * dims);
    Forward(m, xb.data(), rows, h.data(), dl.data());
    for (int r = 0; r < rows; ++r)
      std::copy_n(dl.data() + static_cast<size_t>(r) * classes, classes,
                  probs + static_cast<size_t>(test[b + r]) * classes);
  }
}

}  // namespace

LabelProbabilities OutOfFoldProbabilities(const RecordTable& t, const std::vector<int64_t>& rows, const Projection& proj,
                                          const ModelParams& p, uint64_t seed, int threads,
                                          const std::vector<uint8_t>* exclude) {
  const int64_t n = static_cast<int64_t>(rows.size());
  LabelProbabilities out;
  out.classes = std::max(t.num_classes, 1);
  out.p.assign(static_cast<size_t>(n) * out.classes, 0.0f);
  out.votes.assign(n, 0);
  const int folds = std::max(p.folds, 2);
  const int dims = proj.dims;
  if (n < 8 * folds || dims <= 0 || p.hidden <= 0 || p.epochs <= 0) return out;  // votes 0: no probabilities
  // Inputs: projection coordinates at unit variance, so the leading components (which
  // carry most of the variance) do not drown the small ones that separate look-alikes.
  std::vector<double> inv_sd(dims, 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int d = 0; d < dims; ++d) inv_sd[d] += static_cast<double>(proj.row(i)[d]) * proj.row(i)[d];
  for (int d = 0; d < dims; ++d) inv_sd[d] = 1.0 / std::sqrt(std::max(inv_sd[d] / n, 1e-12));
  std::vector<float> x(static_cast<size_t>(n) * dims);
  for (int64_t i = 0; i < n; ++i)
    for (int d = 0; d < dims; ++d) x[i * dims + d] = static_cast<float>(proj.row(i)[d] * inv_sd[d]);
  std::vector<int32_t> y(n);
  for (int64_t i = 0; i < n; ++i) y[i] = std::clamp(t.labels[rows[i]], 0, out.classes - 1);
  std::vector<int32_t> fold_of(n), perm(n);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937_64(seed));
  for (int64_t i = 0; i < n; ++i) fold_of[perm[i]] = static_cast<int32_t>(i % folds);
  ParallelForEach(folds, threads, [&](int64_t f, int) {
    std::vector<int32_t> train, test;
    for (int64_t i = 0; i < n; ++i) {
      if (fold_of[i] == f) test.push_back(static_cast<int32_t>(i));
      else if (!exclude || !(*exclude)[i]) train.push_back(static_cast<int32_t>(i));
    }
    if (p.max_train > 0 && static_cast<int64_t>(train.size()) > p.max_train) {  // an even spread of them
      std::vector<int32_t> spread(p.max_train);
      for (int64_t k = 0; k < p.max_train; ++k) spread[k] = train[k * static_cast<int64_t>(train.size()) / p.max_train];
      train.swap(spread);
    }
    TrainAndPredict(x, dims, y, out.classes, train, test, p, seed + 1000 * (f + 1), out.p.data());
  });
  std::fill(out.votes.begin(), out.votes.end(), 1);
  return out;
}

std::vector<Flag> FlipCampaignFilter(const RecordTable& t, const std::vector<int64_t>& rows, const Projection& proj,
                                     const FlipCampaignParams& params, uint64_t seed, int threads,
                                     FlipCampaignReport* report) {
  const int64_t n = static_cast<int64_t>(rows.size());
  const int classes = std::max(t.num_classes, 1);
  std::vector<int64_t> per_class(classes, 0);
  for (int64_t r : rows) ++per_class[std::clamp(t.labels[r], 0, classes - 1)];
  // Share of the records labelled `pair / classes` counted in count[pair].
  auto share = [&](const std::vector<int64_t>& count, int pair) {
    return static_cast<double>(count[pair]) / std::max<int64_t>(per_class[pair / classes], 1);
  };
  FlipCampaignReport local;
  FlipCampaignReport& rep = report ? *report : local;
  rep = FlipCampaignReport{};
  LabelProbabilities lp;
  std::vector<float> th;
  std::vector<int32_t> likely(n, -1);
  std::vector<uint8_t> suspect;
  const int rounds = std::max(params.rounds, 1);
  for (int round = 0; round < rounds; ++round) {
    lp = round ? OutOfFoldProbabilities(t, rows, proj, params.refine, seed + round, threads, &suspect)
               : OutOfFoldProbabilities(t, rows, proj, params.model, seed, threads);
    ++rep.rounds;
    th = ClassThresholds(t, rows, lp, nullptr);
    std::vector<int64_t> suspects(static_cast<size_t>(classes) * classes, 0);
    suspect.assign(n, 0);
    for (int64_t i = 0; i < n; ++i) {
      const int32_t y = t.labels[rows[i]];
      likely[i] = lp.votes[i] && y >= 0 && y < classes ? LikelyOtherClass(lp.row(i), th, y, params.margin) : -1;
      if (likely[i] >= 0) suspect[i] = 1, ++suspects[y * classes + likely[i]];
    }
    // No pair has even a suspect share at the cut: no campaign, nothing more to train.
    bool candidate = false;
    for (int pair = 0; pair < classes * classes; ++pair) candidate |= share(suspects, pair) >= params.pair_rate;
    if (!candidate) return {};
  }
  // The last model trained without the suspects, so a flipped pair's records are now
  // confidently their true class; ambiguous pairs stay spread between the two.
  std::vector<int64_t> confident(static_cast<size_t>(classes) * classes, 0);
  for (int64_t i = 0; i < n; ++i) {
    const int32_t y = t.labels[rows[i]];
    if (!lp.votes[i] || y < 0 || y >= classes) continue;
    for (int c = 0; c < classes; ++c)
      if (c != y && lp.row(i)[c] >= kConfidentProbability) ++confident[y * classes + c];
  }
  std::vector<int> campaign(static_cast<size_t>(classes) * classes, -1);  // index into rep.pairs
  for (int pair = 0; pair < classes * classes; ++pair) {
    if (share(confident, pair) < params.pair_rate) continue;
    campaign[pair] = static_cast<int>(rep.pairs.size());
    rep.pairs.push_back({pair / classes, pair % classes, share(confident, pair), 0});
  }
  std::vector<Flag> out;
  for (int64_t i = 0; i < n; ++i) {
    if (likely[i] < 0) continue;
    const int32_t y = t.labels[rows[i]], c = likely[i];
    const int k = campaign[y * classes + c];
    if (k < 0) continue;
    ++rep.pairs[k].flagged;
    const float* p = lp.row(i);
    char buf[300];
    std::snprintf(buf, sizeof(buf),
                  "label-flip campaign %d->%d: %.1f%% of the records labelled %d are class %d with out-of-fold "
                  "probability >= %.1f (cut %.1f%%); here label %d has %.2f, class %d %.2f (its typical member %.2f), "
                  "margin %.2f >= %.2f",
                  c, y, 100 * rep.pairs[k].share, y, c, kConfidentProbability, 100 * params.pair_rate, y, p[y], c,
                  p[c], th[c], p[c] - p[y], params.margin);
    out.push_back({rows[i], static_cast<double>(p[c] - p[y]), buf});
  }
  return out;
}

}  // namespace shoal
