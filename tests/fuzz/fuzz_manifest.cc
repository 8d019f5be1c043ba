// Fuzz target: the checkpoint manifest parser (ParseManifest), the gate between
// manifest.pb bytes on disk and the reader. Whatever it accepts must re-serialize to
// bytes that parse to the same manifest.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include <google/protobuf/stubs/logging.h>

#include "checkpoint/format.h"
#include "checkpoint/test_util.h"

extern const char kShoalFuzzTarget[] = "manifest";

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // protobuf logs every string field with invalid UTF-8; millions of lines help nobody.
  static google::protobuf::LogSilencer silence;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  auto m = shoal::ParseManifest(in);
  if (m.ok()) {
    std::string again = shoal::SerializeManifest(*m);
    auto m2 = shoal::ParseManifest(again);
    if (!m2.ok() || shoal::SerializeManifest(*m2) != again) std::abort();
  }
  return 0;
}

// Valid manifests of 1 and 3 shards (tensors crossing shard boundaries), with versions,
// without and with rank states.
std::vector<std::string> ShoalFuzzSeeds() {
  std::vector<std::string> seeds;
  for (int world : {1, 3}) {
    shoal::TrainerSnapshot snap = shoal::testing::MakeSnapshot(world, 2048, 42);
    auto m = shoal::BuildManifest(snap);
    if (!m.ok()) continue;
    uint64_t total = shoal::TotalBytes(snap);
    for (int r = 0; r < world; ++r) {
      auto* s = m->add_shards();
      s->set_file(shoal::ShardFileName(r, world));
      s->set_rank(r);
      s->set_length(shoal::SliceForRank(total, r, world).size());
      s->set_sha256(std::string(64, 'e'));
    }
    std::vector<uint64_t> ends;
    for (int r = 0; r < world; ++r) ends.push_back(shoal::SliceForRank(total, r, world).end);
    for (auto& t : *m->mutable_tensors()) {
      int shard = 0;
      while (shard < world - 1 && ends[shard] <= t.offset()) ++shard;
      t.set_shard(shard);
    }
    m->set_parent_digest(std::string(64, 'f'));
    (*m->mutable_dependency_versions())["nccl"] = "2.18.5";
    seeds.push_back(shoal::SerializeManifest(*m));
    // The same with a rank state per rank (format 2), so mutations reach their checks.
    m->set_world_size(world);
    for (int r = 0; r < world; ++r) {
      auto state = shoal::BuildRankState({shoal::testing::MakeRankState(7, r, 100 + r)}, r, world);
      if (!state.ok()) continue;
      state->set_sha256(std::string(64, 'd'));
      *m->add_rank_states() = *state;
    }
    seeds.push_back(shoal::SerializeManifest(*m));
  }
  seeds.push_back("");
  return seeds;
}
