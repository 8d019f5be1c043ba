// Scan orchestration: schema first (its rejects are kept away from the statistics),
// exact duplicates, one shared projection, then near duplicates, outliers and the
// label vote. Output is rebuilt as a whole and swapped in with renames.
#include "datapipe/scan.h"

#include <sys/resource.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <thread>
#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "common/file_util.h"
#include "datapipe/blas_guard.h"
#include "datapipe/parallel.h"
#include "datapipe/review.h"

namespace shoal {

namespace fs = std::filesystem;

namespace {
// User + system CPU seconds of the whole process: with other work on the machine, wall
// time says little about the scan's own cost; CPU time does.
double ProcessCpuSeconds() {
  rusage u;
  if (getrusage(RUSAGE_SELF, &u) != 0) return 0;
  return u.ru_utime.tv_sec + u.ru_utime.tv_usec * 1e-6 + u.ru_stime.tv_sec + u.ru_stime.tv_usec * 1e-6;
}
}  // namespace

ScanOptions ScanOptionsFromSpec(const DataFilters& f) {
  ScanOptions o;
  o.schema = f.schema().enabled();
  o.schema_tolerance = f.schema().threshold();
  o.exact = f.exact_duplicates().enabled();
  o.near = f.near_duplicates().enabled();
  o.near_max_rms = f.near_duplicates().threshold();
  o.outliers = f.outliers().enabled();
  o.outlier_z = f.outliers().threshold();
  o.label = f.label_consistency().enabled();
  o.label_margin = f.label_consistency().threshold();
  return o;
}

Status SetFilterList(const std::string& list, ScanOptions* o) {
  if (list.empty() || list == "all") {
    o->schema = o->exact = o->near = o->outliers = o->label = true;
    return OkStatus();
  }
  o->schema = o->exact = o->near = o->outliers = o->label = false;
  size_t pos = 0;
  while (pos <= list.size()) {
    size_t end = list.find(',', pos);
    if (end == std::string::npos) end = list.size();
    std::string name = list.substr(pos, end - pos);
    if (name == "schema") o->schema = true;
    else if (name == "exact") o->exact = true;
    else if (name == "near") o->near = true;
    else if (name == "outliers") o->outliers = true;
    else if (name == "label") o->label = true;
    else if (name != "none") return InvalidArgument("unknown filter '" + name + "' (known: schema, exact, near, outliers, label)");
    pos = end + 1;
  }
  return OkStatus();
}

Status SetThreshold(const std::string& a, ScanOptions* o) {
  size_t eq = a.find('=');
  if (eq == std::string::npos) return InvalidArgument("threshold '" + a + "' is not name=value");
  std::string name = a.substr(0, eq), text = a.substr(eq + 1);
  char* end = nullptr;
  double v = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !std::isfinite(v) || v < 0)
    return InvalidArgument("threshold " + name + " needs a non-negative number, got '" + text + "'");
  if (name == "schema") o->schema_tolerance = v;
  else if (name == "near") o->near_max_rms = v;
  else if (name == "outliers") o->outlier_z = v;
  else if (name == "label") {
    if (v > 1) return InvalidArgument("threshold label is a probability margin in [0, 1]");
    o->label_margin = v;
  } else if (name == "label_k") {
    if (v < 1 || v > 64) return InvalidArgument("label_k must be in [1, 64]");
    o->label_k = static_cast<int>(v);
  } else if (name == "dims") {
    if (v < 4 || v > 256) return InvalidArgument("dims must be in [4, 256]");
    o->projection_dims = static_cast<int>(v);
  } else if (name == "label_rounds") {
    if (v < 1 || v > 10) return InvalidArgument("label_rounds must be in [1, 10]");
    o->label_rounds = static_cast<int>(v);
  } else if (name == "label_views") {
    if (v < 1 || v > 2) return InvalidArgument("label_views must be 1 or 2");
    o->label_views = static_cast<int>(v);
  } else if (name == "label_campaign_rounds") {
    if (v < 0 || v > 10 || v != std::floor(v))
      return InvalidArgument("label_campaign_rounds must be a whole number in [0, 10]");
    o->label_campaign_rounds = static_cast<int>(v);
  } else if (name == "label_pair_rate") {
    if (v <= 0 || v > 1) return InvalidArgument("label_pair_rate is a share of a class in (0, 1]");
    o->label_pair_rate = v;
  } else if (name == "label_trigger_share") {
    if (v > 1) return InvalidArgument("label_trigger_share is a share of a label's records in [0, 1]");
    o->label_trigger_share = v;
  } else if (name == "label_llr") {
    o->label_min_llr = v;
  } else if (name == "label_similar_llr") {
    o->label_similar_llr = v;
  } else if (name == "pca") {
    o->projection = v > 0 ? ProjectionKind::kPca : ProjectionKind::kRandom;
  } else if (name == "exact") {
    // Exact duplicates have no threshold; accepted so a spec's 0 round-trips.
  } else {
    return InvalidArgument("unknown threshold '" + name +
                           "' (known: schema, near, outliers, label, label_k, label_rounds, label_views, label_llr, "
                           "label_similar_llr, label_campaign_rounds, label_pair_rate, label_trigger_share, dims, pca)");
  }
  return OkStatus();
}

