// The codecs over the MPI backend under mpirun (-np 1..4, one process per rank): the
// same layouts, steps and checks as the Gloo grid in codec_test.cc, with each rank's
// outcome allgathered so that every rank can run the cross-rank checks.
#include <mpi.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>

#include "collectives/compression/codec_test_util.h"
#include "collectives/mpi/mpi_communicator.h"

namespace shoal::compression {
namespace {

using testing::Outcome;

// Every rank's outcome, via the communicator under test.
std::vector<Outcome> GatherOutcomes(Communicator* comm, const Outcome& mine) {
  const int n = comm->size();
  const size_t count = mine.out.size(), per = 4 * count * sizeof(float);
  std::vector<float> packed;
  for (const auto* v : {&mine.x, &mine.out, &mine.contribution, &mine.residual}) {
    packed.insert(packed.end(), v->begin(), v->end());
  }
  std::vector<float> all(4 * count * n);
  const Status s = comm->AllGather(packed.data(), all.data(), per, {});
  EXPECT_TRUE(s.ok()) << s.ToString();
  std::vector<Outcome> out(n);
  for (int r = 0; r < n; ++r) {
    const float* base = all.data() + 4 * count * r;
    out[r].x.assign(base, base + count);
    out[r].out.assign(base + count, base + 2 * count);
    out[r].contribution.assign(base + 2 * count, base + 3 * count);
    out[r].residual.assign(base + 3 * count, base + 4 * count);
  }
  return out;
}

class CodecMpiTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CodecMpiTest, MatchesReferenceAndConserves) {
  const std::string name = GetParam();
  auto made = MakeMpiCommunicator();
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  Communicator* comm = made->get();
  const int n = comm->size(), r = comm->rank();
  auto codec = testing::Make(testing::Options(name));
  ASSERT_TRUE(codec);
  const auto layouts = testing::Layouts();
  int64_t want = 0;
  for (size_t l = 0; l < layouts.size(); ++l) {
    for (int s = 0; s < 3; ++s) {
      Outcome mine;
      const auto input = testing::Gradient(r, layouts[l].count, l * 10 + s);
      const Status st = testing::Step(codec.get(), comm, layouts[l], input, l, s, &mine);
      ASSERT_TRUE(st.ok()) << layouts[l].label << " step " << s << ": " << st.ToString();
      want += testing::UncompressedBytes(layouts[l].count, n);
      const auto all = GatherOutcomes(comm, mine);
      testing::CheckStep(name, all, layouts[l].label + " step " + std::to_string(s) + " (mpi)",
                         /*inputs_only=*/s == 0);
    }
  }
  EXPECT_EQ(codec->stats().bytes_uncompressed, want);
  ASSERT_EQ(MPI_Barrier(MPI_COMM_WORLD), MPI_SUCCESS);
}

INSTANTIATE_TEST_SUITE_P(Mpi, CodecMpiTest,
                         ::testing::Values("none", "bf16", "fp16", "powersgd", "qblock", "qblock4",
                                           "topk"));

}  // namespace
}  // namespace shoal::compression

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  {
    auto probe = shoal::MakeMpiCommunicator();
    if (!probe.ok()) {
      std::fprintf(stderr, "%s\n", probe.status().ToString().c_str());
      return 1;
    }
  }
  const int rc = RUN_ALL_TESTS();
  shoal::FinalizeMpiIfInitialized();
  return rc;
}
