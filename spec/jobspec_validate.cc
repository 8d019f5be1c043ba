// Semantic checks on a JobSpec: ranges, allowed names, cross-field rules. The first broken
// rule is reported as "field.path: rule, got value (where)" so the message alone says
// what to change and where; checks run in proto field order, so the report is stable.
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "spec/jobspec_loader.h"
#include "spec/spec_internal.h"

namespace shoal::spec_internal {
namespace {

std::string Quote(const std::string& s) { return "'" + s + "'"; }

class Checker {
 public:
  explicit Checker(const FieldOrigins* origins) : origins_(origins) {}

  // Keeps only the first failure: later rules often follow from earlier ones
  // (min > initial also breaks initial <= max), and one clear message beats a cascade.
  // `related` is the other field of a cross-field rule: when only it was written in the
  // spec (say workers.initial: 9 against the default max), its line is the one to cite.
  void Check(bool ok, const std::string& path, const std::string& rule, const std::string& got,
             const std::string& related = "") {
    if (ok || !status_.ok()) return;
    std::string msg = path + ": " + rule + ", got " + got;
    if (origins_ != nullptr) {
      std::string where = Exact(path);
      if (where.empty() && !related.empty()) where = Exact(related);
      if (where.empty()) where = FindOrigin(*origins_, path);
      if (!where.empty()) msg += " (" + where + ")";
    }
    status_ = InvalidArgument(msg);
  }

  // The message states the side that was crossed ("must be positive, got -4").
  void IntIn(const std::string& path, int64_t v, int64_t lo, int64_t hi) {
    IntAtLeast(path, v, lo);
    Check(v <= hi, path, "must be at most " + std::to_string(hi), std::to_string(v));
  }
  void IntAtLeast(const std::string& path, int64_t v, int64_t lo) {
    Check(v >= lo, path, lo == 1 ? "must be positive" : "must be >= " + std::to_string(lo),
          std::to_string(v));
  }
  // isfinite first: NaN fails every comparison and would otherwise need care in each rule.
  void Positive(const std::string& path, double v) {
    Check(std::isfinite(v) && v > 0, path, "must be a positive finite number", FormatDouble(v));
  }
  void NonNegative(const std::string& path, double v) {
    Check(std::isfinite(v) && v >= 0, path, "must be >= 0 and finite", FormatDouble(v));
  }
  void UnitInterval(const std::string& path, double v, bool include_one) {
    const bool ok = std::isfinite(v) && v >= 0 && (include_one ? v <= 1 : v < 1);
    Check(ok, path, include_one ? "must be in [0, 1]" : "must be in [0, 1)", FormatDouble(v));
  }
  void OneOf(const std::string& path, const std::string& v, std::initializer_list<const char*> allowed) {
    std::string list;
    bool ok = false;
    for (const char* a : allowed) {
      if (!list.empty()) list += '|';
      list += a;
      ok = ok || v == a;
    }
    Check(ok, path, "must be one of " + list, Quote(v));
  }

  Status status() const { return status_; }

 private:
  std::string Exact(const std::string& path) const {
    auto it = origins_->find(path);
    return it == origins_->end() ? "" : it->second;
  }