namespace {
std::string Setting(const char* name, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%s=%.6g", name, v);
  return buf;
}
}  // namespace

std::vector<FilterReport> ResolvedFilters(const ScanOptions& o) {
  const bool on[] = {o.schema, o.exact, o.near, o.outliers, o.label};
  const double th[] = {o.SchemaTolerance(), 0, o.NearMaxRms(), o.OutlierZ(), o.LabelMargin()};
  // Recorded so that a scan made with, say, the backdoor view or the flip-campaign search
  // turned off cannot pass for one made with the defaults a job spec implies.
  const std::string view = Setting("dims", o.projection_dims) + " " +
                           Setting("pca", o.projection == ProjectionKind::kPca ? 1 : 0);
  const std::string label = view + " " + Setting("label_k", o.label_k) + " " + Setting("label_rounds", o.label_rounds) +
                            " " + Setting("label_views", o.label_views) + " " + Setting("label_llr", o.label_min_llr) +
                            " " + Setting("label_similar_llr", o.label_similar_llr) + " " +
                            Setting("label_campaign_rounds", o.label_campaign_rounds) + " " +
                            Setting("label_pair_rate", o.label_pair_rate) + " " +
                            Setting("label_trigger_share", o.label_trigger_share);
  const std::string settings[] = {"", "", "", view, label};
  std::vector<FilterReport> out;
  for (int i = 0; i < 5; ++i)
    out.push_back(FilterReport{kFilterNames[i], on[i], th[i], kFilterVersions[i], settings[i]});
  return out;
}

