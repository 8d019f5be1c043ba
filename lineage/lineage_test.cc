// Lineage digests, verification verdicts, rendering and OpenLineage events.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <regex>

#include "lineage/digest.h"
#include "lineage/openlineage.h"
#include "lineage/render.h"

namespace shoal {
namespace {

JobLineageRecord Record() {
  JobLineageRecord r;
  JobLineage* j = r.mutable_job();
  j->set_job_id("j1");
  j->set_name("mlp");
  j->set_spec_digest(std::string(64, 'a'));
  j->mutable_dataset()->set_dir("/data/fm");
  j->mutable_dataset()->set_manifest_digest(std::string(64, 'b'));
  LineageShard* s = j->mutable_dataset()->add_shards();
  s->set_file("shard-00000.rec");
  s->set_sha256(std::string(64, 'c'));
  LineageFilter* f = j->mutable_dataset()->mutable_scan()->add_filters();
  f->set_name("near");
  f->set_enabled(true);
  f->set_version("2");
  j->mutable_coordinator_code()->set_version("0.1.0+abc");
  j->set_digest(JobLineageDigest(*j));
  std::string head = j->digest();
  for (int n = 1; n <= 3; ++n) {
    GenerationLineage* g = r.add_generations();
    g->set_job_id("j1");
    g->set_number(n);
    g->set_cause(n == 1 ? "start" : "member j1/m2 dead");
    for (int k = 0; k < 4 - n; ++k) {
      LineageMember* m = g->add_members();
      m->set_id("j1/m" + std::to_string(k));
      m->set_host("host" + std::to_string(k));
      m->set_rank(k);
    }
    g->set_digest(GenerationLineageDigest(head, *g));
    head = g->digest();
  }
  CheckpointLineage* c = r.add_checkpoints();
  c->set_manifest_digest(std::string(64, 'd'));
  c->set_job_id("j1");
  c->set_step(100);
  c->set_generation(2);
  c->set_parent_digest(std::string(64, 'e'));
  c->set_lineage_digest(r.generations(1).digest());
  return r;
}

TEST(LineageDigest, ChainIsDeterministicAndCoversEveryRecord) {
  JobLineageRecord r = Record();
  auto head = RecomputeLineageChain(r, 2);
  ASSERT_TRUE(head.ok()) << head.status().ToString();
  EXPECT_EQ(*head, r.generations(1).digest());
  EXPECT_EQ(*RecomputeLineageChain(r, 0), r.job().digest());
  // Any field edited without re-chaining is named.
  JobLineageRecord edited = r;
  edited.mutable_job()->mutable_dataset()->mutable_shards(0)->set_sha256(std::string(64, 'f'));
  auto s = RecomputeLineageChain(edited, 2);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("job j1 was changed"), std::string::npos) << s.status().ToString();
  edited = r;
  edited.mutable_generations(0)->mutable_members(2)->set_host("elsewhere");
  s = RecomputeLineageChain(edited, 2);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("generation 1 was changed"), std::string::npos);
  // A generation after the checkpoint's does not matter to it.
  edited = r;
  edited.mutable_generations(2)->set_cause("rewritten");
  EXPECT_TRUE(RecomputeLineageChain(edited, 2).ok());
  // A missing generation is named.
  edited = r;
  edited.mutable_generations()->DeleteSubrange(0, 1);
  s = RecomputeLineageChain(edited, 2);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("lacks generation 1"), std::string::npos) << s.status().ToString();
  // A job record cannot pass for a generation record: the digests are domain-tagged.
  EXPECT_NE(JobLineageDigest(r.job()), GenerationLineageDigest("", GenerationLineage()));
}

