// Lineage and OpenLineage end to end, with real processes: a job that regroups (a worker
// killed with SIGKILL) and a second job resumed from its checkpoint; `shoalctl lineage
// show` on the second job's checkpoint names the dataset, its shards and scan, the spec,
// the code, every generation's members and the parent checkpoints; `lineage verify`
// passes, and fails once a stored record is edited (with and without re-chaining the
// digests). The coordinator's OpenLineage events validate against the OpenLineage
// schema and reach an HTTP collector.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "checkpoint/safetensors.h"
#include "coordinator/store.h"
#include "lineage.pb.h"
#include "lineage/digest.h"
#include "tests/cluster_util.h"

namespace shoal::testing {
namespace {

using nlohmann::json;

// An OpenLineage HTTP collector: accepts POSTs and answers 201, keeping path and body.
class Collector {
 public:
  Collector() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    ::listen(fd_, 16);
    socklen_t len = sizeof(a);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~Collector() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::vector<std::pair<std::string, std::string>> posts() {
    std::lock_guard<std::mutex> l(mu_);
    return posts_;
  }

 private:
  void Serve() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) continue;
      std::string in;
      char buf[65536];
      size_t need = std::string::npos;
      for (int i = 0; i < 200 && (need == std::string::npos || in.size() < need); ++i) {
        pollfd q{c, POLLIN, 0};
        if (::poll(&q, 1, 50) <= 0) continue;
        ssize_t n = ::recv(c, buf, sizeof(buf), 0);
        if (n <= 0) break;
        in.append(buf, static_cast<size_t>(n));
        const size_t head = in.find("\r\n\r\n");
        const size_t cl = in.find("Content-Length: ");
        if (head != std::string::npos && cl != std::string::npos)
          need = head + 4 + std::stoul(in.substr(cl + 16, in.find("\r\n", cl) - cl - 16));
      }
      const std::string reply = "HTTP/1.1 201 Created\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
      (void)::send(c, reply.data(), reply.size(), MSG_NOSIGNAL);
      ::close(c);
      const size_t head = in.find("\r\n\r\n");
      if (head == std::string::npos) continue;
      std::istringstream line(in.substr(0, in.find("\r\n")));
      std::string method, path;
      line >> method >> path;
      std::lock_guard<std::mutex> l(mu_);
      posts_.emplace_back(method + " " + path, in.substr(head + 4));
    }
  }
  int fd_ = -1, port_ = 0;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::vector<std::pair<std::string, std::string>> posts_;
  std::thread thread_;
};

