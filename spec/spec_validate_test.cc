// One test per validation rule: each bad value, written in YAML, must be refused with
// kInvalidArgument naming the dotted field and the line it sits on; the same rules are
// then checked on bare protos (ValidateJobSpec) and through --set overrides.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "spec/jobspec_loader.h"

namespace shoal {
namespace {

struct RuleCase {
  std::string path;   // where the bad value is written, e.g. "training.epochs"
  std::string value;  // the bad value as YAML text
  std::string field;  // the field the error must name ("" = path)
};

// "training.epochs", "0" -> "training:\n  epochs: 0\n": the value sits on line depth.
std::string Nested(const std::string& path, const std::string& value, int* line) {
  std::string yaml, indent;
  size_t start = 0;
  *line = 0;
  for (;;) {
    const size_t dot = path.find('.', start);
    ++*line;
    if (dot == std::string::npos) {
      yaml += indent + path.substr(start) + ": " + value + "\n";
      return yaml;
    }
    yaml += indent + path.substr(start, dot - start) + ":\n";
    indent += "  ";
    start = dot + 1;
  }
}

std::ostream& operator<<(std::ostream& os, const RuleCase& c) { return os << c.path << "=" << c.value; }

class RuleTest : public ::testing::TestWithParam<RuleCase> {};

TEST_P(RuleTest, RefusedNamingFieldAndLine) {
  const RuleCase& c = GetParam();
  int line = 0;
  const std::string yaml = Nested(c.path, c.value, &line);
  StatusOr<JobSpec> r = ParseJobSpec(yaml, {}, "test.yaml");
  ASSERT_FALSE(r.ok()) << yaml;
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  const std::string field = c.field.empty() ? c.path : c.field;
  EXPECT_NE(r.status().message().find(field + ":"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("(test.yaml line " + std::to_string(line) + ")"),
            std::string::npos)
      << r.status().message();
}

INSTANTIATE_TEST_SUITE_P(
    AllRules, RuleTest,
    ::testing::Values(
        RuleCase{"name", "\"\"", ""}, RuleCase{"name", "bad/name", ""},
        RuleCase{"name", "'has space'", ""}, RuleCase{"name", std::string(65, 'a'), ""},
        RuleCase{"model.kind", "rnn", ""}, RuleCase{"model.layers", "[784]", ""},
        RuleCase{"model.layers", "[]", ""}, RuleCase{"model.layers", "[784, 0, 10]", "model.layers[1]"},
        RuleCase{"model.layers", "[784, 65537]", "model.layers[1]"},
        RuleCase{"model.layers", "[-3, 10]", "model.layers[0]"}, RuleCase{"model.device", "tpu", ""},
        RuleCase{"data.dataset", "\"\"", ""}, RuleCase{"data.format", "csv", ""},
        RuleCase{"data.prefetch_batches", "-1", ""}, RuleCase{"data.prefetch_batches", "65", ""},
        RuleCase{"data.filters.schema.threshold", "-1", ""},
        RuleCase{"data.filters.exact_duplicates.threshold", "-0.5", ""},
        RuleCase{"data.filters.near_duplicates.threshold", "-2", ""},
        RuleCase{"data.filters.outliers.threshold", "-1", ""},
        RuleCase{"data.filters.outliers.threshold", ".nan", ""},
        RuleCase{"data.filters.label_consistency.threshold", "1.5", ""},
        RuleCase{"data.filters.label_consistency.threshold", "-0.1", ""},
        RuleCase{"training.epochs", "0", ""}, RuleCase{"training.epochs", "10001", ""},
        RuleCase{"training.batch_per_worker", "0", ""}, RuleCase{"training.batch_per_worker", "-4", ""},
        RuleCase{"training.batch_per_worker", "1000001", ""}, RuleCase{"training.optimizer", "adam", ""},
        RuleCase{"training.learning_rate", "0", ""}, RuleCase{"training.learning_rate", "-0.1", ""},
        RuleCase{"training.learning_rate", ".inf", ""}, RuleCase{"training.learning_rate", ".nan", ""},
        RuleCase{"training.momentum", "1.0", ""}, RuleCase{"training.momentum", "-0.1", ""},
        RuleCase{"training.weight_decay", "-0.001", ""}, RuleCase{"training.warmup_steps", "-1", ""},
        RuleCase{"training.schedule", "linear", ""}, RuleCase{"training.min_lr_ratio", "1.01", ""},
        RuleCase{"training.min_lr_ratio", "-0.5", ""}, RuleCase{"training.max_steps", "-1", ""},
        RuleCase{"workers.initial", "0", ""}, RuleCase{"workers.min", "0", ""},
        RuleCase{"workers.initial", "9", "workers.max"},  // initial above the default max 8
        RuleCase{"workers.max", "1", ""},                 // below the default initial 2
        RuleCase{"workers.heartbeat_interval_s", "0", ""},
        RuleCase{"workers.heartbeat_interval_s", "-1", ""},
        RuleCase{"workers.heartbeat_timeout_s", "0.4", ""},  // not above the 0.5 s interval
        RuleCase{"workers.heartbeat_timeout_s", "0.5", ""},
        RuleCase{"workers.heartbeat_interval_s", "10", "workers.heartbeat_timeout_s"},
        RuleCase{"workers.min", "3", "workers.initial"},  // above the default initial 2
        RuleCase{"collectives.backend", "tcp", ""}, RuleCase{"collectives.codec", "zip", ""},
        RuleCase{"collectives.bucket_mib", "0", ""}, RuleCase{"collectives.timeout_s", "-1", ""},
        RuleCase{"collectives.timeout_s", "0", ""}, RuleCase{"checkpoint.every_steps", "-1", ""},
        RuleCase{"checkpoint.keep_last", "0", ""}, RuleCase{"checkpoint.keep_every", "-1", ""},
        RuleCase{"trace.step_begin", "-1", ""}, RuleCase{"trace.step_end", "-5", ""},
        RuleCase{"trace.step_begin", "10", "trace.step_end"}));  // a range with no end

// trace: {step_begin, step_end, dir}: the range [begin, end) is traced; end 0 is off.
TEST(TraceRange, ReadWrittenAndRefusedWhenEmpty) {
  auto on = ParseJobSpec("trace: {step_begin: 100, step_end: 120, dir: /tmp/t}\n");
  ASSERT_TRUE(on.ok()) << on.status().ToString();
  EXPECT_EQ(on->trace().step_begin(), 100);
  EXPECT_EQ(on->trace().step_end(), 120);
  EXPECT_EQ(on->trace().dir(), "/tmp/t");
  // The normalised form (the spec digest) carries the range.
  const std::string yaml = JobSpecToYaml(*on);
  EXPECT_NE(yaml.find("trace:\n  step_begin: 100\n  step_end: 120\n  dir: \"/tmp/t\""), std::string::npos) << yaml;
  EXPECT_TRUE(ParseJobSpec("trace: {step_begin: 0, step_end: 1}").ok());
  EXPECT_TRUE(ParseJobSpec("trace: {step_begin: 0, step_end: 0}").ok());  // off
  auto empty = ParseJobSpec("name: x\ntrace: {step_begin: 120, step_end: 100}\n", {}, "t.yaml");
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(empty.status().message().find("trace.step_end: must be greater than trace.step_begin"), std::string::npos)
      << empty.status().message();
  EXPECT_NE(empty.status().message().find("line 2"), std::string::npos) << empty.status().message();
  auto same = ParseJobSpec("trace: {step_begin: 5, step_end: 5}");
  EXPECT_FALSE(same.ok());
  auto set = ParseJobSpec("", {"trace.step_begin=3", "trace.step_end=2"});
  ASSERT_FALSE(set.ok());
  EXPECT_NE(set.status().message().find("trace.step_end"), std::string::npos) << set.status().message();
}

// Rules involving two fields, each written on its own line.
TEST(CrossFieldRules, MinAboveInitialNamesInitial) {
  auto r = ParseJobSpec("workers:\n  min: 3\n  initial: 2\n", {}, "w.yaml");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("workers.initial:"), std::string::npos);
  EXPECT_NE(r.status().message().find("(w.yaml line 3)"), std::string::npos) << r.status().message();
}

TEST(CrossFieldRules, NesterovNeedsMomentum) {
  auto r = ParseJobSpec("training: {momentum: 0, nesterov: true}\n", {}, "t.yaml");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("training.nesterov:"), std::string::npos) << r.status().message();
  EXPECT_TRUE(ParseJobSpec("training: {momentum: 0.9, nesterov: true}\n").ok());
}

TEST(CrossFieldRules, MaxAboveLimit) {
  auto r = ParseJobSpec("workers: {initial: 2, max: 4097}\n", {}, "w.yaml");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("workers.max:"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("line 1"), std::string::npos);
}

TEST(CrossFieldRules, EdgesAccepted) {
  EXPECT_TRUE(ParseJobSpec("workers: {initial: 1, min: 1, max: 1}").ok());
  EXPECT_TRUE(ParseJobSpec("workers: {initial: 4096, min: 4096, max: 4096}").ok());
  EXPECT_TRUE(ParseJobSpec("model: {layers: [1, 65536]}").ok());
  EXPECT_TRUE(ParseJobSpec("training: {epochs: 10000, batch_per_worker: 1000000, momentum: 0}").ok());
  EXPECT_TRUE(ParseJobSpec("training: {min_lr_ratio: 1}\ndata: {prefetch_batches: 64}").ok());
  EXPECT_TRUE(ParseJobSpec("data: {filters: {outliers: {threshold: 0}, label_consistency: {threshold: 1}}}").ok());
  EXPECT_TRUE(ParseJobSpec(std::string("name: ") + std::string(64, 'z') + "\n").ok());
  EXPECT_TRUE(ParseJobSpec("name: A-z_0.9\n").ok());
}

// A semantic error after parsing still points at the line, even deep in a flow map.
TEST(Lines, SemanticErrorCitesLineOfTheValue) {
  const std::string yaml =
      "name: ok\n"
      "# a comment\n"
      "training:\n"
      "  epochs: 5\n"
      "  batch_per_worker: -4\n";
  auto r = ParseJobSpec(yaml, {}, "fashion.yaml");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(),
            "training.batch_per_worker: must be positive, got -4 (fashion.yaml line 5)");
}

