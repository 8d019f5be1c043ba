// What the lineage records as "the code": this binary's version (project version and
// git commit), how it was built, and the versions of the libraries it links.
#pragma once

#include "lineage.pb.h"

namespace shoal {

LineageCode ThisBuildCode();

}  // namespace shoal