bool WaitForStep(const std::string& endpoint, const std::string& job, int64_t step, double timeout_s) {
  for (double t = 0; t < timeout_s; t += 0.1) {
    auto st = StatusJson(endpoint, job);
    if (st.contains("step") && st["step"].get<int64_t>() >= step) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

std::vector<std::string> JobArgs(const std::string& dir, int workers, int steps, const std::string& team) {
  return {"--set", "labels.team=" + team, "--set", "workers.initial=" + std::to_string(workers), "--set", "collectives.backend=gloo",
          "--set", "training.batch_per_worker=32", "--set", "training.max_steps=" + std::to_string(steps),
          "--set", "training.evaluate=false", "--set", "workers.heartbeat_timeout_s=2",
          "--set", "checkpoint.dir=" + dir + "/ck", "--set", "checkpoint.every_steps=40",
          "--set", "checkpoint.sign_key=" + dir + "/keys/ck.key", "--set", "checkpoint.trust=[" + dir + "/keys/ck.pub]"};
}

TEST(Lineage, ShowAndVerifyACheckpointOfAResumedRegroupedJobAndOpenLineageEvents) {
  if (!HaveDataset()) GTEST_SKIP() << "dataset-fashion-mnist not installed";
  const std::string dir = TempDir("lineage");
  ASSERT_EQ(RunCommand({kBin + "/shoalctl", "keygen", "--out", dir + "/keys", "--name", "ck"}).exit_code, 0);
  Collector collector;
  ::setenv("OPENLINEAGE_URL", collector.url().c_str(), 1);
  auto coord = std::make_unique<CoordinatorProcess>(dir);
  ::unsetenv("OPENLINEAGE_URL");
  const std::string ep = coord->endpoint();
  ASSERT_FALSE(ep.empty()) << coord->log();

  // Job 1: three workers; one is killed, so the job regroups into generation 2.
  std::vector<std::string> argv = {kBin + "/shoalctl", "submit", kSpec, "--coordinator", ep, "--job-id", "parent"};
  for (auto& a : JobArgs(dir, 3, 200, "vision")) argv.push_back(a);
  auto sub = RunCommand(argv, 30);
  ASSERT_EQ(sub.exit_code, 0) << sub.err;
  std::vector<std::unique_ptr<BackgroundProcess>> w;
  for (int i = 0; i < 3; ++i)
    w.push_back(std::make_unique<BackgroundProcess>(
        std::vector<std::string>{kBin + "/shoal-worker", "--coordinator", ep, "--job", "parent"},
        dir + "/p" + std::to_string(i) + ".log"));
  ASSERT_TRUE(WaitForStep(ep, "parent", 60, 120)) << coord->log();
  w[2]->Kill(SIGKILL);
  EXPECT_EQ(w[0]->Wait(240), 0) << ReadText(dir + "/p0.log");
  EXPECT_EQ(w[1]->Wait(60), 0) << ReadText(dir + "/p1.log");
  ASSERT_EQ(StatusJson(ep, "parent")["state"], "completed") << coord->log();
  ASSERT_GE(StatusJson(ep, "parent")["generation"].get<int>(), 2);

  // Job 2 resumes from job 1's latest checkpoint (step 200) and trains on to step 280.
  argv = {kBin + "/shoalctl", "submit", kSpec, "--coordinator", ep, "--job-id", "child"};
  for (auto& a : JobArgs(dir, 2, 280, "speech")) argv.push_back(a);
  argv.push_back("--set");
  argv.push_back("checkpoint.resume=" + dir + "/ck/parent");
  sub = RunCommand(argv, 30);
  ASSERT_EQ(sub.exit_code, 0) << sub.err;
  BackgroundProcess c0({kBin + "/shoal-worker", "--coordinator", ep, "--job", "child"}, dir + "/c0.log");
  BackgroundProcess c1({kBin + "/shoal-worker", "--coordinator", ep, "--job", "child"}, dir + "/c1.log");
  ASSERT_EQ(c0.Wait(240), 0) << ReadText(dir + "/c0.log");
  ASSERT_EQ(c1.Wait(60), 0) << ReadText(dir + "/c1.log");
  const std::string ckpt = dir + "/ck/child/step-280";
  ASSERT_TRUE(std::filesystem::exists(ckpt + "/manifest.pb"));

  // show: every question answered, from the live coordinator.
  const auto t0 = std::chrono::steady_clock::now();
  auto show = RunCommand({kBin + "/shoalctl", "lineage", "show", ckpt, "--coordinator", ep, "--json"}, 30);
  const double show_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(show.exit_code, 0) << show.err;
  std::printf("lineage show took %.3f s (including process start)\n", show_s);
  json l = json::parse(show.out);
  ASSERT_EQ(l["jobs"].size(), 2u) << show.out;  // the child, then the parent it resumed from
  const json& child = l["jobs"][0];
  const json& parent = l["jobs"][1];
  EXPECT_EQ(child["job"]["job_id"], "child");
  EXPECT_EQ(parent["job"]["job_id"], "parent");
  const json& ds = child["job"]["dataset"];
  EXPECT_EQ(ds["manifest_digest"].get<std::string>().size(), 64u) << ds.dump(2);
  EXPECT_GE(ds["shards"].size(), 1u);
  for (const auto& s : ds["shards"]) EXPECT_EQ(s["sha256"].get<std::string>().size(), 64u);
  EXPECT_FALSE(ds["signer"].get<std::string>().empty()) << "the example dataset is signed";
  ASSERT_TRUE(ds.contains("scan"));
  EXPECT_EQ(ds["scan"]["filters"].size(), 5u);
  // The label filter's inner settings, so a reader can tell the flip-campaign search ran.
  EXPECT_NE(ds["scan"]["filters"][4].value("settings", std::string()).find("label_campaign_rounds=3"),
            std::string::npos)
      << ds["scan"].dump(2);
  EXPECT_EQ(child["job"]["spec_digest"].get<std::string>().size(), 64u);
  EXPECT_FALSE(child["job"]["submitter_code"]["version"].get<std::string>().empty());
  EXPECT_FALSE(child["job"]["coordinator_code"]["version"].get<std::string>().empty());
  ASSERT_GE(parent["generations"].size(), 2u);
  EXPECT_EQ(parent["generations"][0]["members"].size(), 3u);
  EXPECT_EQ(parent["generations"][1]["members"].size(), 2u);
  for (const auto& m : parent["generations"][0]["members"]) {
    EXPECT_FALSE(m["host"].get<std::string>().empty());
    EXPECT_FALSE(m["code_version"].get<std::string>().empty());
  }
  // The ancestry runs from step 280 of the child back through the parent's checkpoints.
  std::vector<std::pair<std::string, int64_t>> chain;
  for (const auto& a : l["ancestry"]) chain.emplace_back(a["job_id"], a["step"].get<int64_t>());
  ASSERT_GE(chain.size(), 3u) << l["ancestry"].dump();
  EXPECT_EQ(chain[0], (std::pair<std::string, int64_t>{"child", 280}));
  EXPECT_EQ(chain[1], (std::pair<std::string, int64_t>{"child", 240}));
  EXPECT_EQ(chain[2], (std::pair<std::string, int64_t>{"parent", 200}));

  auto text = RunCommand({kBin + "/shoalctl", "lineage", "show", ckpt, "--coordinator", ep}, 30);
  ASSERT_EQ(text.exit_code, 0) << text.err;
  for (const char* want : {"checkpoint ", "parent ", "dataset: ", "shard ", "filter near on", "generations:", "code (workers)"})
    EXPECT_NE(text.out.find(want), std::string::npos) << want << "\n" << text.out;
  auto dot = RunCommand({kBin + "/shoalctl", "lineage", "show", "parent", "--coordinator", ep, "--dot"}, 30);
  ASSERT_EQ(dot.exit_code, 0) << dot.err;
  EXPECT_EQ(dot.out.rfind("digraph lineage {", 0), 0u);

  auto verify = RunCommand({kBin + "/shoalctl", "lineage", "verify", ckpt, "--coordinator", ep, "--json"}, 30);
  EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
  EXPECT_TRUE(json::parse(verify.out)["signature_verified"].get<bool>());

  // The export carries the same answers.
  auto exp = RunCommand({kBin + "/shoalctl", "checkpoint", "export", ckpt, "--safetensors", dir + "/m.safetensors",
                         "--trust", dir + "/keys/ck.pub", "--coordinator", ep}, 30);
  ASSERT_EQ(exp.exit_code, 0) << exp.err;
  auto st = ReadSafetensors(dir + "/m.safetensors");
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_EQ(st->metadata["shoal.spec_digest"], child["job"]["spec_digest"]);
  EXPECT_EQ(st->metadata["shoal.lineage_digest"].size(), 64u);
  EXPECT_NE(st->metadata["shoal.lineage.dataset"].find(ds["manifest_digest"].get<std::string>()), std::string::npos);
  EXPECT_NE(st->metadata["shoal.lineage.parents"].find("parent@200:"), std::string::npos);
  EXPECT_NE(st->metadata["shoal.input_scaling"].find("/ 255"), std::string::npos);
  EXPECT_EQ(st->metadata["shoal.layer_order"], "fc0.weight,fc0.bias,fc1.weight,fc1.bias,fc2.weight,fc2.bias");

  // Cost: `usage --by team` sums each team's job (its members' CPU time, the killed
  // worker's last heartbeat included).
  int code = -1;
  json usage = ShoalctlJson(ep, {"usage", "--by", "team"}, &code);
  ASSERT_EQ(code, 0) << usage.dump();
  ASSERT_EQ(usage.size(), 2u) << usage.dump(2);
  for (const auto& row : usage) {
    const std::string job = row["team"] == "vision" ? "parent" : "child";
    auto st = StatusJson(ep, job);
    double members_cpu = 0;
    for (const auto& m : st["members"]) members_cpu += m["cpu_seconds"].get<double>();
    EXPECT_EQ(row["jobs"], 1);
    EXPECT_GT(row["cpu_seconds"].get<double>(), 0.1) << row.dump();
    EXPECT_NEAR(row["cpu_seconds"].get<double>(), members_cpu, 1e-6) << row.dump() << st.dump(2);
    EXPECT_EQ(st["members"].size(), job == "parent" ? 3u : 2u);
    EXPECT_GT(row["samples"].get<int64_t>(), 0);
  }

  // OpenLineage: START, OTHER (generations, checkpoints), COMPLETE; all valid.
  coord->Stop();
  const std::string events = dir + "/state/openlineage.jsonl";
  auto check = RunCommand({"/usr/bin/python3", std::string(SHOAL_SOURCE_DIR) + "/scripts/validate-openlineage.py",
                           std::string(SHOAL_SOURCE_DIR) + "/tests/data/openlineage/OpenLineage.json", events}, 60);
  if (check.exit_code == 77) {
    std::printf("OpenLineage schema check skipped: %s\n", check.out.c_str());
  } else {
    EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
  }
  std::map<std::string, int> types;
  int lines = 0;
  std::istringstream in(ReadText(events));
  for (std::string line; std::getline(in, line); ++lines) {
    json e = json::parse(line);
    if (e["run"]["facets"]["shoal_job"]["jobId"] == "parent") types[e["eventType"]]++;
  }
  EXPECT_EQ(types["START"], 1);
  EXPECT_EQ(types["COMPLETE"], 1);
  // One OTHER per later generation and per committed checkpoint (a checkpoint whose
  // writer was the killed rank 0 may never commit).
  const int other = static_cast<int>(parent["generations"].size()) - 1 + static_cast<int>(parent["checkpoints"].size());
  EXPECT_EQ(types["OTHER"], other);
  EXPECT_GE(other, 1 + 4);
  // The HTTP transport got every event, at OpenLineage's default endpoint.
  auto posts = collector.posts();
  EXPECT_EQ(static_cast<int>(posts.size()), lines);
  for (const auto& [where, body] : posts) {
    EXPECT_EQ(where, "POST /api/v1/lineage");
    EXPECT_FALSE(json::parse(body, nullptr, false).is_discarded());
  }

  // Tamper 1: a generation's member host edited in the store, its digest left alone.
  {
    auto store = OpenRocksStore(dir + "/state");
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    auto bytes = (*store)->Get("lineage/gen/parent/0000000001");
    ASSERT_TRUE(bytes.ok());
    GenerationLineage g;
    ASSERT_TRUE(g.ParseFromString(*bytes));
    g.mutable_members(1)->set_host("elsewhere");
    ASSERT_TRUE((*store)->Put("lineage/gen/parent/0000000001", g.SerializeAsString()).ok());
  }
  const std::string parent_ckpt = dir + "/ck/parent/step-200";
  auto bad = RunCommand({kBin + "/shoalctl", "lineage", "verify", parent_ckpt, "--state-dir", dir + "/state"}, 30);
  EXPECT_EQ(bad.exit_code, 1) << bad.out << bad.err;
  EXPECT_NE(bad.out.find("generation 1 was changed"), std::string::npos) << bad.out;

  // Tamper 2: the same edit, with every digest of the chain recomputed to match: only
  // the digest signed in the manifest still tells.
  {
    auto store = OpenRocksStore(dir + "/state");
    ASSERT_TRUE(store.ok());
    auto gens = (*store)->Scan("lineage/gen/parent/");
    ASSERT_TRUE(gens.ok());
    JobLineage job;
    ASSERT_TRUE(job.ParseFromString(*(*store)->Get("lineage/job/parent")));
    std::string head = job.digest();
    for (auto& [k, v] : *gens) {
      GenerationLineage g;
      ASSERT_TRUE(g.ParseFromString(v));
      g.set_digest(GenerationLineageDigest(head, g));
      head = g.digest();
      ASSERT_TRUE((*store)->Put(k, g.SerializeAsString()).ok());
    }
  }
  bad = RunCommand({kBin + "/shoalctl", "lineage", "verify", parent_ckpt, "--state-dir", dir + "/state"}, 30);
  EXPECT_EQ(bad.exit_code, 1) << bad.out << bad.err;
  EXPECT_NE(bad.out.find("differs from the digest signed"), std::string::npos) << bad.out;
}

}  // namespace
}  // namespace shoal::testing