// ValidateJobSpec on a bare proto: the field is named, no line is invented.
TEST(ValidateJobSpecDirect, NamesFieldWithoutLine) {
  EXPECT_TRUE(ValidateJobSpec(DefaultJobSpec()).ok());
  struct Mutation {
    std::string field;
    void (*apply)(JobSpec*);
  };
  const std::vector<Mutation> cases = {
      {"name", [](JobSpec* s) { s->set_name(""); }},
      {"model.layers", [](JobSpec* s) { s->mutable_model()->clear_layers(); }},
      {"data.dataset", [](JobSpec* s) { s->mutable_data()->clear_dataset(); }},
      {"training.learning_rate", [](JobSpec* s) { s->mutable_training()->set_learning_rate(0); }},
      {"workers.heartbeat_timeout_s", [](JobSpec* s) { s->mutable_workers()->set_heartbeat_timeout_s(0.1); }},
      {"collectives.codec", [](JobSpec* s) { s->mutable_collectives()->set_codec(""); }},
      {"checkpoint.keep_last", [](JobSpec* s) { s->mutable_checkpoint()->set_keep_last(0); }},
  };
  for (const Mutation& m : cases) {
    JobSpec s = DefaultJobSpec();
    m.apply(&s);
    Status st = ValidateJobSpec(s);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << m.field;
    EXPECT_EQ(st.message().rfind(m.field + ":", 0), 0u) << st.message();
    EXPECT_EQ(st.message().find("line"), std::string::npos) << st.message();
  }
  // An all-zero proto (nothing filled in) is refused, not accepted by accident.
  EXPECT_FALSE(ValidateJobSpec(JobSpec()).ok());
}

// A bad value that came from --set names the override, not a YAML line.
TEST(Lines, SemanticErrorFromOverrideNamesOverride) {
  auto r = ParseJobSpec("training:\n  epochs: 5\n", {"training.epochs=0"}, "f.yaml");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(), "training.epochs: must be positive, got 0 (--set training.epochs=0)");
  auto l = ParseJobSpec("model:\n  layers: [784, 10]\n", {"model.layers=[784,0,10]"}, "f.yaml");
  ASSERT_FALSE(l.ok());
  EXPECT_NE(l.status().message().find("model.layers[1]:"), std::string::npos);
  EXPECT_NE(l.status().message().find("--set model.layers=[784,0,10]"), std::string::npos)
      << l.status().message();
}

}  // namespace
}  // namespace shoal
