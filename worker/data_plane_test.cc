#include "worker/data_plane.h"

#include <gtest/gtest.h>

#include <cstdlib>

namespace shoal {
namespace {

TEST(DataPlaneTest, LoopbackAddressAndNameMapToTheLoopbackInterface) {
  EXPECT_EQ(*InterfaceOf("127.0.0.1"), "lo");
  EXPECT_EQ(*InterfaceOf("lo"), "lo");
  EXPECT_EQ(*InterfaceOf("localhost"), "lo");
}

TEST(DataPlaneTest, AnAddressNoInterfaceHasIsNotFound) {
  auto r = InterfaceOf("192.0.2.77");  // TEST-NET-1: never local
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("192.0.2.77"), std::string::npos);
}

TEST(DataPlaneTest, ConfineSetsOnlyWhatTheUserLeftUnset) {
  ::unsetenv("NCCL_SOCKET_IFNAME");
  ::setenv("OMPI_MCA_btl_tcp_if_include", "eth9", 1);
  auto set = ConfineDataPlane("lo");
  ASSERT_EQ(set.size(), 1u);
  EXPECT_EQ(set[0], "NCCL_SOCKET_IFNAME=lo");
  EXPECT_STREQ(std::getenv("NCCL_SOCKET_IFNAME"), "lo");
  EXPECT_STREQ(std::getenv("OMPI_MCA_btl_tcp_if_include"), "eth9");
}

}  // namespace
}  // namespace shoal
