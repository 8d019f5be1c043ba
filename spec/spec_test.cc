// Tests of the spec loader outside the per-rule checks: defaults, the example file,
// unknown keys, type errors, malformed YAML, overrides, the YAML round trip, the digest,
// and that no input (truncated, mutated, hostile) makes yaml-cpp's exceptions escape.
#include <gtest/gtest.h>
#include <google/protobuf/util/message_differencer.h>

#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "spec/jobspec_loader.h"
#include "common/file_util.h"
#include <filesystem>
#include <unistd.h>

namespace shoal {
namespace {

using google::protobuf::util::MessageDifferencer;

const std::string kExample = std::string(SHOAL_SOURCE_DIR) + "/examples/fashion-mnist.yaml";

// Asserts an InvalidArgument whose message contains every one of `parts`.
void ExpectRefused(const StatusOr<JobSpec>& r, const std::vector<std::string>& parts) {
  ASSERT_FALSE(r.ok()) << "accepted, expected an error with: " << parts[0];
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
  for (const std::string& p : parts) {
    EXPECT_NE(r.status().message().find(p), std::string::npos)
        << "missing '" << p << "' in: " << r.status().message();
  }
}

TEST(Defaults, MatchDocumentedValues) {
  const JobSpec s = DefaultJobSpec();
  EXPECT_EQ(s.name(), "job");
  EXPECT_EQ(s.model().kind(), "mlp");
  EXPECT_EQ(std::vector<int>(s.model().layers().begin(), s.model().layers().end()),
            (std::vector<int>{784, 256, 128, 10}));
  EXPECT_EQ(s.data().dataset(), "/usr/share/datasets/fashion-mnist");
  EXPECT_EQ(s.data().format(), "auto");
  EXPECT_EQ(s.data().prefetch_batches(), 4);
  EXPECT_TRUE(s.data().filters().near_duplicates().enabled());
  // 0: the scan's defaults, so a spec that does not set them follows the filters' versions.
  EXPECT_DOUBLE_EQ(s.data().filters().outliers().threshold(), 0);
  EXPECT_DOUBLE_EQ(s.data().filters().label_consistency().threshold(), 0);
  EXPECT_EQ(s.training().epochs(), 5);
  EXPECT_EQ(s.training().batch_per_worker(), 64);
  EXPECT_DOUBLE_EQ(s.training().learning_rate(), 0.05);
  EXPECT_DOUBLE_EQ(s.training().momentum(), 0.9);
  EXPECT_EQ(s.training().warmup_steps(), 100);
  EXPECT_EQ(s.training().schedule(), "cosine");
  EXPECT_EQ(s.training().seed(), 42u);
  EXPECT_TRUE(s.training().evaluate());
  EXPECT_EQ(s.workers().initial(), 2);
  EXPECT_EQ(s.workers().min(), 1);
  EXPECT_EQ(s.workers().max(), 8);
  EXPECT_DOUBLE_EQ(s.workers().heartbeat_interval_s(), 0.5);
  EXPECT_DOUBLE_EQ(s.workers().heartbeat_timeout_s(), 5);
  EXPECT_EQ(s.collectives().backend(), "auto");
  EXPECT_EQ(s.collectives().codec(), "none");
  EXPECT_DOUBLE_EQ(s.collectives().bucket_mib(), 16);
  EXPECT_DOUBLE_EQ(s.collectives().timeout_s(), 60);
  EXPECT_TRUE(s.collectives().overlap());
  EXPECT_EQ(s.checkpoint().dir(), "");
  EXPECT_EQ(s.checkpoint().keep_last(), 3);
  EXPECT_TRUE(ValidateJobSpec(s).ok());
}

TEST(Defaults, EmptyOrCommentOnlyYamlGivesDefaults) {
  for (const char* text : {"", "# nothing here\n", "{}", "---\n"}) {
    auto r = ParseJobSpec(text);
    ASSERT_TRUE(r.ok()) << text << ": " << r.status().ToString();
    EXPECT_TRUE(MessageDifferencer::Equals(*r, DefaultJobSpec())) << text;
  }
}

TEST(Defaults, OmittedKeysInASectionKeepTheirDefaults) {
  auto r = ParseJobSpec("training:\n  epochs: 7\n");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  JobSpec want = DefaultJobSpec();
  want.mutable_training()->set_epochs(7);
  EXPECT_TRUE(MessageDifferencer::Equals(*r, want));
}

TEST(Example, FileParsesToDefaultsExceptItsNameSignedDatasetAndTunedOptions) {
  auto r = LoadJobSpecFile(kExample);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  JobSpec want = DefaultJobSpec();
  want.set_name("fashion-mnist-mlp");
  // The example trains on the signed, scanned dataset scripts/prepare-data.sh makes,
  // with paths relative to the example file.
  const std::string root = std::filesystem::path(kExample).parent_path().parent_path().lexically_normal().string();
  want.mutable_data()->set_dataset(root + "/data/fashion-mnist");
  want.mutable_data()->add_trust(root + "/.shoal/keys/data-owner.pub");
  // Measured on this job: PowerSGD's warm-up steps cost bytes and gained no accuracy.
  want.mutable_collectives()->set_powersgd_warmup_steps(0);
  want.mutable_training()->set_nesterov(true);  // measured better on this job
  EXPECT_TRUE(MessageDifferencer::Equals(*r, want)) << r->DebugString();
}

TEST(Example, MissingFileIsNotFoundNamingPath) {
  auto r = LoadJobSpecFile("/nonexistent/dir/job.yaml");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("/nonexistent/dir/job.yaml"), std::string::npos);
}

TEST(Example, FileErrorsNameTheFile) {
  const std::string path = ::testing::TempDir() + "/spec_test_bad.yaml";
  std::ofstream(path) << "name: x\ntraining:\n  epochs: 0\n";
  auto r = LoadJobSpecFile(path);
  ExpectRefused(r, {"training.epochs:", "(" + path + " line 3)"});
  std::remove(path.c_str());
}

TEST(UnknownKeys, TopLevel) {
  auto r = ParseJobSpec("name: x\n\n\n\n\n\ntrainng:\n  epochs: 2\n", {}, "f.yaml");
  ExpectRefused(r, {"unknown field 'trainng' (f.yaml line 7)",
                    "expected one of: name, model, data, training, workers, collectives, checkpoint"});
}

TEST(UnknownKeys, Nested) {
  ExpectRefused(ParseJobSpec("training:\n  epoch: 2\n", {}, "f.yaml"),
                {"unknown field 'training.epoch' (f.yaml line 2)", "epochs, batch_per_worker"});
  ExpectRefused(ParseJobSpec("data:\n  filters:\n    outlier: {enabled: true}\n", {}, "f.yaml"),
                {"unknown field 'data.filters.outlier' (f.yaml line 3)", "label_consistency"});
  ExpectRefused(ParseJobSpec("data: {filters: {schema: {enable: false}}}"),
                {"unknown field 'data.filters.schema.enable'", "enabled, threshold"});
}

TEST(UnknownKeys, DuplicateKeyRefused) {
  ExpectRefused(ParseJobSpec("training:\n  epochs: 2\n  epochs: 3\n", {}, "f.yaml"),
                {"training.epochs:", "set twice, first on line 2", "(f.yaml line 3)"});
}

TEST(Malformed, YamlSyntaxErrorsCiteLine) {
  ExpectRefused(ParseJobSpec("name: x\ntraining: {epochs: 5\n", {}, "f.yaml"), {"malformed YAML (f.yaml line"});
  ExpectRefused(ParseJobSpec("model:\n  layers: [784, 10\n", {}, "f.yaml"), {"malformed YAML (f.yaml line"});
  ExpectRefused(ParseJobSpec("name: x\n  bad indent: 1\n", {}, "f.yaml"), {"malformed YAML (f.yaml line 2"});
  ExpectRefused(ParseJobSpec("name: \"unterminated"), {"malformed YAML", "illegal EOF in scalar"});
  ExpectRefused(ParseJobSpec("name: a: b\n", {}, "f.yaml"), {"malformed YAML (f.yaml line 1, column 8)"});
  ExpectRefused(ParseJobSpec("name: *nosuchanchor\n"), {"malformed YAML"});
  // These made yaml-cpp 0.7's LoadAll allocate until the OOM killer came (yaml-cpp#1040).
  ExpectRefused(ParseJobSpec(",\n"), {"malformed YAML (<spec> line 1, column 1): unexpected ','"});
  ExpectRefused(ParseJobSpec("# comment\n, x\nname: a\n", {}, "f.yaml"), {"malformed YAML (f.yaml line 2"});
  ExpectRefused(ParseJobSpec("&x ,\n"), {"malformed YAML"});
  ExpectRefused(ParseJobSpec("", {"checkpoint.dir=,"}), {"override 'checkpoint.dir=,'", "malformed YAML"});
}

TEST(Malformed, WrongShapeAtTopOrManyDocuments) {
  ExpectRefused(ParseJobSpec("- a\n- b\n"), {"top level: expected a map, got a list"});
  ExpectRefused(ParseJobSpec("just a string"), {"top level: expected a map"});
  ExpectRefused(ParseJobSpec("name: a\n---\nname: b\n"), {"expected one YAML document", "found more than one", "line 2"});
  ExpectRefused(ParseJobSpec("? [a, b]\n: 1\n"), {"field names must be plain words"});
  // An alias to an enclosing node makes a cycle; reading must stop, not recurse.
  ExpectRefused(ParseJobSpec("&a {model: *a}\n"), {"unknown field 'model.model'"});
  ExpectRefused(ParseJobSpec("model: {layers: &l [1, *l]}\n"), {"model.layers[1]: expected an integer"});
}

TEST(Malformed, DeepNestingIsAnErrorNotACrash) {
  const std::string deep = "model: {layers: " + std::string(20000, '[') + std::string(20000, ']') + "}";
  EXPECT_FALSE(ParseJobSpec(deep).ok());
}

TEST(Types, WrongTypesRefusedWithFieldAndLine) {
  struct Case {
    std::string yaml, field, why;
  };
  const std::vector<Case> cases = {
      {"training:\n  epochs: five\n", "training.epochs", "expected an integer, got 'five'"},
      {"training:\n  epochs: 2.5\n", "training.epochs", "expected an integer"},
      {"training:\n  epochs: 1e3\n", "training.epochs", "expected an integer"},
      {"training:\n  epochs: \"5\"\n", "training.epochs", "expected an integer, got quoted string '5'"},
      {"training:\n  epochs: 99999999999\n", "training.epochs", "expected an integer"},
      {"training:\n  epochs: [5]\n", "training.epochs", "expected an integer, got a list"},
      {"training:\n  seed: -1\n", "training.seed", "expected a non-negative integer"},
      {"training:\n  learning_rate: fast\n", "training.learning_rate", "expected a number"},
      {"training:\n  learning_rate: inf\n", "training.learning_rate", "expected a number"},
      {"training:\n  evaluate: yes\n", "training.evaluate", "expected true or false"},
      {"training:\n  evaluate: 1\n", "training.evaluate", "expected true or false"},
      {"model:\n  layers: {a: 1}\n", "model.layers", "expected a list, got a map"},
      {"model:\n  layers: 784\n", "model.layers", "expected a list"},
      {"model:\n  layers: [784, x]\n", "model.layers[1]", "expected an integer, got 'x'"},
      {"model:\n  - 1\n", "model", "expected a map, got a list"},
      {"model:\n  kind: {a: b}\n", "model.kind", "expected a string, got a map"},
      {"data:\n  trust: [[a]]\n", "data.trust[0]", "expected a string, got a list"},
      {"data:\n  trust: a.pub\n", "data.trust", "expected a list, got 'a.pub'"},
      {"data:\n  filters: null\n", "data.filters", "expected a map, got null"},
      {"data:\n  allow_unsigned: \"false\"\n", "data.allow_unsigned", "expected true or false"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.yaml);
    ExpectRefused(ParseJobSpec(c.yaml, {}, "t.yaml"), {c.field + ": " + c.why, "(t.yaml line 2)"});
  }
}

TEST(Types, AcceptedSpellings) {
  auto r = ParseJobSpec(
      "name: 123\n"  // a plain scalar is a fine string
      "training: {learning_rate: 1, momentum: .5, evaluate: False, seed: 18446744073709551615}\n"
      "checkpoint: {dir: , trust: [x.pub, 'y z.pub']}\n");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->name(), "123");
  EXPECT_DOUBLE_EQ(r->training().learning_rate(), 1.0);
  EXPECT_DOUBLE_EQ(r->training().momentum(), 0.5);
  EXPECT_FALSE(r->training().evaluate());
  EXPECT_EQ(r->training().seed(), 18446744073709551615ull);
  EXPECT_EQ(r->checkpoint().dir(), "");
  ASSERT_EQ(r->checkpoint().trust_size(), 2);
  EXPECT_EQ(r->checkpoint().trust(1), "y z.pub");
}

