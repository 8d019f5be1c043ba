// The tensor types the collectives layer shares with the models above it: a named
// flat f32 parameter with its gradient, and the callback backward uses to hand it over.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace shoal {

// One layer weight or bias. The model owns the memory behind data and grad; the
// Reducer only reads and writes the gradient in place.
struct ParamTensor {
  std::string name;          // "fc0.weight", "fc0.bias", ...
  std::vector<int64_t> shape;
  float* data = nullptr;     // parameters
  float* grad = nullptr;     // gradient of the (scaled) loss
  size_t numel = 0;
};

// Called during backward with the index (into the params vector) of a tensor whose
// gradient is final, in the order backward produces them (last layer first), so
// communication of that gradient can start while backward goes on.
using GradReadyFn = std::function<void(size_t param_index)>;

}  // namespace shoal
