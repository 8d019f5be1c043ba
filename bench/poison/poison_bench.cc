// poison_bench: plants poison into Fashion-MNIST with a fixed seed, ingests it as a
// signed dataset, scans it, scores every filter against the planted truth, and trains
// the MLP with and without the filters (clean accuracy, each backdoor's attack success
// rate).
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

#include "bench/poison/metrics.h"
#include "bench/poison/plant.h"
#include "bench/poison/train.h"
#include "common/file_util.h"
#include "common/signing.h"
#include "datapipe/idx.h"
#include "datapipe/ingest.h"
#include "datapipe/loader.h"
#include "datapipe/scan.h"

namespace shoal::poison {
namespace {

struct Args {
  std::string data = "/usr/share/datasets/fashion-mnist", work, filters = "all";
  std::vector<std::string> thresholds;
  std::vector<int> flip_pair = {5, 7};
  PlantConfig plant;
  TrainConfig train;
  int train_seeds = 1;
  bool no_train = false, json = false, keep = false, no_clean_scan = false, compare_in_memory = false;
};

struct Run {
  std::string name;
  TrainResult result;
};

// The test images an attack is measured on: every image whose true class is not the
// attack's target, stamped with its trigger and labelled with the target, so the share
// "correctly" classified is the attack success rate.
struct TriggeredTestSet {
  std::vector<float> x;
  std::vector<int32_t> y;
  EvalSet view() const { return EvalSet{x.data(), y.data(), static_cast<int64_t>(y.size())}; }
};
TriggeredTestSet MakeTriggeredTestSet(const InMemoryDataset& test, int side, const BackdoorAttack& attack,
                                      const PlantConfig& pc) {
  TriggeredTestSet out;
  for (int64_t i = 0; i < test.n; ++i) {
    if (test.y[i] == attack.target) continue;
    out.x.insert(out.x.end(), test.x.begin() + i * test.dim, test.x.begin() + (i + 1) * test.dim);
    StampTrigger(out.x.data() + out.x.size() - test.dim, side, attack.trigger, pc);
    out.y.push_back(attack.target);
  }
  return out;
}

const TrainResult* FindRun(const std::vector<Run>& runs, const std::string& name) {
  for (const Run& r : runs)
    if (r.name == name) return &r.result;
  return nullptr;
}

// Each attack's success without filters (the poisoned run that drops only what cannot be
// trained on) and with every filter (the Loader run), and what the filters cost in clean
// accuracy; the issue asks for ASR with filters at most 1/5 of without, at most 1 point.
struct AttackOutcome {
  double asr_reference = 0, asr_without = 0, asr_with = 0, ratio = 0;
  double accuracy_cost_points = 0;  // unfiltered poisoned run minus filtered run
  bool met() const { return ratio <= 0.2 && accuracy_cost_points <= 1.0; }
};
constexpr char kReferenceRun[] = "clean reference (unpoisoned)";
constexpr char kWithoutRun[] = "poisoned, only untrainable dropped";
constexpr char kWithRun[] = "poisoned, all filters (Loader)";
constexpr char kCleanFilteredRun[] = "unpoisoned, all filters";
std::vector<AttackOutcome> AttackOutcomes(const std::vector<Run>& runs, size_t attacks) {
  const TrainResult *ref = FindRun(runs, kReferenceRun), *without = FindRun(runs, kWithoutRun),
                    *with = FindRun(runs, kWithRun);
  if (!ref || !without || !with) return {};
  std::vector<AttackOutcome> out(attacks);
  for (size_t a = 0; a < attacks; ++a) {
    AttackOutcome& o = out[a];
    o.asr_reference = ref->attack_success.at(a);
    o.asr_without = without->attack_success.at(a);
    o.asr_with = with->attack_success.at(a);
    o.ratio = o.asr_without > 0 ? o.asr_with / o.asr_without : 0.0;
    o.accuracy_cost_points = 100.0 * (without->test_accuracy - with->test_accuracy);
  }
  return out;
}

void PrintAttackDetection(const std::vector<AttackScore>& scores) {
  std::printf("\nper attack and filter (precision for one attack: caught / (caught + clean records flagged))\n");
  std::printf("%-34s %7s  %-8s %6s %7s %9s\n", "attack", "planted", "filter", "caught", "recall", "precision");
  for (const AttackScore& s : scores) {
    bool first = true;
    for (const FilterOnAttack& f : s.filters) {
      if (f.caught == 0 && f.filter != "any") continue;  // filters that catch none of it
      std::printf("%-34s %7s  %-8s %6lld %7.3f %9.3f\n", first ? s.attack.name.c_str() : "",
                  first ? std::to_string(s.planted).c_str() : "", f.filter.c_str(), static_cast<long long>(f.caught),
                  f.recall, f.precision);
      first = false;
    }
  }
}

// What the filters cost on clean data, seed by seed: the same seeds train the reference
// and the filtered unpoisoned set, so their differences say more than the two means.
void PrintCleanCost(const std::vector<Run>& runs) {
  const TrainResult *ref = FindRun(runs, kReferenceRun), *filtered = FindRun(runs, kCleanFilteredRun);
  if (!ref || !filtered || ref->seed_accuracy.size() != filtered->seed_accuracy.size()) return;
  const size_t k = ref->seed_accuracy.size();
  std::vector<double> diff(k);
  double mean = 0;
  for (size_t i = 0; i < k; ++i) mean += (diff[i] = 100 * (filtered->seed_accuracy[i] - ref->seed_accuracy[i])) / k;
  double var = 0;
  for (double d : diff) var += (d - mean) * (d - mean);
  const double se = k > 1 ? std::sqrt(var / (k - 1) / k) : 0;
  std::printf("\nfilters on the unpoisoned set, paired by seed (points of test accuracy):");
  for (double d : diff) std::printf(" %+.2f", d);
  std::printf("; mean %+.2f, standard error %.2f (target >= -0.10)\n", mean, se);
}

void PrintAttackOutcomes(const std::vector<AttackScore>& scores, const std::vector<AttackOutcome>& outcomes) {
  if (outcomes.empty()) return;
  std::printf("\n%-34s %8s %8s %8s %7s %10s  %s\n", "attack", "ASR ref", "without", "with", "ratio", "acc cost",
              "target (ratio <= 0.2, cost <= 1 point)");
  for (size_t a = 0; a < outcomes.size(); ++a) {
    const AttackOutcome& o = outcomes[a];
    // An attack not planted (fraction 0) has only its trigger's natural success rate.
    const char* verdict = scores[a].planted == 0 ? "not planted" : o.met() ? "met" : "MISSED";
    std::printf("%-34s %8.4f %8.4f %8.4f %7.4f %+9.2fpt  %s\n", scores[a].attack.name.c_str(), o.asr_reference,
                o.asr_without, o.asr_with, o.ratio, o.accuracy_cost_points, verdict);
  }
}

nlohmann::json AttacksJson(const std::vector<AttackScore>& scores, const std::vector<AttackOutcome>& outcomes) {
  nlohmann::json out = nlohmann::json::array();
  for (size_t a = 0; a < scores.size(); ++a) {
    const AttackScore& s = scores[a];
    nlohmann::json j = {{"attack", s.attack.name}, {"trigger", VariantName(kBackdoor, s.attack.trigger)},
                        {"target", s.attack.target}, {"fraction", s.attack.fraction}, {"planted", s.planted}};
    for (const FilterOnAttack& f : s.filters)
      j["filters"][f.filter] = {{"caught", f.caught}, {"recall", f.recall}, {"precision", f.precision}};
    if (a < outcomes.size()) {
      const AttackOutcome& o = outcomes[a];
      j["asr_reference"] = o.asr_reference;
      j["asr_without_filters"] = o.asr_without;
      j["asr_with_filters"] = o.asr_with;
      j["asr_ratio"] = o.ratio;
      j["accuracy_cost_points"] = o.accuracy_cost_points;
      j["met"] = s.planted > 0 ? nlohmann::json(o.met()) : nlohmann::json(nullptr);
    }
    out.push_back(j);
  }
  return out;
}

int Fail(const Status& s) {
  std::fprintf(stderr, "poison_bench: %s\n", s.ToString().c_str());
  return 1;
}

std::map<std::string, std::set<int64_t>> FlagsByFilter(const std::vector<QuarantineEntry>& entries) {
  std::map<std::string, std::set<int64_t>> out;
  for (const auto& e : entries) out[e.filter].insert(e.record_id);
  return out;
}

int Main(const Args& a) {
  auto train = LoadFashionMnist(a.data, "train");
  if (!train.ok()) return Fail(train.status());
  auto test = LoadFashionMnist(a.data, "t10k");
  if (!test.ok()) return Fail(test.status());
  PlantConfig pc = a.plant;
  pc.flip_a = a.flip_pair.at(0);
  pc.flip_b = a.flip_pair.at(1);
  PlantedSet set = Plant(*train, pc);
  std::fprintf(stderr, "planted %lld records (from %lld clean)\n", static_cast<long long>(set.n()),
               static_cast<long long>(train->n));

  // Ingest exactly as a data owner would: raw records, signed by the owner's key.
  std::string work = a.work.empty() ? "/tmp/poison-bench-" + std::to_string(::getpid()) : a.work;
  std::error_code ec;
  std::filesystem::create_directories(work, ec);
  std::string raw = work + "/planted.raw", dir = work + "/dataset";
  Status s = WriteRawRecords(raw, set.x.data(), set.y.data(), set.n(), set.dim);
  if (!s.ok()) return Fail(s);
  KeyPair key = GenerateKeyPair();
  IngestOptions io;
  io.sign_key = &key;
  io.shape = {set.side, set.side};
  io.num_classes = train->num_classes;
  io.name = "fashion-mnist-poisoned";
  io.licence = "MIT (Fashion-MNIST, Zalando Research)";
  io.source_uris = {a.data + "/train-images-idx3-ubyte.gz", a.data + "/train-labels-idx1-ubyte.gz"};
  io.force = true;
  auto ingest = IngestRaw(raw, set.dim, dir, io);
  if (!ingest.ok()) return Fail(ingest.status());
  std::filesystem::remove(raw, ec);

  ScanOptions so;
  s = SetFilterList(a.filters, &so);
  for (const auto& t : a.thresholds)
    if (s.ok()) s = SetThreshold(t, &so);
  if (!s.ok()) return Fail(s);
  so.trust.trust.Add(key.public_key);
  so.trust.allow_unsigned = false;
  so.progress = [](const std::string& l) { std::fprintf(stderr, "scan: %s\n", l.c_str()); };
  auto report = ScanDataset(dir, so);
  if (!report.ok()) return Fail(report.status());
  auto entries = ReadQuarantine(dir);
  if (!entries.ok()) return Fail(entries.status());
  auto flags = FlagsByFilter(*entries);

  // The same filters over the unpoisoned set: which flags are the data's own issues.
  std::map<std::string, std::set<int64_t>> clean_flags;
  std::set<int64_t> clean_held;  // unpoisoned records some filter holds back
  if (!a.no_clean_scan) {
    ScanOptions co = so;
    co.progress = nullptr;
    RecordTable ct = TableFromArrays(train->x.data(), train->y.data(), train->n, train->dim, train->num_classes);
    ct.height = ct.width = set.side;
    clean_flags = FlagsByFilter(ScanTable(ct, co).quarantine);
    for (const auto& [f, ids] : clean_flags) clean_held.insert(ids.begin(), ids.end());
  }
  auto filter_scores = ScoreFilters(set, flags, clean_flags);
  // (c) by how the copy was made: copies and sources caught by exact or near.
  std::map<std::string, std::pair<int64_t, int64_t>> dup_by_variant;  // name -> (caught, truth)
  for (int64_t i = 0; i < set.n(); ++i) {
    if (set.kind[i] != kDupCopy && set.kind[i] != kDupSource) continue;
    auto& v = dup_by_variant[VariantName(static_cast<Kind>(set.kind[i]), set.variant[i])];
    ++v.second;
    v.first += flags["exact"].count(i) || flags["near"].count(i);
  }
  int64_t clean_near = clean_flags.count("near") ? static_cast<int64_t>(clean_flags["near"].size()) : 0;
  auto categories = ScoreCategories(set, flags);
  const std::vector<BackdoorAttack> attacks = BackdoorAttacks(pc);
  auto attack_scores = ScoreAttacks(set, flags, attacks);

  std::vector<Run> runs;
  if (!a.no_train) {
    std::vector<TriggeredTestSet> triggered;
    std::vector<EvalSet> pe;
    for (const BackdoorAttack& at : attacks) triggered.push_back(MakeTriggeredTestSet(*test, set.side, at, pc));
    for (const TriggeredTestSet& t : triggered) pe.push_back(t.view());
    EvalSet te{test->x.data(), test->y.data(), test->n};
    auto all_rows = [](int64_t n) {
      std::vector<int64_t> r(n);
      for (int64_t i = 0; i < n; ++i) r[i] = i;
      return r;
    };
    // What a loader without filters must still drop, or training cannot run at all.
    std::vector<int64_t> trainable;
    for (int64_t i = 0; i < set.n(); ++i) {
      bool ok = set.y[i] >= 0 && set.y[i] < train->num_classes;
      for (int j = 0; ok && j < set.dim; ++j) ok = std::isfinite(set.x[i * set.dim + j]);
      if (ok) trainable.push_back(i);
    }
    struct Job {
      std::string name;
      const float* x;
      const int32_t* y;
      std::vector<int64_t> rows;
    };
    std::vector<int64_t> clean_admitted;
    for (int64_t i = 0; i < train->n; ++i)
      if (!clean_held.count(i)) clean_admitted.push_back(i);
    std::vector<Job> jobs = {
        {kReferenceRun, train->x.data(), train->y.data(), all_rows(train->n)},
        {"poisoned, no filters at all", set.x.data(), set.y.data(), all_rows(set.n())},
        {kWithoutRun, set.x.data(), set.y.data(), trainable},
    };
    // What the filters cost on data with nothing planted: the unpoisoned set minus what
    // they hold back there.
    if (!a.no_clean_scan)
      jobs.insert(jobs.begin() + 1, Job{kCleanFilteredRun, train->x.data(), train->y.data(), clean_admitted});
    // Every run is repeated with train_seeds seeds (initialisation and order) and averaged.
    auto averaged = [&](const std::function<StatusOr<TrainResult>(const TrainConfig&)>& once) -> StatusOr<TrainResult> {
      TrainResult sum;
      sum.attack_success.assign(pe.size(), 0.0);
      for (int k = 0; k < a.train_seeds; ++k) {
        TrainConfig cfg = a.train;
        cfg.seed = a.train.seed + static_cast<uint64_t>(k);
        ASSIGN_OR_RETURN(TrainResult r, once(cfg));
        sum.train_records = r.train_records;
        sum.steps = r.steps;
        if (r.diverged && !sum.diverged) sum.diverged = true, sum.diverged_at_step = r.diverged_at_step;
        sum.test_accuracy += r.test_accuracy / a.train_seeds;
        sum.seed_accuracy.push_back(r.test_accuracy);
        for (size_t t = 0; t < pe.size(); ++t) sum.attack_success[t] += r.attack_success.at(t) / a.train_seeds;
        sum.step_seconds += r.step_seconds;
        sum.loader_wait_seconds += r.loader_wait_seconds;
        sum.seconds += r.seconds;
      }
      return sum;
    };
    for (const auto& j : jobs) {
      std::fprintf(stderr, "training: %s (%zu records)\n", j.name.c_str(), j.rows.size());
      auto r = averaged([&](const TrainConfig& c) { return TrainAndEvaluate(j.x, j.y, set.dim, j.rows, te, pe, c); });
      if (!r.ok()) return Fail(r.status());
      runs.push_back({j.name, *r});
    }
    if (a.compare_in_memory) {
      auto adm = LoadAdmittedInMemory(dir, so.trust.trust, false);
      if (!adm.ok()) return Fail(adm.status());
      auto r0 = averaged([&](const TrainConfig& c) {
        return TrainAndEvaluate(adm->x.data(), adm->y.data(), set.dim, all_rows(adm->n), te, pe, c);
      });
      if (!r0.ok()) return Fail(r0.status());
      runs.push_back({"poisoned, all filters (in memory)", *r0});
    }
    // With filters: trained through the Loader, as a worker would (signature and shard
    // digests verified, admitted records only, prefetching).
    std::fprintf(stderr, "training: poisoned, all filters (through the Loader)\n");
    auto r = averaged([&](const TrainConfig& c) { return TrainFromDataset(dir, so.trust.trust, te, pe, c); });
    if (!r.ok()) return Fail(r.status());
    runs.push_back({kWithRun, *r});
  }
  if (a.keep) {
    // The truth beside the dataset, for looking at what a filter caught or missed.
    std::string csv = "record_id,kind,label,origin,variant\n";
    for (int64_t i = 0; i < set.n(); ++i) {
      const Kind k = static_cast<Kind>(set.kind[i]);
      csv += std::to_string(i) + "," + KindName(k) + "," + std::to_string(set.y[i]) + "," +
             std::to_string(set.origin[i]) + "," + VariantName(k, set.variant[i]) + "\n";
    }
    s = WriteFileAtomic(work + "/truth.csv", csv);
    if (!s.ok()) return Fail(s);
  } else {
    std::filesystem::remove_all(work, ec);
  }

  nlohmann::json j;
  j["seed"] = pc.seed;
  j["planted"] = {{"records", set.n()}, {"flip_pair", a.flip_pair}, {"flip_fraction", pc.flip_fraction},
                  {"backdoor_target", pc.target}, {"backdoor_fraction", pc.backdoor_fraction},
                  {"cross_target", pc.cross_target}, {"cross_fraction", pc.cross_fraction},
                  {"dup_fraction", pc.dup_fraction}, {"corrupt_fraction", pc.corrupt_fraction}};
  j["scan"] = nlohmann::json::parse(report->ToJson(), nullptr, false);
  for (const auto& f : filter_scores)
    j["filters"].push_back({{"filter", f.filter}, {"flagged", f.flagged}, {"planted", f.planted},
                            {"precision", f.precision}, {"preexisting", f.preexisting}, {"recall", f.recall}});
  for (const auto& c : categories)
    j["categories"].push_back({{"name", c.name}, {"filters", c.filters}, {"truth", c.truth}, {"caught", c.caught},
                               {"flagged", c.flagged}, {"recall", c.recall}, {"precision", c.precision},
                               {"recall_target", c.recall_target}, {"precision_target", c.precision_target},
                               {"met", c.recall_target > 0 ? nlohmann::json(c.met()) : nlohmann::json(nullptr)}});
  for (const auto& [name, v] : dup_by_variant)
    j["dups_by_variant"][name] = {{"caught", v.first}, {"truth", v.second}};
  j["clean_near_flagged"] = clean_near;
  const std::vector<AttackOutcome> outcomes = AttackOutcomes(runs, attacks.size());
  j["attacks"] = AttacksJson(attack_scores, outcomes);
  for (const auto& r : runs) {
    // "attack_success" stays the first (patch) attack's, as before the second trigger.
    nlohmann::json by_attack;
    for (size_t t = 0; t < attacks.size(); ++t)
      by_attack[VariantName(kBackdoor, attacks[t].trigger)] = r.result.attack_success.at(t);
    j["training"].push_back({{"run", r.name}, {"records", r.result.train_records}, {"steps", r.result.steps},
                             {"diverged", r.result.diverged}, {"diverged_at_step", r.result.diverged_at_step},
                             {"test_accuracy", r.result.test_accuracy},
                             {"seed_accuracies", r.result.seed_accuracy},
                             {"attack_success", r.result.attack_success.at(0)},
                             {"attack_success_by_trigger", by_attack},
                             {"step_seconds", r.result.step_seconds},
                             {"loader_wait_seconds", r.result.loader_wait_seconds}, {"seconds", r.result.seconds}});
  }
  if (a.json) {
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("planted: %lld records; flips %s<->%s %.1f%%, backdoors: patch -> %d %.1f%%, cross -> %d %.1f%%; "
              "conflicting dups %.1f%%, corrupt %.1f%% (seed %llu)\n",
              static_cast<long long>(set.n()), std::to_string(pc.flip_a).c_str(), std::to_string(pc.flip_b).c_str(),
              100 * pc.flip_fraction, pc.target, 100 * pc.backdoor_fraction, pc.cross_target, 100 * pc.cross_fraction,
              100 * pc.dup_fraction, 100 * pc.corrupt_fraction, static_cast<unsigned long long>(pc.seed));
  std::printf("scan: %lld records in %.3f s (%.0f records/s), %lld admitted, %lld quarantined; %s\n\n",
              static_cast<long long>(report->records), report->seconds, report->records_per_second,
              static_cast<long long>(report->admitted), static_cast<long long>(report->quarantined),
              report->provenance.c_str());
  std::printf("%-9s %8s %8s %9s %9s | recall: %6s %9s %9s %10s %8s\n", "filter", "flagged", "planted", "precision",
              "pre-exist", "flip", "backdoor", "dup-copy", "dup-source", "corrupt");
  for (const auto& f : filter_scores)
    std::printf("%-9s %8lld %8lld %9.3f %9lld |         %6.3f %9.3f %9.3f %10.3f %8.3f\n", f.filter.c_str(),
                static_cast<long long>(f.flagged), static_cast<long long>(f.planted), f.precision,
                static_cast<long long>(f.preexisting), f.recall.at("flip"), f.recall.at("backdoor"),
                f.recall.at("dup-copy"), f.recall.at("dup-source"), f.recall.at("corrupt"));
  std::printf("\n%-22s %-30s %6s %6s %7s %9s  %s\n", "category", "filters", "truth", "caught", "recall", "precision",
              "target (recall/precision)");
  for (const auto& c : categories) {
    char target[64] = "-";
    if (c.recall_target > 0)
      std::snprintf(target, sizeof(target), "%s %.2f/%.2f", c.met() ? "met" : "MISSED", c.recall_target,
                    c.precision_target);
    std::printf("%-22s %-30s %6lld %6lld %7.3f %9.3f  %s\n", c.name.c_str(), c.filters.c_str(),
                static_cast<long long>(c.truth), static_cast<long long>(c.caught), c.recall, c.precision, target);
  }
  std::printf("\n(c) by variant, copies and sources caught by exact+near:");
  for (const auto& [name, v] : dup_by_variant)
    std::printf(" %s %lld/%lld", name.c_str(), static_cast<long long>(v.first), static_cast<long long>(v.second));
  std::printf("; near flags on the unpoisoned set: %lld\n", static_cast<long long>(clean_near));
  PrintAttackDetection(attack_scores);
  if (!runs.empty()) {
    std::printf("\ntraining: MLP");
    for (int w : a.train.layers) std::printf(" %d", w);
    std::printf(", %d epochs, batch %d, SGD lr %.3g (cosine) momentum %.2g, mean of %d seed(s)\n", a.train.epochs,
                a.train.batch, a.train.lr, a.train.momentum, a.train_seeds);
    std::printf("%-36s %8s %9s", "run", "records", "test acc");
    for (const BackdoorAttack& at : attacks)
      std::printf(" %8s", ("ASR " + std::string(VariantName(kBackdoor, at.trigger))).c_str());
    std::printf("  %s\n", "note");
    for (const auto& r : runs) {
      std::string note;
      if (r.result.diverged) note = "diverged (non-finite loss) at step " + std::to_string(r.result.diverged_at_step);
      if (r.result.loader_wait_seconds > 0 || r.name.find("Loader") != std::string::npos) {
        char buf[96];
        std::snprintf(buf, sizeof(buf), "loader wait %.3f s = %.2f%% of step time", r.result.loader_wait_seconds,
                      100.0 * r.result.loader_wait_seconds / std::max(r.result.step_seconds, 1e-9));
        note = buf;
      }
      std::printf("%-36s %8lld %9.4f", r.name.c_str(), static_cast<long long>(r.result.train_records),
                  r.result.test_accuracy);
      // A diverged model's predictions say nothing about an attack.
      for (double asr : r.result.attack_success) {
        if (r.result.diverged)
          std::printf(" %8s", "-");
        else
          std::printf(" %8.4f", asr);
      }
      std::printf("  %s\n", note.c_str());
    }
    PrintCleanCost(runs);
    PrintAttackOutcomes(attack_scores, outcomes);
  }
  return 0;
}

}  // namespace
}  // namespace shoal::poison

int main(int argc, char** argv) {
  shoal::poison::Args a;
  CLI::App app{"Plant poison into Fashion-MNIST, scan it, score the filters, train with and without them"};
  app.add_option("--data", a.data, "folder with the Fashion-MNIST IDX files");
  app.add_option("--work", a.work, "working folder (default /tmp/poison-bench-PID, removed afterwards)");
  app.add_option("--seed", a.plant.seed, "planting seed");
  app.add_option("--flip-pair", a.flip_pair, "the two classes whose labels are swapped")->expected(2);
  app.add_option("--flip-fraction", a.plant.flip_fraction,
                 "share of the training set flipped, half from each class of the pair (default 0.05)")
      ->check(CLI::Range(0.0, 0.2));
  app.add_option("--target", a.plant.target, "the patch backdoor's target class");
  app.add_option("--patch-fraction", a.plant.backdoor_fraction,
                 "share of the training set stamped with the patch (default 0.01)")
      ->check(CLI::Range(0.0, 0.05));
  app.add_option("--cross-target", a.plant.cross_target, "the cross backdoor's target class");
  app.add_option("--cross-size", a.plant.cross_size, "the cross's box side in pixels")->check(CLI::Range(2, 28));
  app.add_option("--cross-inset", a.plant.cross_inset, "pixels between the top-left corner and the cross's box")
      ->check(CLI::Range(0, 26));
  app.add_option("--cross-fraction", a.plant.cross_fraction,
                 "share of the training set stamped with the cross (0: only the patch backdoor, as before)")
      ->check(CLI::Range(0.0, 0.05));
  app.add_option("--filters", a.filters, "filters to run (default all)");
  app.add_option("--threshold", a.thresholds, "scan threshold name=value (repeatable)");
  app.add_option("--epochs", a.train.epochs, "training epochs per run");
  app.add_option("--train-seeds", a.train_seeds, "train every run with this many seeds and average")
      ->check(CLI::Range(1, 10));
  app.add_flag("--no-train", a.no_train, "score the filters only");
  app.add_flag("--no-clean-scan", a.no_clean_scan, "skip scanning the unpoisoned set (pre-existing column)");
  app.add_flag("--keep", a.keep, "keep the working folder (and write truth.csv into it)");
  app.add_flag("--compare-in-memory", a.compare_in_memory,
               "also train on the admitted records loaded in memory (must match the Loader run exactly)");
  app.add_flag("--json", a.json, "print JSON");
  CLI11_PARSE(app, argc, argv);
  return shoal::poison::Main(a);
}