TEST(Overrides, ScalarListAndNested) {
  auto r = ParseJobSpec("", {"training.epochs=2", "model.layers=[784,128,10]", "workers.initial=3",
                             "checkpoint.trust=[a.pub,b.pub]", "data.filters.outliers.threshold=2.5",
                             "data.filters.schema.enabled=false", "name=run-7", "checkpoint.dir="});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->training().epochs(), 2);
  EXPECT_EQ(std::vector<int>(r->model().layers().begin(), r->model().layers().end()),
            (std::vector<int>{784, 128, 10}));
  EXPECT_EQ(r->workers().initial(), 3);
  ASSERT_EQ(r->checkpoint().trust_size(), 2);
  EXPECT_EQ(r->checkpoint().trust(0), "a.pub");
  EXPECT_EQ(r->checkpoint().trust(1), "b.pub");
  EXPECT_DOUBLE_EQ(r->data().filters().outliers().threshold(), 2.5);
  EXPECT_FALSE(r->data().filters().schema().enabled());
  EXPECT_EQ(r->name(), "run-7");
}

TEST(Overrides, WinOverYamlAndApplyInOrder) {
  auto r = ParseJobSpec("training:\n  epochs: 9\nworkers: {initial: 4}\n",
                        {"training.epochs=2", "training.epochs=3", "workers={initial: 5, max: 6}"});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->training().epochs(), 3);
  EXPECT_EQ(r->workers().initial(), 5);
  EXPECT_EQ(r->workers().max(), 6);
  EXPECT_EQ(r->workers().min(), 1);  // a section override merges, like YAML does
}

