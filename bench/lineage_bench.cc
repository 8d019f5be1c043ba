// How long `shoalctl lineage show` and `lineage verify` take to answer from a large
// lineage: one job with many generations (each with many members) and many checkpoints,
// plus a parent job, in a real RocksDB store. Times the store lookup, rendering and the
// chain recomputation, in process and through the shoalctl binary (--state-dir), side by side.
//
//   lineage_bench [--generations 1000] [--members 64] [--checkpoints 1000] [--repeats 7]
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "common/median.h"
#include "coordinator/lineage_book.h"
#include "coordinator/store.h"
#include "lineage/digest.h"
#include "lineage/render.h"

using namespace shoal;

namespace {
double Seconds(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string Hex(uint64_t n) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(n));
  return std::string(buf) + std::string(buf) + std::string(buf) + std::string(buf);
}

void RecordJob(StateStore* store, const std::string& id, int generations, int members, int checkpoints,
               const std::string& first_parent, std::string* last_digest) {
  LineageBook book(store);
  JobLineage j;
  j.set_job_id(id);
  j.set_name("bench");
  j.set_spec_digest(Hex(1));
  j.mutable_dataset()->set_dir("/data/fashion-mnist");
  j.mutable_dataset()->set_manifest_digest(Hex(2));
  for (int s = 0; s < 6; ++s) {
    LineageShard* sh = j.mutable_dataset()->add_shards();
    sh->set_file("shard-0000" + std::to_string(s) + ".rec");
    sh->set_sha256(Hex(100 + s));
    sh->set_records(10000);
  }
  for (const char* f : {"schema", "exact", "near", "outliers", "label"}) {
    LineageFilter* lf = j.mutable_dataset()->mutable_scan()->add_filters();
    lf->set_name(f);
    lf->set_enabled(true);
    lf->set_version("2");
  }
  if (!book.RecordJob(j).ok()) std::abort();
  for (int g = 1; g <= generations; ++g) {
    GenerationLineage gl;
    gl.set_job_id(id);
    gl.set_number(g);
    gl.set_cause(g == 1 ? "start" : "member dead");
    for (int m = 0; m < members; ++m) {
      LineageMember* lm = gl.add_members();
      lm->set_id(id + "/m" + std::to_string(m + g));
      lm->set_host("host-" + std::to_string(m));
      lm->set_rank(m);
      lm->set_code_version("0.1.0+bench");
    }
    std::string digest;
    auto entry = book.GenerationEntry(gl, &digest);
    if (!store->Put(entry.first, entry.second).ok()) std::abort();
  }
  std::string parent = first_parent;
  for (int c = 1; c <= checkpoints; ++c) {
    CheckpointLineage cl;
    cl.set_manifest_digest(Hex((static_cast<uint64_t>(std::hash<std::string>{}(id)) << 20) + c));
    cl.set_job_id(id);
    cl.set_step(c * 100);
    cl.set_generation(1 + (c - 1) * generations / checkpoints);
    cl.set_parent_digest(parent);
    cl.set_lineage_digest(book.HeadOf(id, cl.generation()));
    if (!book.RecordCheckpoint(cl).ok()) std::abort();
    parent = cl.manifest_digest();
  }
  *last_digest = parent;
}
}  // namespace

int main(int argc, char** argv) {
  int generations = 1000, members = 64, checkpoints = 1000, repeats = 7;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const int v = std::atoi(argv[i + 1]);
    if (a == "--generations") generations = v;
    else if (a == "--members") members = v;
    else if (a == "--checkpoints") checkpoints = v;
    else if (a == "--repeats") repeats = v;
  }
  const std::string dir = std::filesystem::temp_directory_path() / ("lineage-bench-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::string parent_last, child_last;
  {
    auto store = OpenRocksStore(dir);
    if (!store.ok()) return 1;
    RecordJob(store->get(), "parent", generations, members, checkpoints, "", &parent_last);
    RecordJob(store->get(), "child", generations, members, checkpoints, parent_last, &child_last);
  }
  std::vector<double> lookup, text, verify, cli;
  size_t text_bytes = 0;
  for (int r = 0; r < repeats; ++r) {
    {
      auto store = OpenRocksStore(dir);
      LineageBook book(store->get());
      auto t0 = std::chrono::steady_clock::now();
      LineageRequest req;
      req.set_checkpoint_digest(child_last);
      auto l = book.Lookup(req);
      if (!l.ok()) return 1;
      lookup.push_back(Seconds(t0));
      t0 = std::chrono::steady_clock::now();
      text_bytes = LineageText(*l).size();
      text.push_back(Seconds(t0));
      t0 = std::chrono::steady_clock::now();
      if (!RecomputeLineageChain(l->jobs(0), generations).ok()) return 1;
      verify.push_back(Seconds(t0));
    }
    const std::string cmd = std::string(SHOAL_BIN_DIR) + "/shoalctl lineage show " + child_last.substr(0, 16) +
                            " --state-dir " + dir + " --json > /dev/null 2>&1";
    auto t0 = std::chrono::steady_clock::now();
    if (std::system(cmd.c_str()) != 0) return 1;
    cli.push_back(Seconds(t0));
  }
  auto range = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    char buf[96];
    std::snprintf(buf, sizeof(buf), "%.3f s [%.3f, %.3f]", Median(v), v.front(), v.back());
    return std::string(buf);
  };
  std::printf("lineage of 2 jobs x %d generations x %d members, %d checkpoints each (%zu bytes of text), %d repeats:\n",
              generations, members, checkpoints, text_bytes, repeats);
  std::printf("  store lookup (both jobs)      %s\n", range(lookup).c_str());
  std::printf("  text rendering                %s\n", range(text).c_str());
  std::printf("  chain recomputation (verify)  %s\n", range(verify).c_str());
  std::printf("  shoalctl lineage show --json  %s  (process start, RocksDB open, lookup, JSON)\n", range(cli).c_str());
  std::filesystem::remove_all(dir);
  return 0;
}
