// SgdMomentum: the update loop and the checkpoint byte format of its momentum buffer.
// The update is one fused pass per tensor so the optimizer reads each element once.
#include "worker/optim/sgd.h"

#include <algorithm>
#include <bit>
#include <cassert>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace shoal {
namespace {

// The state is written as raw host floats; every platform Shoal runs on is little-endian,
// and this keeps a big-endian build from silently writing unreadable checkpoints.
static_assert(std::endian::native == std::endian::little, "SGD state format assumes little-endian");

constexpr char kMagic[4] = {'S', 'G', 'D', 'M'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderBytes = 4 + 4 + 1 + 8;

// Templated on the two per-step choices so the inner loop carries no branches.
template <bool kFirst, bool kNesterov>
void Update(float* p, const float* g, float* buf, size_t n, float lr, float mu, float wd) {
  for (size_t k = 0; k < n; ++k) {
    const float d = g[k] + wd * p[k];
    const float b = kFirst ? d : mu * buf[k] + d;
    buf[k] = b;
    p[k] -= lr * (kNesterov ? d + mu * b : b);
  }
}

}  // namespace

Status ValidateSgdOptions(const SgdOptions& o) {
  if (!std::isfinite(o.lr) || o.lr < 0) return InvalidArgument("optimizer.lr must be finite and >= 0");
  if (!std::isfinite(o.momentum) || o.momentum < 0) {
    return InvalidArgument("optimizer.momentum must be finite and >= 0");
  }
  if (!std::isfinite(o.weight_decay) || o.weight_decay < 0) {
    return InvalidArgument("optimizer.weight_decay must be finite and >= 0");
  }
  if (o.nesterov && o.momentum <= 0) {
    return InvalidArgument("optimizer.nesterov needs optimizer.momentum > 0");
  }
  return OkStatus();
}

SgdMomentum::SgdMomentum(const SgdOptions& options, size_t num_parameters)
    : options_(options), momentum_(num_parameters, 0.0f) {}

void SgdMomentum::Step(std::vector<ParamTensor>& params, float lr) {
  const float mu = options_.momentum, wd = options_.weight_decay;
  size_t offset = 0;
  for (ParamTensor& t : params) {
    assert(offset + t.numel <= momentum_.size());
    float* buf = momentum_.data() + offset;
    if (!initialized_) {
      if (options_.nesterov) Update<true, true>(t.data, t.grad, buf, t.numel, lr, mu, wd);
      else Update<true, false>(t.data, t.grad, buf, t.numel, lr, mu, wd);
    } else {
      if (options_.nesterov) Update<false, true>(t.data, t.grad, buf, t.numel, lr, mu, wd);
      else Update<false, false>(t.data, t.grad, buf, t.numel, lr, mu, wd);
    }
    offset += t.numel;
  }
  assert(offset == momentum_.size());
  initialized_ = true;
}

void SgdMomentum::Reset() {
  std::fill(momentum_.begin(), momentum_.end(), 0.0f);
  initialized_ = false;
}

size_t SgdMomentum::StateBytes() const { return kHeaderBytes + momentum_.size() * sizeof(float); }

std::string SgdMomentum::StateHeader() const {
  std::string out(kHeaderBytes, '\0');
  const uint64_t count = momentum_.size();
  std::memcpy(out.data(), kMagic, 4);
  std::memcpy(out.data() + 4, &kVersion, 4);
  out[8] = initialized_ ? 1 : 0;
  std::memcpy(out.data() + 9, &count, 8);
  return out;
}

std::string SgdMomentum::SaveState() const {
  std::string out = StateHeader();
  out.append(reinterpret_cast<const char*>(momentum_.data()), momentum_.size() * sizeof(float));
  return out;
}

Status SgdMomentum::LoadState(const std::string& bytes) {
  if (bytes.size() < kHeaderBytes || std::memcmp(bytes.data(), kMagic, 4) != 0) {
    return InvalidArgument("optimizer state is not SGD momentum state (bad header, " +
                           std::to_string(bytes.size()) + " bytes)");
  }
  uint32_t version = 0;
  uint64_t count = 0;
  std::memcpy(&version, bytes.data() + 4, 4);
  std::memcpy(&count, bytes.data() + 9, 8);
  const uint8_t init = static_cast<uint8_t>(bytes[8]);
  if (version != kVersion || init > 1) {
    return InvalidArgument("optimizer state has version " + std::to_string(version) + ", flag " +
                           std::to_string(init) + "; this build reads version 1");
  }
  if (count != momentum_.size()) {
    return InvalidArgument("optimizer state holds " + std::to_string(count) + " momentum values but the model has " +
                           std::to_string(momentum_.size()) + " parameters; was it saved for another model?");
  }
  if (bytes.size() != kHeaderBytes + count * sizeof(float)) {
    return InvalidArgument("optimizer state is " + std::to_string(bytes.size()) + " bytes, expected " +
                           std::to_string(kHeaderBytes + count * sizeof(float)) + " (truncated or padded)");
  }
  if (count) std::memcpy(momentum_.data(), bytes.data() + kHeaderBytes, count * sizeof(float));
  initialized_ = init == 1;
  return OkStatus();
}

}  // namespace shoal