TEST(Overrides, RefusedNamingTheOverride) {
  ExpectRefused(ParseJobSpec("", {"trainng.epochs=2"}),
                {"override 'trainng.epochs=2'", "unknown field 'trainng'", "expected one of: name, model"});
  ExpectRefused(ParseJobSpec("", {"training.epoch=2"}),
                {"override 'training.epoch=2'", "unknown field 'training.epoch'", "epochs"});
  ExpectRefused(ParseJobSpec("", {"training.epochs=five"}),
                {"training.epochs: expected an integer, got 'five'", "(--set training.epochs=five)"});
  ExpectRefused(ParseJobSpec("", {"model.layers=[784,x]"}),
                {"model.layers[1]:", "(--set model.layers=[784,x])"});
  ExpectRefused(ParseJobSpec("", {"model.layers=[784,10"}), {"override 'model.layers=[784,10'", "malformed value"});
  ExpectRefused(ParseJobSpec("", {"training.epochs"}), {"override 'training.epochs'", "path.to.field=value"});
  ExpectRefused(ParseJobSpec("", {"=3"}), {"override '=3'", "path before '=' is empty"});
  ExpectRefused(ParseJobSpec("", {"training.epochs.x=1"}), {"'training.epochs' is a value, not a section"});
  ExpectRefused(ParseJobSpec("", {"training=5"}), {"training: expected a map, got '5'", "--set training=5"});
  ExpectRefused(ParseJobSpec("", {"training.evaluate=maybe"}), {"training.evaluate:", "--set"});
  ExpectRefused(ParseJobSpec("", {"workers={initial: 3, initial: 4}"}),
                {"workers.initial: set twice (--set workers={initial: 3, initial: 4})"});
}

