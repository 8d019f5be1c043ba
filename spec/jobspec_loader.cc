// Public entry points of the spec loader: defaults, then YAML, then --set overrides, then
// validation, in that order, so the last word always belongs to the command line.
#include "spec/jobspec_loader.h"

#include <filesystem>

#include "common/file_util.h"
#include "spec/spec_internal.h"

namespace shoal {

JobSpec DefaultJobSpec() {
  JobSpec s;
  s.set_name("job");

  ModelSpec* m = s.mutable_model();
  m->set_kind("mlp");
  for (int w : {784, 256, 128, 10}) m->add_layers(w);
  m->set_device("cpu");
  // Present and off (step_end 0), like every other section: a spec read back from its
  // YAML, which always writes the section, is then the same message.
  s.mutable_trace();

  DataSpec* d = s.mutable_data();
  d->set_dataset("/usr/share/datasets/fashion-mnist");
  d->set_test_dataset("/usr/share/datasets/fashion-mnist");
  d->set_format("auto");
  d->set_prefetch_batches(4);
  d->set_allow_unsigned(false);
  DataFilters* f = d->mutable_filters();
  f->mutable_schema()->set_enabled(true);
  f->mutable_schema()->set_threshold(0);
  f->mutable_exact_duplicates()->set_enabled(true);
  f->mutable_near_duplicates()->set_enabled(true);
  f->mutable_outliers()->set_enabled(true);
  // Thresholds 0: the scan's own defaults (datapipe/scan.h), which its report records.
  f->mutable_outliers()->set_threshold(0);
  f->mutable_label_consistency()->set_enabled(true);
  f->mutable_label_consistency()->set_threshold(0);

  TrainingSpec* t = s.mutable_training();
  t->set_epochs(5);
  t->set_batch_per_worker(64);
  t->set_optimizer("sgd");
  t->set_learning_rate(0.05);
  t->set_momentum(0.9);
  t->set_weight_decay(0.0);
  t->set_warmup_steps(100);
  t->set_schedule("cosine");
  t->set_min_lr_ratio(0.01);
  t->set_seed(42);
  t->set_evaluate(true);
  t->set_max_steps(0);
  t->set_nesterov(false);
  t->set_elastic_batch("global");

  WorkersSpec* w = s.mutable_workers();
  w->set_initial(2);
  w->set_min(1);
  w->set_max(8);
  w->set_heartbeat_interval_s(0.5);
  w->set_heartbeat_timeout_s(5);
  w->set_regroup_window_s(1.0);
  w->set_min_grace_s(60);
  w->set_max_restarts(3);

  CollectivesSpec* c = s.mutable_collectives();
  c->set_backend("auto");
  c->set_codec("none");
  c->set_bucket_mib(16);  // ReducerOptions::bucket_mib, chosen by measurement (docs/BENCHMARKS.md)
  c->set_timeout_s(60);
  c->set_overlap(true);
  c->set_powersgd_rank(4);
  c->set_qblock_bits(8);
  c->set_topk_ratio(0.01);
  c->set_powersgd_warmup_steps(10);
  c->set_topk_momentum_correction(true);
  c->set_error_feedback(true);

  CheckpointSpec* k = s.mutable_checkpoint();
  k->set_dir("");
  k->set_every_steps(0);
  k->set_keep_last(3);
  k->set_keep_every(0);
  k->set_sign_key("");
  k->set_resume("");
  k->set_allow_unsigned(false);
  k->set_allow_rollback(false);
  return s;
}

namespace {

// Makes every relative path field absolute against `base`. Paths written in a spec
// file are relative to the file's folder (so a spec and its keys can travel together);
// paths given with --set are relative to the working directory, as on any command line.
void ResolvePaths(JobSpec* spec, const std::filesystem::path& base) {
  auto fix = [&](std::string* p) {
    if (!p->empty() && !std::filesystem::path(*p).is_absolute()) *p = (base / *p).lexically_normal().string();
  };
  fix(spec->mutable_data()->mutable_dataset());
  fix(spec->mutable_data()->mutable_test_dataset());
  for (auto& t : *spec->mutable_data()->mutable_trust()) fix(&t);
  fix(spec->mutable_checkpoint()->mutable_dir());
  fix(spec->mutable_checkpoint()->mutable_sign_key());
  for (auto& t : *spec->mutable_checkpoint()->mutable_trust()) fix(&t);
  if (spec->has_trace()) fix(spec->mutable_trace()->mutable_dir());  // mutable_ would make it present
}

StatusOr<JobSpec> Parse(const std::string& yaml_text, const std::vector<std::string>& overrides,
                        const std::string& source_name, const std::filesystem::path* spec_dir) {
  JobSpec spec = DefaultJobSpec();
  spec_internal::FieldOrigins origins;
  RETURN_IF_ERROR(spec_internal::ApplyYamlText(yaml_text, source_name, &spec, &origins));
  if (spec_dir) ResolvePaths(&spec, *spec_dir);
  for (const std::string& o : overrides) {
    RETURN_IF_ERROR(spec_internal::ApplyOverride(o, &spec, &origins));
  }
  if (spec_dir) ResolvePaths(&spec, std::filesystem::current_path());
  RETURN_IF_ERROR(spec_internal::Validate(spec, &origins));
  return spec;
}

}  // namespace

StatusOr<JobSpec> ParseJobSpec(const std::string& yaml_text, const std::vector<std::string>& overrides,
                               const std::string& source_name) {
  return Parse(yaml_text, overrides, source_name, nullptr);
}

StatusOr<JobSpec> LoadJobSpecFile(const std::string& path, const std::vector<std::string>& overrides) {
  StatusOr<std::string> text = ReadFile(path, size_t{16} << 20);  // a spec is a page or two
  if (!text.ok()) {
    if (text.status().code() == StatusCode::kNotFound) {
      return NotFound("job spec file not found: " + path);
    }
    return text.status().WithContext("reading job spec " + path);
  }
  std::filesystem::path dir = std::filesystem::absolute(path).parent_path();
  return Parse(*text, overrides, path, &dir);
}

}  // namespace shoal