namespace {
// The label vote, in the shared projection and (label_views 2) again in a view with
// trigger-like feature values neutralised, for the rows that view changes. Without the
// second view, records stamped with a common trigger find each other as neighbours and
// vouch for each other's (poisoned) label. In that view a row carrying at least
// kTriggerFeatures values that no class ever takes must also have its label held by at
// least half of its k neighbours: several out-of-range values plus a label its look-alikes
// do not share is the signature of a backdoor, whatever the trigger looks like. Either
// rule's accusation stands only where the trigger is shared (SharedTriggers: at least
// kTriggerFeatures of the row's out-of-range features, every one if it has fewer, out of
// range in label_trigger_share of its label's records, all accused too): clean records
// wider or brighter than any class is (shirts, mostly) have their values each in its
// own place, and were most of what clean Fashion-MNIST lost before (docs/BENCHMARKS.md).
constexpr int kTriggerFeatures = 8;
constexpr int kResearchFeatures = 4;  // fewer neutralised values barely move a row: not re-searched
constexpr double kNeutralCut = 8.0;  // robust sd from every class's median

// The neutralised view's accusations, by both rules, that point at a shared trigger.
// `flagged`: rows an earlier rule flagged, which the signature rule leaves alone.
std::vector<Flag> BackdoorFlags(const RecordTable& t, const std::vector<int64_t>& rows, const Projection& proj,
                                const ScanOptions& o, const KnnParams& kp, const LabelParams& lp, int threads,
                                const std::vector<uint8_t>& flagged, std::vector<float>* thresholds, KnnCells* cells,
                                int64_t* re_searched, int64_t* spared) {
  const double floor = 0.1 * std::max(t.value_max - t.value_min, 1e-6);
  std::vector<int32_t> moved, changed;
  std::vector<std::vector<int32_t>> moved_features, features;  // out-of-range features of each
  Projection neutral = NeutralizeExtremes(t, rows, proj, ComputeClassFeatureStats(t, rows, floor, threads), kNeutralCut,
                                          threads, &moved, &moved_features);
  for (size_t i = 0; i < moved.size(); ++i) {
    if (moved_features[i].size() < kResearchFeatures) continue;
    changed.push_back(moved[i]);
    features.push_back(std::move(moved_features[i]));
  }
  *re_searched = static_cast<int64_t>(changed.size());
  std::vector<Flag> out;
  if (changed.empty()) return out;
  Neighbours nb2 = FindNeighbours(neutral, kp, o.seed, threads, &changed, cells);
  // Accusations by the two rules of this view, each with its label and out-of-range
  // features (moved out of `features`: a row is accused at most once).
  std::vector<Flag> accused;
  std::vector<int32_t> labels;
  std::vector<std::vector<int32_t>> accused_features;
  std::vector<uint8_t> voted(changed.size(), 0);
  auto accuse = [&](size_t c, Flag f) {
    voted[c] = 1;
    labels.push_back(t.labels[f.row]);
    accused_features.push_back(std::move(features[c]));
    accused.push_back(std::move(f));
  };
  std::vector<int32_t> at(t.size(), -1);  // table row -> index in changed
  for (size_t c = 0; c < changed.size(); ++c) at[rows[changed[c]]] = static_cast<int32_t>(c);
  // The first view's class thresholds: in this one only the moved rows have neighbours.
  // No similar-class guard: a trigger relabels look-alikes too (pullover -> T-shirt).
  for (Flag& f : ConfidentLabelFilter(t, rows, nb2, lp, threads, thresholds)) {
    f.reason += " with trigger-like feature values neutralised";
    accuse(at[f.row], std::move(f));
  }
  for (size_t c = 0; c < changed.size(); ++c) {
    const int64_t row = rows[changed[c]];
    if (voted[c] || flagged[row]) continue;
    const int count = static_cast<int>(features[c].size());
    if (count < kTriggerFeatures) continue;
    int same = 0, found = 0;
    for (int r = 0; r < std::min(o.label_k, nb2.k); ++r) {
      int32_t j = nb2.of(changed[c])[r];
      if (j < 0) continue;
      ++found;
      same += t.labels[rows[j]] == t.labels[row];
    }
    if (found == 0 || 2 * same >= found) continue;
    char buf[200];
    std::snprintf(buf, sizeof(buf),
                  "%d feature values outside every class's range (trigger-like) and only %d of %d nearest "
                  "neighbours share label %d once they are neutralised",
                  count, same, found, t.labels[row]);
    accuse(c, Flag{row, 1.0 - static_cast<double>(same) / found, buf});
  }
  // Only accusations that point at a shared trigger stand (SharedTriggers).
  std::vector<int64_t> label_counts(std::max(t.num_classes, 0), 0);
  for (int64_t r : rows)
    if (t.labels[r] >= 0 && t.labels[r] < t.num_classes) ++label_counts[t.labels[r]];
  const std::vector<uint8_t> keep =
      SharedTriggers(labels, accused_features, label_counts, t.dim(), o.label_trigger_share, kTriggerFeatures);
  for (size_t i = 0; i < accused.size(); ++i) {
    if (keep[i]) out.push_back(std::move(accused[i]));
    else ++*spared;
  }
  return out;
}

std::vector<Flag> LabelFlags(const RecordTable& t, const std::vector<int64_t>& rows, const Projection& proj,
                             const ScanOptions& o, int threads, TableScan* out,
                             const std::function<void(const std::string&)>& note) {
  // Twice the vote's k, so a vote can skip suspects and still count k.
  KnnParams kp;
  kp.k = 2 * o.label_k;
  Stopwatch kw;
  KnnCells cells;
  Neighbours nb = FindNeighbours(proj, kp, o.seed, threads, nullptr, &cells);
  out->knn_seconds += kw.Seconds();
  note(std::to_string(kp.k) + " nearest neighbours of " + std::to_string(rows.size()) + " rows in " +
       std::to_string(kw.Seconds()) + " s");
  LabelParams lp;
  lp.k = o.label_k;
  lp.margin = o.LabelMargin();
  lp.rounds = o.label_rounds;
  lp.min_llr = o.label_min_llr;
  lp.similar_llr = o.label_similar_llr;
  std::vector<float> thresholds;
  std::vector<Flag> flags = ConfidentLabelFilter(t, rows, nb, lp, threads, &thresholds, &proj);
  // The rules below add only rows no earlier rule flagged; flags leave in row order.
  std::vector<uint8_t> have(t.size(), 0);
  for (const Flag& f : flags) have[f.row] = 1;
  auto add = [&](Flag f) {
    if (have[f.row]) return false;
    have[f.row] = 1;
    flags.push_back(std::move(f));
    return true;
  };
  auto by_row = [&] {
    std::sort(flags.begin(), flags.end(), [](const Flag& a, const Flag& b) { return a.row < b.row; });
    return std::move(flags);
  };
  if (o.label_campaign_rounds > 0) {
    Stopwatch cw;
    FlipCampaignParams cp;
    cp.rounds = o.label_campaign_rounds;
    cp.margin = lp.margin;
    cp.pair_rate = o.label_pair_rate;
    FlipCampaignReport report;
    int64_t added = 0;
    for (Flag& f : FlipCampaignFilter(t, rows, proj, cp, o.seed, threads, &report)) added += add(std::move(f));
    std::string pairs;
    for (const auto& p : report.pairs) {
      char buf[64];
      std::snprintf(buf, sizeof(buf), " %d->%d (%.1f%%)", p.likely, p.label, 100 * p.share);
      pairs += buf;
    }
    note("label-flip campaigns:" + (pairs.empty() ? std::string(" none") : pairs) + ", " + std::to_string(added) +
         " more flagged, " + std::to_string(report.rounds) + " model rounds in " + std::to_string(cw.Seconds()) + " s");
  }
  if (o.label_views < 2 || proj.basis.empty()) return by_row();
  kw.Reset();
  int64_t re_searched = 0, spared = 0;
  for (Flag& f : BackdoorFlags(t, rows, proj, o, kp, lp, threads, have, &thresholds, &cells, &re_searched, &spared))
    add(std::move(f));
  out->knn_seconds += kw.Seconds();
  note("neutralised view: " + std::to_string(re_searched) + " rows re-searched in " + std::to_string(kw.Seconds()) +
       " s, " + std::to_string(spared) + " accused rows spared (no shared trigger)");
  return by_row();
}
}  // namespace