// A spec with awkward values in every string field: quotes, escapes, YAML keywords.
JobSpec AwkwardSpec() {
  JobSpec s = DefaultJobSpec();
  s.set_name("odd.name_1");
  s.mutable_model()->clear_layers();
  for (int w : {3, 65536, 1}) s.mutable_model()->add_layers(w);
  s.mutable_data()->set_dataset("/data/with \"quotes\" \\ back\tslash\nnewline: # ünïcode");
  s.mutable_data()->add_trust("true");
  s.mutable_data()->add_trust("~");
  s.mutable_data()->add_trust("");
  s.mutable_data()->set_allow_unsigned(true);
  s.mutable_training()->set_learning_rate(0.1 + 0.2);  // not exactly 0.3
  s.mutable_training()->set_weight_decay(1e-7);
  s.mutable_training()->set_seed(18446744073709551615ull);
  s.mutable_training()->set_max_steps(int64_t{1} << 40);
  s.mutable_workers()->set_heartbeat_timeout_s(1e300);
  s.mutable_checkpoint()->set_dir("123");
  s.mutable_checkpoint()->set_sign_key("null");
  s.mutable_checkpoint()->add_trust("- a: [b]");
  return s;
}

TEST(RoundTrip, ToYamlParsesBackToTheSameSpec) {
  for (const JobSpec& s : {DefaultJobSpec(), AwkwardSpec()}) {
    const std::string yaml = JobSpecToYaml(s);
    auto r = ParseJobSpec(yaml);
    ASSERT_TRUE(r.ok()) << r.status().ToString() << "\n" << yaml;
    EXPECT_TRUE(MessageDifferencer::Equals(*r, s)) << yaml;
    EXPECT_EQ(r->SerializeAsString(), s.SerializeAsString());
    EXPECT_EQ(JobSpecToYaml(*r), yaml);
  }
}

