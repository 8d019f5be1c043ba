// The label filter: confident learning over out-of-sample class probabilities. Each
// record's probabilities come from its nearest neighbours (never itself), so they are
// out-of-sample like the out-of-fold predictions of a trained model. A record is flagged
// only when another class is as likely for it as for a typical member of that class
// (per-class thresholds) while its own label is much less likely: records between two
// similar classes, which carry some probability of both, stay admitted.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "datapipe/filters.h"
#include "datapipe/parallel.h"

namespace shoal {

namespace {
// Weight of neighbour rank r (0 = nearest): nearer neighbours say more, but not so much
// that one lookalike decides. Ranks are used rather than distances so that density
// differences between classes do not change what a vote means.
inline float RankWeight(int r) { return 1.0f / (1.0f + 0.1f * static_cast<float>(r)); }
}  // namespace

LabelProbabilities NeighbourProbabilities(const RecordTable& t, const std::vector<int64_t>& rows, const Neighbours& nb,
                                          int k, const std::vector<uint8_t>* excluded, int threads) {
  const int64_t n = static_cast<int64_t>(rows.size());
  const int classes = std::max(t.num_classes, 1);
  LabelProbabilities out;
  out.classes = classes;
  out.p.assign(static_cast<size_t>(n) * classes, 0.0f);
  out.votes.assign(n, 0);
  k = std::clamp(k, 1, std::max(nb.k, 1));
  ParallelChunks(n, threads, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) {
      float* p = out.p.data() + i * classes;
      float total = 0;
      int found = 0;
      for (int r = 0; r < nb.k && found < k; ++r) {
        const int32_t j = nb.of(i)[r];
        if (j < 0 || (excluded && (*excluded)[j])) continue;
        const int32_t y = t.labels[rows[j]];
        if (y < 0 || y >= classes) continue;  // rows passed the schema check; still never index with it
        const float w = RankWeight(found);
        p[y] += w;
        total += w;
        ++found;
      }
      out.votes[i] = found;
      if (total > 0)
        for (int c = 0; c < classes; ++c) p[c] /= total;
    }
  });
  return out;
}

RobustClassModel FitRobustClassModel(const RecordTable& t, const std::vector<int64_t>& rows, const Projection& proj) {
  RobustClassModel m;
  m.classes = std::max(t.num_classes, 1);
  m.dims = proj.dims;
  m.median.assign(static_cast<size_t>(m.classes) * m.dims, 0.0f);
  m.inv_scale.assign(m.median.size(), 0.0f);
  m.log_norm.assign(m.classes, 0.0f);
  m.present.assign(m.classes, 0);
  std::vector<std::vector<int64_t>> by_class(m.classes);
  for (size_t i = 0; i < rows.size(); ++i) {
    const int32_t y = t.labels[rows[i]];
    if (y >= 0 && y < m.classes) by_class[y].push_back(static_cast<int64_t>(i));
  }
  std::vector<float> col;
  for (int c = 0; c < m.classes; ++c) {
    const auto& mem = by_class[c];
    if (mem.size() < 16) continue;
    m.present[c] = 1;
    // Median and MAD: a quarter of a class flipped in from elsewhere moves neither far.
    const size_t take = std::min<size_t>(mem.size(), 2000);
    col.resize(take);
    double log_norm = 0;
    for (int d = 0; d < m.dims; ++d) {
      for (size_t i = 0; i < take; ++i) col[i] = proj.row(mem[i * mem.size() / take])[d];
      std::nth_element(col.begin(), col.begin() + take / 2, col.end());
      const float med = col[take / 2];
      for (auto& v : col) v = std::abs(v - med);
      std::nth_element(col.begin(), col.begin() + take / 2, col.end());
      const float sd = std::max(1.4826f * col[take / 2], 1e-6f);
      m.median[c * m.dims + d] = med;
      m.inv_scale[c * m.dims + d] = 1.0f / sd;
      log_norm -= std::log(sd);
    }
    m.log_norm[c] = static_cast<float>(log_norm);
  }
  // How a typical member of c scores against every other class: the median ratio over a
  // sample of the rows labelled c (a quarter flipped in from elsewhere barely moves it).
  m.typical.assign(static_cast<size_t>(m.classes) * m.classes, 0.0f);
  for (int c = 0; c < m.classes; ++c) {
    if (!m.present[c]) continue;
    const auto& mem = by_class[c];
    const size_t take = std::min<size_t>(mem.size(), 400);
    std::vector<float> own(take);
    col.resize(take);
    for (size_t i = 0; i < take; ++i) own[i] = m.LogLikelihood(proj.row(mem[i * mem.size() / take]), c);
    for (int o = 0; o < m.classes; ++o) {
      if (o == c || !m.present[o]) continue;
      for (size_t i = 0; i < take; ++i) col[i] = own[i] - m.LogLikelihood(proj.row(mem[i * mem.size() / take]), o);
      std::nth_element(col.begin(), col.begin() + take / 2, col.begin() + take);
      m.typical[c * m.classes + o] = col[take / 2];
    }
  }
  // Similar pairs: a typical member is less clearly itself against the other class
  // than half as much as the median pair. Records between them are ambiguity, not poison.
  std::vector<float> off;
  for (int c = 0; c < m.classes; ++c)
    for (int o = 0; o < m.classes; ++o)
      if (c != o && m.present[c] && m.present[o]) off.push_back(m.typical[c * m.classes + o]);
  m.similar.assign(static_cast<size_t>(m.classes) * m.classes, 0);
  if (!off.empty()) {
    std::nth_element(off.begin(), off.begin() + off.size() / 2, off.end());
    const float cut = 0.5f * off[off.size() / 2];
    m.similar_cut = cut;
    for (int c = 0; c < m.classes; ++c)
      for (int o = 0; o < m.classes; ++o)
        m.similar[c * m.classes + o] =
            c != o && std::min(m.typical[c * m.classes + o], m.typical[o * m.classes + c]) < cut;
  }
  return m;
}