  const FieldOrigins* origins_;
  Status status_;
};

bool NameCharsOk(const std::string& s) {
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

void CheckModel(const ModelSpec& m, Checker& c) {
  c.OneOf("model.kind", m.kind(), {"mlp"});
  c.Check(m.layers_size() >= 2, "model.layers",
          "must list at least 2 widths (input first, classes last)",
          std::to_string(m.layers_size()) + (m.layers_size() == 1 ? " entry" : " entries"));
  for (int i = 0; i < m.layers_size(); ++i) {
    c.IntIn("model.layers[" + std::to_string(i) + "]", m.layers(i), 1, 65536);
  }
  c.OneOf("model.device", m.device(), {"cpu", "cuda", "auto"});
}

void CheckData(const DataSpec& d, Checker& c) {
  c.Check(!d.dataset().empty(), "data.dataset", "must name the dataset folder", "''");
  c.OneOf("data.format", d.format(), {"auto", "idx", "shards"});
  c.IntIn("data.prefetch_batches", d.prefetch_batches(), 0, 64);
  const DataFilters& f = d.filters();
  c.NonNegative("data.filters.schema.threshold", f.schema().threshold());
  c.NonNegative("data.filters.exact_duplicates.threshold", f.exact_duplicates().threshold());
  c.NonNegative("data.filters.near_duplicates.threshold", f.near_duplicates().threshold());
  // Outliers: 0 means "the filter's default", anything else is a z-score cut, so > 0.
  c.NonNegative("data.filters.outliers.threshold", f.outliers().threshold());
  // Label: the probability margin (likely class over the given label) of a label error.
  c.UnitInterval("data.filters.label_consistency.threshold", f.label_consistency().threshold(), true);
}

void CheckTraining(const TrainingSpec& t, Checker& c) {
  c.IntIn("training.epochs", t.epochs(), 1, 10000);
  c.IntIn("training.batch_per_worker", t.batch_per_worker(), 1, 1000000);
  c.OneOf("training.optimizer", t.optimizer(), {"sgd"});
  c.Positive("training.learning_rate", t.learning_rate());
  c.UnitInterval("training.momentum", t.momentum(), false);
  c.NonNegative("training.weight_decay", t.weight_decay());
  c.IntAtLeast("training.warmup_steps", t.warmup_steps(), 0);
  c.OneOf("training.schedule", t.schedule(), {"cosine", "constant"});
  c.UnitInterval("training.min_lr_ratio", t.min_lr_ratio(), true);
  c.IntAtLeast("training.max_steps", t.max_steps(), 0);
  c.OneOf("training.elastic_batch", t.elastic_batch(), {"global", "per_worker"});
  c.Check(!t.nesterov() || t.momentum() > 0, "training.nesterov", "needs training.momentum > 0", "true");
}

void CheckWorkers(const WorkersSpec& w, Checker& c) {
  c.IntAtLeast("workers.initial", w.initial(), 1);
  c.IntAtLeast("workers.min", w.min(), 1);
  c.Check(w.min() <= w.initial(), "workers.initial",
          "must be >= workers.min (" + std::to_string(w.min()) + ")", std::to_string(w.initial()),
          "workers.min");
  c.Check(w.initial() <= w.max(), "workers.max",
          "must be >= workers.initial (" + std::to_string(w.initial()) + ")", std::to_string(w.max()),
          "workers.initial");
  c.IntIn("workers.max", w.max(), 1, 4096);
  c.Positive("workers.heartbeat_interval_s", w.heartbeat_interval_s());
  // A timeout at or below the interval would declare healthy workers dead between beats.
  c.Check(std::isfinite(w.heartbeat_timeout_s()) && w.heartbeat_timeout_s() > w.heartbeat_interval_s(),
          "workers.heartbeat_timeout_s",
          "must be finite and greater than workers.heartbeat_interval_s (" +
              FormatDouble(w.heartbeat_interval_s()) + ")",
          FormatDouble(w.heartbeat_timeout_s()), "workers.heartbeat_interval_s");
  // A member that saw the failure reports at once; one that did not learns it from its
  // next heartbeat, so the window must cover an interval.
  c.Check(std::isfinite(w.regroup_window_s()) && w.regroup_window_s() > w.heartbeat_interval_s() &&
              w.regroup_window_s() <= 600,
          "workers.regroup_window_s",
          "must be greater than workers.heartbeat_interval_s (" + FormatDouble(w.heartbeat_interval_s()) +
              ") and at most 600",
          FormatDouble(w.regroup_window_s()), "workers.heartbeat_interval_s");
  c.Check(std::isfinite(w.min_grace_s()) && w.min_grace_s() >= 0 && w.min_grace_s() <= 86400, "workers.min_grace_s",
          "must be in [0, 86400]", FormatDouble(w.min_grace_s()));
  c.IntIn("workers.max_restarts", w.max_restarts(), 0, 1000000);
}

void CheckCollectives(const CollectivesSpec& k, Checker& c) {
  c.OneOf("collectives.backend", k.backend(), {"auto", "gloo", "mpi", "nccl", "shm"});
  c.OneOf("collectives.codec", k.codec(), {"none", "bf16", "fp16", "powersgd", "qblock", "topk"});
  c.Positive("collectives.bucket_mib", k.bucket_mib());
  c.Positive("collectives.timeout_s", k.timeout_s());
  c.IntIn("collectives.powersgd_rank", k.powersgd_rank(), 1, 64);
  c.IntAtLeast("collectives.powersgd_warmup_steps", k.powersgd_warmup_steps(), 0);
  c.Check(k.qblock_bits() == 4 || k.qblock_bits() == 8, "collectives.qblock_bits", "must be 4 or 8",
          std::to_string(k.qblock_bits()));
  c.Check(std::isfinite(k.topk_ratio()) && k.topk_ratio() > 0 && k.topk_ratio() <= 1, "collectives.topk_ratio",
          "must be in (0, 1]", spec_internal::FormatDouble(k.topk_ratio()));
  c.Check(k.error_feedback() || k.codec() == "none" || k.codec() == "bf16" || k.codec() == "fp16",
          "collectives.error_feedback",
          "may be false only with codec none, bf16 or fp16 (codec '" + k.codec() +
              "' drops most of each gradient without it)",
          "false", "collectives.codec");
  c.NonNegative("collectives.emulate_bandwidth_mbps", k.emulate_bandwidth_mbps());
  c.NonNegative("collectives.emulate_latency_us", k.emulate_latency_us());
  for (const auto& [path, value] : {std::pair{"collectives.emulate_bandwidth_mbps", k.emulate_bandwidth_mbps()},
                                     std::pair{"collectives.emulate_latency_us", k.emulate_latency_us()}}) {
    c.Check(k.backend() != "nccl" || value == 0, path,
            "link emulation applies to the CPU backends (gloo, mpi) only, not nccl", FormatDouble(value),
            "collectives.backend");
    // shm moves data through memory, not over a link there would be anything to emulate.
    c.Check(k.backend() != "shm" || value == 0, path,
            "link emulation applies to network links (gloo, mpi); shm has none (use gloo or auto)",
            FormatDouble(value), "collectives.backend");
  }
}

void CheckCheckpoint(const CheckpointSpec& k, Checker& c) {
  c.IntAtLeast("checkpoint.every_steps", k.every_steps(), 0);
  c.IntAtLeast("checkpoint.keep_last", k.keep_last(), 1);
  c.IntAtLeast("checkpoint.keep_every", k.keep_every(), 0);
}

// trace: {step_begin, step_end, dir}; step_end 0 (the default) is off. A range that
// is on must hold at least one step.
void CheckTrace(const TraceSpec& t, Checker& c) {
  c.IntAtLeast("trace.step_begin", t.step_begin(), 0);
  c.IntAtLeast("trace.step_end", t.step_end(), 0);
  const bool off = t.step_end() == 0;
  c.Check(off || t.step_end() > t.step_begin(), "trace.step_end",
          "must be greater than trace.step_begin (" + std::to_string(t.step_begin()) +
              "): the range [step_begin, step_end) traces those steps; step_end 0 turns tracing off",
          std::to_string(t.step_end()), "trace.step_begin");
  c.Check(!off || t.step_begin() == 0, "trace.step_end",
          "must be set (greater than trace.step_begin) when trace.step_begin is; 0 turns tracing off", "0",
          "trace.step_begin");
}

}  // namespace

Status Validate(const JobSpec& spec, const FieldOrigins* origins) {
  Checker c(origins);
  c.Check(!spec.name().empty(), "name", "must not be empty", "''");
  c.Check(NameCharsOk(spec.name()), "name", "may use only letters, digits, '.', '_' and '-'",
          Quote(spec.name()));
  c.Check(spec.name().size() <= 64, "name", "must be at most 64 characters",
          std::to_string(spec.name().size()) + " characters");
  CheckModel(spec.model(), c);
  CheckData(spec.data(), c);
  CheckTraining(spec.training(), c);
  CheckWorkers(spec.workers(), c);
  CheckCollectives(spec.collectives(), c);
  CheckCheckpoint(spec.checkpoint(), c);
  CheckTrace(spec.trace(), c);
  return c.status();
}

}  // namespace shoal::spec_internal

namespace shoal {

Status ValidateJobSpec(const JobSpec& spec) { return spec_internal::Validate(spec, nullptr); }

}  // namespace shoal