TableScan ScanTable(const RecordTable& t, const ScanOptions& o) {
  Stopwatch total;
  const int threads = o.threads > 0 ? o.threads : DefaultThreads();
  SingleThreadedBlas blas_guard(threads > 1);
  std::mutex note_mu;  // the near-duplicate filter reports from its own thread
  auto note = [&](const std::string& s) {
    std::lock_guard<std::mutex> lock(note_mu);
    if (o.progress) o.progress(s);
  };
  TableScan out;
  std::vector<std::vector<Flag>> flags(5);
  out.filters = ResolvedFilters(o);
  auto run = [&](int i, const std::function<std::vector<Flag>()>& fn) {
    FilterReport& r = out.filters[i];
    if (!r.enabled) return;
    Stopwatch w;
    flags[i] = fn();
    r.seconds = w.Seconds();
    r.flagged = static_cast<int64_t>(flags[i].size());
    note(std::string(kFilterNames[i]) + ": " + std::to_string(r.flagged) + " flagged in " + std::to_string(r.seconds) +
         " s");
  };

  // The schema check always runs: with the filter off its rejects are not quarantined,
  // but a NaN or an out-of-range label must still never reach the statistics.
  Stopwatch w;
  std::vector<Flag> schema = SchemaFilter(t, o.SchemaTolerance(), threads);
  double schema_s = w.Seconds();
  std::vector<uint8_t> bad(t.size(), 0);
  for (const Flag& f : schema) bad[f.row] = 1;
  std::vector<int64_t> rows;
  rows.reserve(t.size());
  for (int64_t r = 0; r < t.size(); ++r)
    if (!bad[r]) rows.push_back(r);
  run(0, [&] { return schema; });
  if (o.schema) out.filters[0].seconds = schema_s;

  run(1, [&] { return ExactDuplicateFilter(t, rows, threads); });
  // The near-duplicate filter shares nothing with the projection-based ones and neither
  // keeps every core busy all the time (serial phases, uneven chunks), so with more than
  // one thread it runs beside them (OpenBLAS is single-threaded then, so concurrent sgemm
  // calls are safe). Each filter's result is deterministic: the overlap changes timings only.
  NearDuplicateParams np;
  np.max_rms = o.NearMaxRms();
  np.skip_identical = o.exact;
  auto near = [&] { run(2, [&] { return NearDuplicateFilter(t, rows, np, o.seed, threads); }); };
  std::thread near_thread;
  if (threads > 1) near_thread = std::thread(near);
  else near();
  Projection proj;
  if (o.outliers || o.label) {
    Stopwatch pw;
    proj = ProjectRows(t, rows, o.projection_dims, o.seed, o.projection, threads);
    out.project_seconds = pw.Seconds();
    note("projection to " + std::to_string(o.projection_dims) + " dims in " + std::to_string(out.project_seconds) + " s");
  }
  run(3, [&] { return OutlierFilter(t, rows, proj, o.OutlierZ()); });
  run(4, [&] { return LabelFlags(t, rows, proj, o, threads, &out, note); });
  if (near_thread.joinable()) near_thread.join();

  // Quarantine entries in record order, then filter order; admitted = flagged by none.
  std::vector<std::pair<int64_t, int>> order;
  for (int f = 0; f < 5; ++f)
    for (size_t i = 0; i < flags[f].size(); ++i) order.emplace_back(flags[f][i].row * 8 + f, static_cast<int>(i));
  std::sort(order.begin(), order.end());
  std::vector<uint8_t> held(t.size(), 0);
  for (auto [key, i] : order) {
    const int f = static_cast<int>(key % 8);
    const Flag& fl = flags[f][i];
    held[fl.row] = 1;
    out.quarantine.push_back(QuarantineEntry{t.ids[fl.row], t.shard_names[t.shard[fl.row]], t.index_in_shard[fl.row],
                                             t.labels[fl.row], kFilterNames[f], fl.reason, fl.score});
  }
  for (int64_t r = 0; r < t.size(); ++r)
    if (!held[r]) out.admitted_rows.push_back(r);
  out.seconds = total.Seconds();
  return out;
}