float RobustClassModel::LogLikelihood(const float* z, int c) const {
  // Student t with 5 degrees of freedom per coordinate: heavy tails, so one odd
  // coordinate cannot decide.
  constexpr float kNu = 5.0f;
  float s = log_norm[c];
  const float* med = median.data() + c * dims;
  const float* inv = inv_scale.data() + c * dims;
  for (int d = 0; d < dims; ++d) {
    const float u = (z[d] - med[d]) * inv[d];
    s -= 0.5f * (kNu + 1) * std::log1p(u * u / kNu);
  }
  return s;
}

std::vector<float> ClassThresholds(const RecordTable& t, const std::vector<int64_t>& rows, const LabelProbabilities& lp,
                                   const std::vector<uint8_t>* excluded) {
  std::vector<double> sum(lp.classes, 0.0);
  std::vector<int64_t> count(lp.classes, 0);
  for (size_t i = 0; i < rows.size(); ++i) {
    const int32_t y = t.labels[rows[i]];
    if (y < 0 || y >= lp.classes || lp.votes[i] == 0 || (excluded && (*excluded)[i])) continue;
    sum[y] += lp.row(i)[y];
    ++count[y];
  }
  std::vector<float> th(lp.classes, 1.0f);  // a class nobody holds: never "likely"
  for (int c = 0; c < lp.classes; ++c)
    if (count[c] > 0) th[c] = static_cast<float>(sum[c] / count[c]);
  return th;
}

int32_t LikelyOtherClass(const float* p, const std::vector<float>& th, int32_t y, double margin) {
  // The confident joint's column: the most likely class among those the record reaches
  // the threshold of. Off the diagonal and clear of the given label by the margin: a
  // label error.
  int32_t best = -1;
  for (int c = 0; c < static_cast<int>(th.size()); ++c)
    if (p[c] >= th[c] && (best < 0 || p[c] > p[best])) best = c;
  if (best < 0 || best == y || p[best] - p[y] < margin) return -1;
  return best;
}

std::vector<Flag> ConfidentLabelFilter(const RecordTable& t, const std::vector<int64_t>& rows, const Neighbours& nb,
                                       const LabelParams& params, int threads, std::vector<float>* thresholds,
                                       const Projection* proj) {
  const int64_t n = static_cast<int64_t>(rows.size());
  std::vector<uint8_t> suspect(n, 0), flagged(n, 0);
  std::vector<int32_t> likely(n, -1);
  LabelProbabilities lp;
  RobustClassModel gen_model;
  const RobustClassModel* gen = nullptr;
  if (proj && params.min_llr > 0) gen_model = FitRobustClassModel(t, rows, *proj), gen = &gen_model;
  std::vector<float> th = thresholds && !thresholds->empty() ? *thresholds : std::vector<float>();
  const bool fixed_thresholds = !th.empty();
  // Rounds of cleaning: records flagged in one round neither vote nor set thresholds in
  // the next. A quarter of a class flipped to another outvotes the truth around a flip
  // at first; once the clearest flips are set aside the rest lose their cover.
  for (int round = 0; round < std::max(params.rounds, 1); ++round) {
    lp = NeighbourProbabilities(t, rows, nb, params.k, round ? &suspect : nullptr, threads);
    // Thresholds from the first round only: they are means over the labels as given,
    // flips included, which is what makes a flipped record clear its true class's bar.
    if (!fixed_thresholds && round == 0) th = ClassThresholds(t, rows, lp, nullptr);
    ParallelChunks(n, threads, [&](int64_t b, int64_t e, int) {
      for (int64_t i = b; i < e; ++i) {
        flagged[i] = 0;
        const int32_t y = t.labels[rows[i]];
        if (lp.votes[i] == 0 || y < 0 || y >= lp.classes) continue;
        const int32_t best = LikelyOtherClass(lp.row(i), th, y, params.margin);
        if (best < 0) continue;
        // Between classes that overlap (shirt and T-shirt) content says little about
        // which label is right: a record must also be clearly more typical of the
        // likely class than of its own under the robust per-class model.
        if (gen && gen->present[best] && gen->present[y]) {
          const int pair = best * gen->classes + y;
          // Between similar classes at least a similar-pair cut's worth: two classes the
          // content cannot tell apart (typical ratio near 0) never accuse each other.
          const double need = gen->similar[pair]
                                  ? params.similar_llr * std::max(gen->typical[pair], gen->similar_cut)
                                  : params.min_llr * gen->typical[pair];
          if (gen->LogLikelihood(proj->row(i), best) - gen->LogLikelihood(proj->row(i), y) < need) continue;
        }
        flagged[i] = 1, likely[i] = best;
      }
    });
    if (flagged == suspect) break;
    suspect = flagged;
  }
  if (thresholds) *thresholds = th;
  std::vector<Flag> out;
  for (int64_t i = 0; i < n; ++i) {
    if (!flagged[i]) continue;
    const int32_t y = t.labels[rows[i]];
    const int32_t c = likely[i];
    const float* p = lp.row(i);
    char buf[240];
    std::snprintf(buf, sizeof(buf),
                  "label %d has probability %.2f from %d nearest neighbours; class %d has %.2f (its typical member "
                  "%.2f), margin %.2f >= %.2f",
                  y, p[y], lp.votes[i], c, p[c], th[c], p[c] - p[y], params.margin);
    out.push_back({rows[i], static_cast<double>(p[c] - p[y]), buf});
  }
  return out;
}

}  // namespace shoal