TEST(RoundTrip, WritesEveryFieldInProtoOrder) {
  const std::string yaml = JobSpecToYaml(DefaultJobSpec());
  EXPECT_EQ(yaml.rfind("name: \"job\"\nmodel:\n  kind: \"mlp\"\n  layers: [784, 256, 128, 10]\n", 0), 0u)
      << yaml;
  for (const char* key : {"  filters:\n    schema:\n      enabled: true\n      threshold: 0\n",
                          "  learning_rate: 0.05\n", "  seed: 42\n", "  heartbeat_interval_s: 0.5\n",
                          "  sign_key: \"\"\n  trust: []\n"}) {
    EXPECT_NE(yaml.find(key), std::string::npos) << key << "\n" << yaml;
  }
}

TEST(Digest, StableAndSensitive) {
  const std::string d = JobSpecDigest(DefaultJobSpec());
  EXPECT_EQ(d.size(), 64u);
  EXPECT_EQ(d.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_EQ(d, JobSpecDigest(DefaultJobSpec()));
  // Same meaning, different layout (flow vs block, key order, defaults spelled out).
  auto a = ParseJobSpec("training: {epochs: 5, seed: 42}\nname: job\n");
  auto b = ParseJobSpec("name: job\ntraining:\n  seed: 42\n");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(JobSpecDigest(*a), d);
  EXPECT_EQ(JobSpecDigest(*b), d);
  JobSpec changed = DefaultJobSpec();
  changed.mutable_training()->set_epochs(6);
  EXPECT_NE(JobSpecDigest(changed), d);
  changed = DefaultJobSpec();
  changed.mutable_checkpoint()->add_trust("k.pub");
  EXPECT_NE(JobSpecDigest(changed), d);
}

// Whatever the input, the loader answers with a Status: yaml-cpp exceptions never escape.
TEST(Robustness, TruncatedAndMutatedExampleNeverThrows) {
  std::ifstream in(kExample);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_FALSE(text.empty());
  for (size_t n = 0; n <= text.size(); ++n) {
    EXPECT_NO_THROW((void)ParseJobSpec(text.substr(0, n))) << n;
  }
  std::mt19937 rng(1234);  // fixed seed: failures reproduce
  const std::string alphabet = ":{}[],-#&*!|>'\"%@` \n\tx09.";
  for (int iter = 0; iter < 2000; ++iter) {
    std::string m = text;
    for (int k = 0; k < 3; ++k) m[rng() % m.size()] = alphabet[rng() % alphabet.size()];
    EXPECT_NO_THROW((void)ParseJobSpec(m, {"training.epochs=3"})) << m;
  }
  for (const char* o : {"", "=", "a=b=c", "model.layers=[[1]]", "name={", "training.seed=!!binary x"}) {
    EXPECT_NO_THROW(EXPECT_FALSE(ParseJobSpec("", {o}).ok()) << o);
  }
}

}  // namespace
}  // namespace shoal