std::string ScanReport::ToJson() const {
  nlohmann::json fl = nlohmann::json::array();
  for (const auto& f : filters)
    fl.push_back({{"name", f.name}, {"enabled", f.enabled}, {"threshold", f.threshold}, {"version", f.version},
                  {"settings", f.settings}, {"flagged", f.flagged}, {"seconds", f.seconds}});
  nlohmann::json j = {{"dir", dir},
                      {"dataset", dataset},
                      {"manifest_sha256", manifest_sha256},
                      {"provenance", provenance},
                      {"records", records},
                      {"admitted", admitted},
                      {"quarantined", quarantined},
                      {"filters", fl},
                      {"threads", threads},
                      {"seconds", {{"verify", verify_seconds}, {"project", project_seconds}, {"knn", knn_seconds},
                                   {"filters", filter_seconds}, {"write", write_seconds}, {"total", seconds},
                                   {"cpu", cpu_seconds}}},
                      {"records_per_second", records_per_second}};
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
}

namespace {
Status WriteScanDir(const std::string& dir, const ScanReport& report, const TableScan& scan,
                    const RecordTable& t) {
  std::string final_dir = dir + "/" + kScanDir;
  std::string tmp = final_dir + ".tmp-" + std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  RETURN_IF_ERROR(MakeDirs(tmp));
  AdmittedIndex index;
  index.manifest_sha256 = report.manifest_sha256;
  index.total_records = report.records;
  index.ids.reserve(scan.admitted_rows.size());
  for (int64_t r : scan.admitted_rows) index.ids.push_back(t.ids[r]);
  std::string lines;
  for (const auto& e : scan.quarantine) lines += QuarantineJsonLine(e) + "\n";
  Status s = WriteFileAtomic(tmp + "/" + kAdmittedFile, EncodeAdmitted(index));
  // A person's decisions outlive the scan: the review overlay moves to the new one as it
  // is (still signed; the loader checks it against the new scan's manifest binding).
  if (s.ok() && fs::exists(final_dir + "/" + kReviewFile, ec)) {
    fs::copy_file(final_dir + "/" + kReviewFile, tmp + "/" + kReviewFile, ec);
    if (ec) s = Internal("cannot carry the review overlay over to the new scan of " + dir + ": " + ec.message());
  }
  if (s.ok()) s = WriteFileAtomic(tmp + "/" + kQuarantineFile, lines);
  if (s.ok()) s = WriteFileAtomic(tmp + "/" + kScanReportFile, report.ToJson() + "\n");
  if (!s.ok()) {
    fs::remove_all(tmp, ec);
    return s;
  }
  std::string old = final_dir + ".old-" + std::to_string(::getpid());
  fs::remove_all(old, ec);
  if (fs::exists(final_dir, ec)) fs::rename(final_dir, old, ec);
  if (ec) return Internal("cannot move the previous scan aside in " + dir + ": " + ec.message());
  fs::rename(tmp, final_dir, ec);
  if (ec) return Internal("cannot put the new scan in place in " + dir + ": " + ec.message());
  fs::remove_all(old, ec);
  return FsyncDir(dir);
}
}  // namespace

