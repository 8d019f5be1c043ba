// What the timeline trace costs a step: the example model (784-256-128-10, 64 samples
// per rank) trained by 2 ranks as threads over Gloo on synthetic data, with the trace
// off (no recorder: a job without `trace`), idle (a recorder whose range is elsewhere)
// and on (every step recorded), the three alternated in one run so that drift on a
// shared machine falls on all of them alike.
//   build/bin/trace_bench [--repeats 5] [--steps 400] [--json]
// Step time: rank 0's wall time per step over the steps after the first 50 (warm-up).
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "collectives/factory.h"
#include "collectives/memory_kv_store.h"
#include "common/clock.h"
#include "common/median.h"
#include "spec/jobspec_loader.h"
#include "worker/models/mlp.h"
#include "worker/trainer.h"

namespace shoal {
namespace {

constexpr int kWorld = 2, kWarmupSteps = 50;


struct RunResult {
  double step_ms = 0;
  size_t events = 0;
};

// mode: "off" (no recorder), "idle" (range past the run), "on" (every step).
RunResult RunOnce(const JobSpec& spec, const InMemoryDataset& train, const std::string& mode, int steps) {
  static int run = 0;
  MemoryKvStore kv;
  const std::string prefix = "trace-bench-" + std::to_string(run++) + "/";
  const std::string dir = "/tmp/shoal-trace-bench-" + std::to_string(::getpid());
  std::vector<std::unique_ptr<TraceRecorder>> recorders(kWorld);
  RunResult result;
  double warm_at = 0, end_at = 0;
  std::vector<std::thread> threads;
  for (int r = 0; r < kWorld; ++r) {
    if (mode != "off") {
      TraceOptions o;
      o.step_begin = mode == "on" ? 0 : steps + 1000;
      o.step_end = o.step_begin + steps + 1000;
      o.dir = dir;
      o.job_id = "bench";
      o.host = "bench";
      recorders[r] = std::make_unique<TraceRecorder>(o);
      recorders[r]->SetIdentity(r, "bench/m" + std::to_string(r));
    }
    threads.emplace_back([&, r] {
      CommunicatorConfig cc{"gloo", r, kWorld, &kv, prefix, std::chrono::seconds(30)};
      auto comm = MakeCommunicator(cc);
      std::vector<int> layers(spec.model().layers().begin(), spec.model().layers().end());
      auto model = MakeMlp(layers, spec.training().seed());
      if (!comm.ok() || !model.ok()) std::abort();
      TrainerInputs in;
      in.spec = &spec;
      in.train = &train;
      in.job_id = "bench";
      in.trace = recorders[r].get();
      TrainerHooks hooks;
      if (r == 0)
        hooks.on_metrics = [&](const WorkerMetrics& m) {
          if (m.step() == kWarmupSteps) warm_at = MonotonicSeconds();
          if (m.step() == steps) end_at = MonotonicSeconds();
        };
      auto trained = Train(in, comm->get(), model->get(), hooks);
      if (!trained.ok()) {
        std::fprintf(stderr, "trace_bench: %s\n", trained.status().ToString().c_str());
        std::abort();
      }
    });
  }
  for (auto& t : threads) t.join();
  result.step_ms = (end_at - warm_at) * 1000 / (steps - kWarmupSteps);
  if (recorders[0]) result.events = recorders[0]->recorded();
  std::filesystem::remove_all(dir);
  return result;
}

// The recorder's own cost per event on one thread: two clock reads and one Complete,
// as a ScopedSpan in a traced step makes, in a tight loop (ns per event).
double NanosPerEvent() {
  TraceOptions o;
  o.step_begin = 0;
  o.step_end = 1 << 20;
  o.capacity = 1 << 20;
  o.dir = "/tmp/unused";
  TraceRecorder r(o);
  r.AtStep(0);
  constexpr int kEvents = 1 << 20;
  const double start = MonotonicSeconds();
  for (int i = 0; i < kEvents; ++i) {
    ScopedSpan span(&r, "optimizer", "compute");
  }
  return (MonotonicSeconds() - start) * 1e9 / kEvents;
}

}  // namespace
}  // namespace shoal

int main(int argc, char** argv) {
  using namespace shoal;
  int repeats = 5, steps = 400;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--repeats") && i + 1 < argc) repeats = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--steps") && i + 1 < argc) steps = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--json")) json = true;
    else {
      std::fprintf(stderr, "usage: trace_bench [--repeats N] [--steps N] [--json]\n");
      return 2;
    }
  }
  steps = std::max(steps, kWarmupSteps + 10);
  auto spec = ParseJobSpec("model: {layers: [784, 256, 128, 10]}\n"
                           "training: {batch_per_worker: 64, evaluate: false, epochs: 100, max_steps: " +
                           std::to_string(steps) + "}\ncollectives: {backend: gloo}\n");
  if (!spec.ok()) {
    std::fprintf(stderr, "trace_bench: %s\n", spec.status().ToString().c_str());
    return 1;
  }
  SetBlasThreads(1);
  const InMemoryDataset train = RandomDataset(60000, 784, 10, 7);
  const std::vector<std::string> modes = {"off", "idle", "on"};
  std::map<std::string, std::vector<double>> ms;
  size_t events_on = 0;
  for (int rep = 0; rep < repeats; ++rep) {
    // Each repeat starts with another mode, so that none always runs first or last.
    for (size_t k = 0; k < modes.size(); ++k) {
      const std::string& mode = modes[(k + rep) % modes.size()];
      RunResult r = RunOnce(*spec, train, mode, steps);
      ms[mode].push_back(r.step_ms);
      if (mode == "on") events_on = r.events;
      if (!json) std::fprintf(stderr, "repeat %d %-4s %.3f ms/step\n", rep + 1, mode.c_str(), r.step_ms);
    }
  }
  const double ns_per_event = NanosPerEvent();
  const double events_per_step = static_cast<double>(events_on) / steps;
  nlohmann::json out = {{"steps", steps}, {"repeats", repeats}, {"world", kWorld}, {"events_per_run_rank0", events_on},
                        {"ns_per_event", ns_per_event}, {"events_per_step", events_per_step}};
  const double off = Median(ms["off"]);
  for (const std::string& mode : modes) {
    auto& v = ms[mode];
    const double med = Median(v);
    out[mode] = {{"median_ms", med},
                 {"min_ms", *std::min_element(v.begin(), v.end())},
                 {"max_ms", *std::max_element(v.begin(), v.end())},
                 {"vs_off_pct", off > 0 ? 100 * (med - off) / off : 0}};
  }
  if (json) {
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }
  std::printf("step time, %d steps x %d repeats, 2 ranks (Gloo, threads), 784-256-128-10, 64 per rank\n", steps, repeats);
  for (const std::string& mode : modes)
    std::printf("  %-4s median %.3f ms  range [%.3f, %.3f]  %+.2f%% vs off\n", mode.c_str(),
                out[mode]["median_ms"].get<double>(), out[mode]["min_ms"].get<double>(),
                out[mode]["max_ms"].get<double>(), out[mode]["vs_off_pct"].get<double>());
  std::printf("  events recorded per rank with the trace on: %zu (%.1f per step)\n", events_on, events_per_step);
  std::printf("  recorder alone: %.1f ns per event (two clock reads and a slot), so %.2f us per step = %.3f%% of the "
              "off median\n",
              ns_per_event, ns_per_event * events_per_step / 1000,
              off > 0 ? 100 * ns_per_event * events_per_step / 1e6 / off : 0);
  return 0;
}