namespace shoal {
namespace {
TEST(SpecPaths, FileRelativeAndOverrideRelativePathsBecomeAbsolute) {
  auto dir = std::filesystem::temp_directory_path() / ("shoal-spec-paths-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir / "sub");
  std::string spec_path = (dir / "sub" / "job.yaml").string();
  ASSERT_TRUE(WriteFileAtomic(spec_path, "data:\n  dataset: ../data\n  trust: [keys/owner.pub]\n").ok());
  auto spec = LoadJobSpecFile(spec_path, {"checkpoint.dir=ckpts"});
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->data().dataset(), (dir / "data").string());
  EXPECT_EQ(spec->data().trust(0), (dir / "sub" / "keys" / "owner.pub").string());
  EXPECT_EQ(spec->checkpoint().dir(), (std::filesystem::current_path() / "ckpts").string());
  EXPECT_EQ(spec->data().allow_unsigned(), false);
  std::filesystem::remove_all(dir);
}
}  // namespace
}  // namespace shoal

namespace shoal {
namespace {
TEST(SpecCodecOptions, DefaultsOverridesAndRefusals) {
  auto ok = ParseJobSpec("collectives: {codec: qblock, qblock_bits: 4, topk_ratio: 0.05, powersgd_rank: 8, powersgd_warmup_steps: 3}\n");
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->collectives().qblock_bits(), 4);
  EXPECT_DOUBLE_EQ(ok->collectives().topk_ratio(), 0.05);
  EXPECT_EQ(ok->collectives().powersgd_rank(), 8);
  EXPECT_EQ(ok->collectives().powersgd_warmup_steps(), 3);
  EXPECT_EQ(DefaultJobSpec().collectives().qblock_bits(), 8);
  struct Bad {
    std::string yaml, field;
  } cases[] = {{"collectives: {qblock_bits: 6}\n", "collectives.qblock_bits"},
               {"collectives: {topk_ratio: 0}\n", "collectives.topk_ratio"},
               {"collectives: {topk_ratio: 1.5}\n", "collectives.topk_ratio"},
               {"collectives: {powersgd_rank: 0}\n", "collectives.powersgd_rank"},
               {"collectives: {powersgd_warmup_steps: -1}\n", "collectives.powersgd_warmup_steps"},
               {"collectives: {codec: qblock, error_feedback: false}\n", "collectives.error_feedback"}};
  for (const auto& c : cases) {
    auto r = ParseJobSpec(c.yaml, {}, "codec.yaml");
    ASSERT_FALSE(r.ok()) << c.yaml;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(c.field), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find("line 1"), std::string::npos) << r.status().message();
  }
  EXPECT_TRUE(DefaultJobSpec().collectives().error_feedback());
  auto no_feedback = ParseJobSpec("collectives: {codec: bf16, error_feedback: false}\n");
  ASSERT_TRUE(no_feedback.ok()) << no_feedback.status().ToString();
  EXPECT_FALSE(no_feedback->collectives().error_feedback());
  auto over = ParseJobSpec("", {"collectives.qblock_bits=4"});
  ASSERT_TRUE(over.ok());
  EXPECT_EQ(over->collectives().qblock_bits(), 4);
}