StatusOr<ScanReport> ScanDataset(const std::string& dir, const ScanOptions& o) {
  Stopwatch total;
  const double cpu0 = ProcessCpuSeconds();
  if (o.progress) o.progress("verifying " + dir);
  ASSIGN_OR_RETURN(VerifiedDataset ds, OpenDataset(dir, o.trust));
  ScanReport report;
  report.verify_seconds = total.Seconds();
  report.dir = dir;
  report.dataset = ds.manifest.name();
  report.manifest_sha256 = ds.manifest_sha256;
  report.provenance = ds.provenance;
  report.threads = o.threads > 0 ? o.threads : DefaultThreads();
  const FeatureSchema& schema = ds.manifest.schema();
  RecordTable table = TableFromShards(ds.shards, schema.num_classes(), schema.value_min(), schema.value_max());
  // [h, w] or [h, w, 1]: an image, which the near-duplicate filter aligns.
  if (schema.shape_size() >= 2 && (schema.shape_size() == 2 || schema.shape(2) == 1) &&
      schema.shape(0) * schema.shape(1) == table.dim())
    table.height = static_cast<int>(schema.shape(0)), table.width = static_cast<int>(schema.shape(1));
  if (o.progress)
    o.progress("scanning " + std::to_string(table.size()) + " records with " + std::to_string(report.threads) + " threads");
  TableScan scan = ScanTable(table, o);
  report.records = table.size();
  report.admitted = static_cast<int64_t>(scan.admitted_rows.size());
  report.quarantined = report.records - report.admitted;
  report.filters = scan.filters;
  report.filter_seconds = scan.seconds;
  report.project_seconds = scan.project_seconds;
  report.knn_seconds = scan.knn_seconds;
  Stopwatch w;
  // The report is written with the timings known so far, then completed for the caller.
  report.seconds = total.Seconds();
  report.records_per_second = report.seconds > 0 ? report.records / report.seconds : 0;
  RETURN_IF_ERROR(WriteScanDir(dir, report, scan, table));
  report.write_seconds = w.Seconds();
  report.seconds = total.Seconds();
  report.cpu_seconds = ProcessCpuSeconds() - cpu0;
  report.records_per_second = report.seconds > 0 ? report.records / report.seconds : 0;
  return report;
}

}  // namespace shoal
