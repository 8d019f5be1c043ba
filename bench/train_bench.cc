// Training throughput of 1 vs 2 workers through `shoalctl run`, alternated in one run,
// with each run's time split into sgemm, communication and the rest.
//   build/bin/train_bench [--repeats 3] [--steps 600] [--json]
// Both worker counts train the same example model for the same number of steps;
// samples/s counts global samples (2 workers process twice the samples per step).
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/median.h"

namespace {

using shoal::Median;

nlohmann::json RunOnce(const std::string& shoalctl, int workers, int steps) {
  std::string dir = "/tmp/shoal-train-bench-" + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::string cmd = "cd " + dir + " && " + shoalctl + " run " + SHOAL_SOURCE_DIR + "/examples/fashion-mnist.yaml --json --quiet" +
                    " --workers " + std::to_string(workers) + " --set training.max_steps=" + std::to_string(steps) +
                    " --set training.evaluate=false 2>/dev/null";
  FILE* p = ::popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while (p && (n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  int rc = p ? ::pclose(p) : -1;
  std::filesystem::remove_all(dir);
  auto j = nlohmann::json::parse(out, nullptr, false);
  if (rc != 0 || j.is_discarded()) {
    std::fprintf(stderr, "train_bench: run with %d worker(s) failed (exit %d)\n", workers, rc);
    std::exit(1);
  }
  return j;
}

}  // namespace

int main(int argc, char** argv) {
  int repeats = 3, steps = 600;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--repeats") && i + 1 < argc) repeats = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--steps") && i + 1 < argc) steps = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--json")) json = true;
    else {
      std::fprintf(stderr, "usage: train_bench [--repeats N] [--steps N] [--json]\n");
      return 2;
    }
  }
  std::string shoalctl = (std::filesystem::read_symlink("/proc/self/exe").parent_path() / "shoalctl").string();
  std::map<int, std::map<std::string, std::vector<double>>> m;
  for (int r = 0; r < repeats; ++r) {
    for (int w : {1, 2}) {
      auto s = RunOnce(shoalctl, w, steps);
      double wall = s["wall_seconds"].get<double>();
      m[w]["samples_per_second"].push_back(s["samples_per_second"].get<double>());
      m[w]["sgemm_share"].push_back(s["sgemm_seconds"].get<double>() / wall);
      m[w]["comm_share"].push_back(s["comm_seconds"].get<double>() / wall);
      m[w]["other_share"].push_back(1 - (s["sgemm_seconds"].get<double>() + s["comm_seconds"].get<double>()) / wall);
      m[w]["step_ms"].push_back(1000 * wall / s["steps"].get<double>());
      if (!json) std::fprintf(stderr, "  repeat %d, %d worker(s): %.0f samples/s\n", r + 1, w, m[w]["samples_per_second"].back());
    }
  }
  nlohmann::json out = {{"steps", steps}, {"repeats", repeats}};
  for (int w : {1, 2})
    for (auto& [k, v] : m[w]) out["workers_" + std::to_string(w)][k] = Median(v);
  out["speedup_2_over_1"] = out["workers_2"]["samples_per_second"].get<double>() / out["workers_1"]["samples_per_second"].get<double>();
  if (json) {
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }
  std::printf("example model, %d steps, median of %d runs\n", steps, repeats);
  std::printf("%8s %12s %9s %8s %8s %8s\n", "workers", "samples/s", "step ms", "sgemm", "comm", "other");
  for (int w : {1, 2}) {
    auto& o = out["workers_" + std::to_string(w)];
    std::printf("%8d %12.0f %9.2f %7.0f%% %7.0f%% %7.0f%%\n", w, o["samples_per_second"].get<double>(),
                o["step_ms"].get<double>(), 100 * o["sgemm_share"].get<double>(), 100 * o["comm_share"].get<double>(),
                100 * o["other_share"].get<double>());
  }
  std::printf("speed-up 2 workers / 1 worker: %.2fx\n", out["speedup_2_over_1"].get<double>());
  return 0;
}