TEST(LineageDigest, VerifyComparesTheSignedDigestWithTheStore) {
  JobLineageRecord r = Record();
  const CheckpointLineage& c = r.checkpoints(0);
  auto verdict = [&](const JobLineageRecord& rec, const std::string& lineage_digest, const std::string& parent) {
    return VerifyCheckpointLineage(c.manifest_digest(), "j1", 100, parent, lineage_digest, rec);
  };
  EXPECT_TRUE(verdict(r, c.lineage_digest(), c.parent_digest()).ok) << verdict(r, c.lineage_digest(), c.parent_digest()).problem;
  // Records edited and re-chained consistently: only the signed digest tells.
  JobLineageRecord forged = r;
  forged.mutable_job()->mutable_dataset()->set_manifest_digest(std::string(64, '0'));
  forged.mutable_job()->set_digest(JobLineageDigest(forged.job()));
  std::string head = forged.job().digest();
  for (auto& g : *forged.mutable_generations()) {
    g.set_digest(GenerationLineageDigest(head, g));
    head = g.digest();
  }
  forged.mutable_checkpoints(0)->set_lineage_digest(forged.generations(1).digest());
  LineageVerdict v = verdict(forged, c.lineage_digest(), c.parent_digest());
  EXPECT_FALSE(v.ok);
  EXPECT_NE(v.problem.find("lineage digest"), std::string::npos) << v.problem;
  forged.mutable_checkpoints(0)->set_lineage_digest(c.lineage_digest());
  v = verdict(forged, c.lineage_digest(), c.parent_digest());
  EXPECT_FALSE(v.ok);
  EXPECT_NE(v.problem.find("differs from the digest signed"), std::string::npos) << v.problem;
  // A parent that disagrees with the manifest, a manifest without a digest.
  EXPECT_NE(verdict(r, c.lineage_digest(), std::string(64, '9')).problem.find("parent"), std::string::npos);
  EXPECT_FALSE(verdict(r, "", c.parent_digest()).ok);
}

TEST(LineageRender, TextJsonAndDotAnswerTheQuestions) {
  LineageResponse l;
  *l.add_jobs() = Record();
  l.set_checkpoint_digest(std::string(64, 'd'));
  const std::string text = LineageText(l);
  for (const char* want : {"checkpoint dddd", "job j1", "shard shard-00000.rec", "filter near on", "generations:",
                           "rank 2 j1/m2@host2", "not recorded by this coordinator"})
    EXPECT_NE(text.find(want), std::string::npos) << want << "\n" << text;
  auto js = nlohmann::json::parse(LineageJson(l));
  EXPECT_EQ(js["ancestry"].size(), 1u);
  EXPECT_EQ(js["jobs"][0]["generations"].size(), 3u);
  const std::string dot = LineageDot(l);
  EXPECT_EQ(dot.rfind("digraph lineage {", 0), 0u);
  EXPECT_NE(dot.find("\"parent of\""), std::string::npos);
}

TEST(OpenLineage, EventsCarryRunJobInputsAndOutputs) {
  JobLineageRecord r = Record();
  LineageEventInput in;
  in.event_type = "START";
  in.unix_ms = 1765100000123;
  in.job_namespace = "shoal://host";
  in.job = r.job();
  in.generation = &r.generations(0);
  auto e = nlohmann::json::parse(BuildOpenLineageEvent(in));
  EXPECT_EQ(e["eventType"], "START");
  EXPECT_EQ(e["eventTime"], "2025-12-07T09:33:20.123Z");
  EXPECT_TRUE(std::regex_match(e["run"]["runId"].get<std::string>(),
                               std::regex("[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")));
  EXPECT_EQ(e["run"]["runId"], OpenLineageRunId("j1"));
  EXPECT_NE(OpenLineageRunId("j1"), OpenLineageRunId("j2"));
  EXPECT_EQ(e["job"]["name"], "mlp");
  EXPECT_EQ(e["inputs"][0]["facets"]["version"]["datasetVersion"], std::string(64, 'b'));
  EXPECT_EQ(e["run"]["facets"]["shoal_generation"]["members"].size(), 3u);
  for (auto& [name, facet] : e["run"]["facets"].items()) {
    EXPECT_TRUE(facet.contains("_producer")) << name;
    EXPECT_TRUE(facet.contains("_schemaURL")) << name;
  }
  in.event_type = "FAIL";
  in.generation = nullptr;
  in.error = "below workers.min";
  in.outputs = {r.checkpoints(0)};
  e = nlohmann::json::parse(BuildOpenLineageEvent(in));
  EXPECT_EQ(e["run"]["facets"]["errorMessage"]["message"], "below workers.min");
  EXPECT_EQ(e["outputs"][0]["facets"]["version"]["datasetVersion"], std::string(64, 'd'));
}

}  // namespace
}  // namespace shoal