TEST(SpecBackend, ShmIsAChoice) {
  auto shm = ParseJobSpec("collectives: {backend: shm}\n", {});
  ASSERT_TRUE(shm.ok()) << shm.status().ToString();
  EXPECT_EQ(shm->collectives().backend(), "shm");
}

TEST(SpecLinkEmulation, OffByDefaultSetInTheSpecRefusedWhereItCannotApply) {
  EXPECT_EQ(DefaultJobSpec().collectives().emulate_bandwidth_mbps(), 0);
  EXPECT_EQ(DefaultJobSpec().collectives().emulate_latency_us(), 0);
  auto set = ParseJobSpec("collectives: {backend: gloo, emulate_bandwidth_mbps: 100}\n",
                          {"collectives.emulate_latency_us=50"});
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  EXPECT_DOUBLE_EQ(set->collectives().emulate_bandwidth_mbps(), 100);
  EXPECT_DOUBLE_EQ(set->collectives().emulate_latency_us(), 50);
  struct Bad {
    std::string yaml, field, reason;
  } cases[] = {{"collectives: {emulate_bandwidth_mbps: -1}\n", "collectives.emulate_bandwidth_mbps", ">= 0"},
               {"collectives: {emulate_latency_us: .nan}\n", "collectives.emulate_latency_us", "finite"},
               {"collectives: {backend: nccl, emulate_latency_us: 50}\n", "collectives.emulate_latency_us",
                "CPU backends"},
               {"collectives: {backend: shm, emulate_bandwidth_mbps: 100}\n", "collectives.emulate_bandwidth_mbps",
                "shm has none"}};
  for (const auto& c : cases) {
    auto r = ParseJobSpec(c.yaml, {}, "link.yaml");
    ASSERT_FALSE(r.ok()) << c.yaml;
    EXPECT_NE(r.status().message().find(c.field), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find(c.reason), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find("line 1"), std::string::npos) << r.status().message();
  }
}
}  // namespace
}  // namespace shoal

namespace shoal {
namespace {

// labels: a map of names to values for cost attribution (shoalctl usage --by team).
TEST(Labels, ReadMergedByOverridesWrittenSortedAndDigestedWithoutOrder) {
  auto a = ParseJobSpec("labels: {team: vision, project: fm}\n", {"labels.team=speech", "labels.owner=ana"});
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->labels().at("team"), "speech");
  EXPECT_EQ(a->labels().at("project"), "fm");
  EXPECT_EQ(a->labels().at("owner"), "ana");
  EXPECT_EQ(a->labels_size(), 3);
  const std::string yaml = JobSpecToYaml(*a);
  EXPECT_NE(yaml.find("labels: {\"owner\": \"ana\", \"project\": \"fm\", \"team\": \"speech\"}"), std::string::npos) << yaml;
  auto back = ParseJobSpec(yaml);
  ASSERT_TRUE(back.ok()) << back.status().ToString() << "\n" << yaml;
  EXPECT_EQ(JobSpecDigest(*back), JobSpecDigest(*a));
  auto other_order = ParseJobSpec("labels: {owner: ana, team: speech, project: fm}\n");
  ASSERT_TRUE(other_order.ok());
  EXPECT_EQ(JobSpecDigest(*other_order), JobSpecDigest(*a));
  ExpectRefused(ParseJobSpec("labels: {team: [a, b]}\n", {}, "f.yaml"), {"labels", "name: value", "f.yaml line 1"});
  ExpectRefused(ParseJobSpec("labels: vision\n", {}, "f.yaml"), {"labels", "expected a map"});
}

}  // namespace
}  // namespace shoal
