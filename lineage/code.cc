#include "lineage/code.h"

#include "checkpoint/format.h"

#ifndef SHOAL_BUILD_TYPE
#define SHOAL_BUILD_TYPE "unknown"
#endif

namespace shoal {

LineageCode ThisBuildCode() {
  LineageCode c;
  c.set_version(CodeVersion());
  std::string build = SHOAL_BUILD_TYPE;
#if defined(__clang__)
  build += std::string(", clang ") + __VERSION__;
#elif defined(__VERSION__)
  build += std::string(", gcc ") + __VERSION__;
#endif
  c.set_build(build);
  for (const auto& [k, v] : LinkedDependencyVersions()) (*c.mutable_dependency_versions())[k] = v;
  return c;
}

}  // namespace shoal
