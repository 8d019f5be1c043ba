// Issue 20 items 3 and 7 end to end, with real processes: a 3-worker Gloo job traced
// over a range of steps, merged by `shoalctl trace` onto the coordinator's clock; and
// `shoalctl run` into a pipe printing the workers' log lines whole, with no terminal
// control codes.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "tests/cluster_util.h"

namespace shoal::testing {
namespace {

using nlohmann::json;

TEST(TimelineTrace, ThreeGlooWorkersMergeIntoOneAlignedTrace) {
  if (!HaveDataset()) GTEST_SKIP() << "dataset-fashion-mnist not installed";
  const std::string dir = TempDir("trace");
  CoordinatorProcess coord(dir);
  ASSERT_FALSE(coord.endpoint().empty()) << coord.log();
  // Steps [0, 40): the generation's set-up, a checkpoint after step 19, the evaluation
  // and the final save after step 40 all fall inside.
  auto submit = RunCommand({kBin + "/shoalctl", "submit", kSpec, "--coordinator", coord.endpoint(), "--job-id", "tr",
                            "--set", "training.max_steps=40", "--set", "collectives.backend=gloo", "--set",
                            "workers.initial=3", "--set", "checkpoint.dir=" + dir + "/ckpt", "--set",
                            "checkpoint.every_steps=20", "--set", "trace.step_begin=0", "--set", "trace.step_end=40",
                            "--set", "trace.dir=" + dir + "/traces"},
                           20);
  ASSERT_EQ(submit.exit_code, 0) << submit.err;
  std::vector<std::unique_ptr<BackgroundProcess>> workers;
  for (int w = 0; w < 3; ++w)
    workers.push_back(std::make_unique<BackgroundProcess>(
        std::vector<std::string>{kBin + "/shoal-worker", "--coordinator", coord.endpoint(), "--job", "tr"},
        dir + "/w" + std::to_string(w) + ".log"));
  for (int w = 0; w < 3; ++w)
    ASSERT_EQ(workers[w]->Wait(300), 0) << ReadText(dir + "/w" + std::to_string(w) + ".log");

  int exit_code = -1;
  json summary = ShoalctlJson(coord.endpoint(), {"trace", "tr", "-o", dir + "/trace.json"}, &exit_code);
  ASSERT_EQ(exit_code, 0) << summary.dump(2);
  EXPECT_EQ(summary["ranks"].size(), 3u) << summary.dump(2);
  EXPECT_GT(summary["events"].get<int64_t>(), 0);

  json merged = json::parse(ReadText(dir + "/trace.json"), nullptr, false);
  ASSERT_FALSE(merged.is_discarded()) << "the merged trace is not valid JSON";
  ASSERT_TRUE(merged["traceEvents"].is_array());
  EXPECT_EQ(merged["displayTimeUnit"], "ms");
  const int64_t slack_us = merged["otherData"]["max_clock_uncertainty_us"].get<int64_t>();

  // One track per rank, named with rank, member and host; its threads named.
  std::map<int, std::string> process_names;
  std::map<int, std::set<std::string>> thread_names, kinds;
  // (step, bucket) -> each rank's [begin, end] of that bucket's reduction.
  std::map<std::pair<int64_t, int64_t>, std::vector<std::pair<int64_t, int64_t>>> buckets;
  for (const json& e : merged["traceEvents"]) {
    const int pid = e["pid"];
    if (e["ph"] == "M" && e["name"] == "process_name") process_names[pid] = e["args"]["name"];
    if (e["ph"] == "M" && e["name"] == "thread_name") thread_names[pid].insert(e["args"]["name"].get<std::string>());
    if (e["ph"] != "X") continue;
    kinds[pid].insert(e["name"].get<std::string>());
    EXPECT_GE(e["dur"].get<int64_t>(), 0) << e.dump();
    EXPECT_GE(e["ts"].get<int64_t>(), 0) << e.dump();
    if (e["name"] == "reduce bucket") {
      EXPECT_GT(e["args"]["wire_bytes"].get<int64_t>(), 0) << e.dump();
      EXPECT_GT(e["args"]["raw_bytes"].get<int64_t>(), 0) << e.dump();
      EXPECT_EQ(e["args"]["codec"], "none");
      const int64_t ts = e["ts"];
      buckets[{e["args"]["step"], e["args"]["bucket"]}].push_back({ts, ts + e["dur"].get<int64_t>()});
    }
  }
  ASSERT_EQ(process_names.size(), 3u);
  for (int rank = 0; rank < 3; ++rank) {
    ASSERT_TRUE(process_names.count(rank)) << "no track for rank " << rank;
    EXPECT_NE(process_names[rank].find("rank " + std::to_string(rank)), std::string::npos) << process_names[rank];
    EXPECT_NE(process_names[rank].find("tr/m"), std::string::npos) << process_names[rank];
    EXPECT_TRUE(thread_names[rank].count("training")) << rank;
    EXPECT_TRUE(thread_names[rank].count("communication")) << rank;
    EXPECT_TRUE(thread_names[rank].count("checkpoint writer")) << rank;
    for (const char* kind : {"step", "loader wait", "forward", "backward", "reduce bucket", "reduction wait",
                             "optimizer", "checkpoint stall", "checkpoint final save", "checkpoint shard exchange",
                             "evaluate", "await assignment", "rendezvous", "state sync"})
      EXPECT_TRUE(kinds[rank].count(kind)) << "rank " << rank << " has no '" << kind << "' span";
  }
  // The allreduce synchronises the ranks: once aligned, the same bucket's reduction of
  // the same step overlaps on every rank (none can finish before all have started).
  ASSERT_FALSE(buckets.empty());
  int checked = 0;
  for (const auto& [key, spans] : buckets) {
    if (spans.size() != 3) continue;
    int64_t latest_begin = 0, earliest_end = INT64_MAX;
    for (const auto& [b, e] : spans) {
      latest_begin = std::max(latest_begin, b);
      earliest_end = std::min(earliest_end, e);
    }
    EXPECT_LE(latest_begin, earliest_end + slack_us) << "step " << key.first << " bucket " << key.second;
    ++checked;
  }
  EXPECT_GE(checked, 40) << "every traced step's buckets on all three ranks";
}

TEST(TimelineTrace, TracingOffOrNoFilesIsAClearError) {
  if (!HaveDataset()) GTEST_SKIP() << "dataset-fashion-mnist not installed";
  const std::string dir = TempDir("trace-none");
  CoordinatorProcess coord(dir);
  ASSERT_FALSE(coord.endpoint().empty()) << coord.log();
  auto submit = RunCommand({kBin + "/shoalctl", "submit", kSpec, "--coordinator", coord.endpoint(), "--job-id", "off",
                            "--set", "training.max_steps=10"},
                           20);
  ASSERT_EQ(submit.exit_code, 0) << submit.err;
  auto off = RunCommand({kBin + "/shoalctl", "trace", "off", "-o", dir + "/t.json", "--coordinator", coord.endpoint()}, 20);
  EXPECT_EQ(off.exit_code, 2);
  EXPECT_NE(off.err.find("traces nothing"), std::string::npos) << off.err;
  // A folder with a truncated rank file: the file is named.
  std::filesystem::create_directories(dir + "/t/job");
  { std::ofstream(dir + "/t/job/rank-0-job_m0.trace.json") << "{\"traceEvents\": [{\"ph\": \"X\""; }
  auto bad = RunCommand({kBin + "/shoalctl", "trace", "job", "-o", dir + "/t.json", "--dir", dir + "/t"}, 20);
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("rank-0-job_m0.trace.json is truncated or corrupt"), std::string::npos) << bad.err;
  auto none = RunCommand({kBin + "/shoalctl", "trace", "job", "-o", dir + "/t.json", "--dir", dir + "/empty"}, 20);
  EXPECT_EQ(none.exit_code, 2);
  EXPECT_NE(none.err.find("no trace files"), std::string::npos) << none.err;
}

// `shoalctl run` into a pipe: plain lines only, the workers' log lines whole (not cut
// by a progress line), and --json's stdout nothing but the summary.
TEST(RunConsole, OutputToAPipeHasWholeLinesAndNoControlCodes) {
  if (!HaveDataset()) GTEST_SKIP() << "dataset-fashion-mnist not installed";
  const std::string dir = TempDir("run-console");
  auto r = RunCommand({kBin + "/shoalctl", "run", kSpec, "--workers", "2", "--json", "--set", "training.max_steps=150"},
                      240, dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err.find('\r'), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find('\x1b'), std::string::npos) << r.err;
  const std::regex epoch_line(R"(^\[[0-9:.]+\] \[worker\[0\]\] \[info\] epoch 1: test accuracy 0\.[0-9]{4}$)");
  int epoch_lines = 0;
  std::istringstream lines(r.err);
  for (std::string line; std::getline(lines, line);) {
    if (line.find("test accuracy") == std::string::npos) continue;
    EXPECT_TRUE(std::regex_match(line, epoch_line)) << "a log line not whole: '" << line << "'";
    ++epoch_lines;
  }
  EXPECT_EQ(epoch_lines, 1) << r.err;
  auto summary = json::parse(r.out, nullptr, false);
  EXPECT_FALSE(summary.is_discarded()) << "stdout is not just the JSON summary: " << r.out;
}

}  // namespace
}  // namespace shoal::testing
