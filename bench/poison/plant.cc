// Planting, in a fixed order from one seeded generator so a seed always gives the same
// poisoned set: pick disjoint victims for (a), (b), (d) and sources for (c), modify or
// copy them, then the second backdoor's victims, then shuffle everything.
#include "bench/poison/plant.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "datapipe/partition.h"

namespace shoal::poison {

const char* KindName(Kind k) {
  switch (k) {
    case kClean: return "clean";
    case kFlip: return "flip";
    case kBackdoor: return "backdoor";
    case kDupCopy: return "dup-copy";
    case kDupSource: return "dup-source";
    case kCorrupt: return "corrupt";
  }
  return "?";
}

const char* VariantName(Kind k, int v) {
  static const char* const kDup[] = {"exact", "shift", "crop", "noise", "brightness"};
  static const char* const kTrigger[kTriggerCount] = {"patch", "cross"};
  if ((k == kDupCopy || k == kDupSource) && v >= 0 && v < 5) return kDup[v];
  if (k == kBackdoor && v >= 0 && v < kTriggerCount) return kTrigger[v];
  return "";
}

std::vector<BackdoorAttack> BackdoorAttacks(const PlantConfig& cfg) {
  const std::string patch = std::to_string(cfg.patch), cross = std::to_string(cfg.cross_size),
                    inset = std::to_string(cfg.cross_inset);
  return {
      {kPatchTrigger, "patch " + patch + "x" + patch + " bottom-right -> " + std::to_string(cfg.target), cfg.target,
       cfg.backdoor_fraction},
      {kCrossTrigger, "cross " + cross + "x" + cross + " at (" + inset + "," + inset + ") -> " +
       std::to_string(cfg.cross_target), cfg.cross_target, cfg.cross_fraction},
  };
}

void TransformCopy(const float* src, int side, int how, std::mt19937_64& rng, float noise_amp, float* out) {
  const int dim = side * side;
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  auto at = [&](int r, int c) { return r < 0 || c < 0 || r >= side || c >= side ? 0.0f : src[r * side + c]; };
  switch (how % 4) {
    case 0: {  // shift by 1-2 pixels in both directions, plus light noise
      const int dr = static_cast<int>(rng() % 5) - 2, dc = static_cast<int>(rng() % 5) - 2;
      for (int r = 0; r < side; ++r)
        for (int c = 0; c < side; ++c) out[r * side + c] = std::clamp(at(r - dr, c - dc) + 0.5f * noise_amp * u(rng), 0.0f, 1.0f);
      break;
    }
    case 1: {  // crop 2-3 pixels off every side and resize back (bilinear)
      const int m = 2 + static_cast<int>(rng() % 2);
      const float scale = static_cast<float>(side - 2 * m) / side;
      for (int r = 0; r < side; ++r)
        for (int c = 0; c < side; ++c) {
          const float y = m + (r + 0.5f) * scale - 0.5f, x = m + (c + 0.5f) * scale - 0.5f;
          const int y0 = static_cast<int>(std::floor(y)), x0 = static_cast<int>(std::floor(x));
          const float fy = y - y0, fx = x - x0;
          out[r * side + c] = (1 - fy) * ((1 - fx) * at(y0, x0) + fx * at(y0, x0 + 1)) +
                              fy * ((1 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1));
        }
      break;
    }
    case 2:  // uniform noise of the full amplitude on every pixel
      for (int j = 0; j < dim; ++j) out[j] = std::clamp(src[j] + noise_amp * u(rng), 0.0f, 1.0f);
      break;
    default: {  // brightness and contrast: a * x + b, a in [0.75, 1.25], b in [-0.1, 0.1]
      const float a = 1.0f + 0.25f * u(rng), b = 0.1f * u(rng);
      for (int j = 0; j < dim; ++j) out[j] = std::clamp(a * src[j] + b, 0.0f, 1.0f);
    }
  }
}

void StampPatch(float* image, int side, int patch) {
  for (int r = side - patch; r < side; ++r)
    for (int c = side - patch; c < side; ++c) image[r * side + c] = 1.0f;
}

void StampCross(float* image, int side, int size, int inset) {
  for (int k = 0; k < size; ++k) {
    const int r = inset + k, down = inset + k, up = inset + size - 1 - k;
    if (r >= side) break;
    if (down < side) image[r * side + down] = 1.0f;
    if (up < side) image[r * side + up] = 1.0f;
  }
}

void StampTrigger(float* image, int side, Trigger trigger, const PlantConfig& cfg) {
  if (trigger == kCrossTrigger)
    StampCross(image, side, cfg.cross_size, cfg.cross_inset);
  else
    StampPatch(image, side, cfg.patch);
}

PlantedSet Plant(const InMemoryDataset& clean, const PlantConfig& cfg) {
  const int64_t n = clean.n;
  const int dim = clean.dim;
  std::mt19937_64 rng(cfg.seed);
  auto uniform = [&](int64_t bound) { return static_cast<int64_t>(rng() % static_cast<uint64_t>(bound)); };

  std::vector<uint8_t> kind(n, kClean), variant(n, 0);
  std::vector<int32_t> y(clean.y.begin(), clean.y.end());
  std::vector<float> x(clean.x.begin(), clean.x.end());
  // Each kind draws its victims from its own seeded order of the records, skipping any
  // already used, so no kind is starved of a class by the kinds planted before it.
  std::vector<uint32_t> order;
  size_t next = 0;
  auto start_kind = [&](int64_t stream) {
    order = EpochPermutation(static_cast<uint64_t>(n), cfg.seed, stream);
    next = 0;
  };
  auto take = [&](auto pred) -> int64_t {
    while (next < order.size()) {
      int64_t i = order[next++];
      if (kind[i] == kClean && pred(i)) return i;
    }
    return -1;
  };

  // (a) symmetric flips: half the budget from each class of the pair.
  const int64_t flips = std::llround(cfg.flip_fraction * n);
  int64_t got_a = 0, got_b = 0;
  start_kind(10);
  for (size_t k = 0; k < order.size() && got_a + got_b < flips; ++k) {
    int64_t i = order[k];
    if (kind[i] != kClean) continue;
    if (y[i] == cfg.flip_a && got_a < flips / 2) {
      y[i] = cfg.flip_b, kind[i] = kFlip, ++got_a;
    } else if (y[i] == cfg.flip_b && got_b < flips - flips / 2) {
      y[i] = cfg.flip_a, kind[i] = kFlip, ++got_b;
    }
  }
  const int side = static_cast<int>(std::lround(std::sqrt(dim)));
  // (b) a backdoor: images of other classes, stamped with the trigger and relabelled to
  // its target, victims from the attack's own stream.
  auto plant_backdoor = [&](const BackdoorAttack& attack, int64_t stream) {
    const int64_t count = std::llround(attack.fraction * n);
    start_kind(stream);
    for (int64_t k = 0; k < count; ++k) {
      int64_t i = take([&](int64_t r) { return y[r] != attack.target; });
      if (i < 0) break;
      StampTrigger(x.data() + i * dim, side, attack.trigger, cfg);
      y[i] = attack.target, kind[i] = kBackdoor, variant[i] = attack.trigger;
    }
  };
  const std::vector<BackdoorAttack> attacks = BackdoorAttacks(cfg);
  plant_backdoor(attacks[kPatchTrigger], 11);
  // (d) corrupt records, in three equal groups.
  const int64_t corrupt = std::llround(cfg.corrupt_fraction * n);
  start_kind(12);
  for (int64_t k = 0; k < corrupt; ++k) {
    int64_t i = take([](int64_t) { return true; });
    if (i < 0) break;
    float* r = x.data() + i * dim;
    kind[i] = kCorrupt;
    switch (k % 3) {
      case 0:  // a few non-finite features (NaN, or Inf for every other one)
        for (int j = 0; j < 1 + static_cast<int>(k % 4); ++j)
          r[uniform(dim)] = (k % 2) ? INFINITY : NAN;
        break;
      case 1:  // values outside [0, 1]: one blown-up region or a negative pixel
        if (k % 2) {
          for (int j = 0; j < dim; ++j) r[j] *= 3.0f;
          r[uniform(dim)] = 2.5f;  // at least one pixel out of range even for a dark image
        } else {
          r[uniform(dim)] = -0.5f;
        }
        break;
      default:  // labels outside [0, classes)
        y[i] = (k % 2) ? -1 : clean.num_classes + static_cast<int32_t>(uniform(200));
    }
  }
  // (c) conflicting copies: half exact, half near; sources keep their label.
  const int64_t dups = std::llround(cfg.dup_fraction * n);
  start_kind(13);
  std::vector<float> add_x;
  std::vector<int32_t> add_y;
  std::vector<int64_t> add_origin;
  std::vector<uint8_t> add_variant;
  for (int64_t k = 0; k < dups; ++k) {
    int64_t i = take([](int64_t) { return true; });
    if (i < 0) break;
    kind[i] = kDupSource;
    int32_t other = static_cast<int32_t>((y[i] + 1 + uniform(clean.num_classes - 1)) % clean.num_classes);
    const float* src = x.data() + i * dim;
    if (k % 2) {  // near copy: shift, crop, noise or brightness/contrast, in turn
      std::vector<float> t(dim);
      TransformCopy(src, side, static_cast<int>(k / 2), rng, static_cast<float>(cfg.near_noise), t.data());
      add_x.insert(add_x.end(), t.begin(), t.end());
    } else {
      add_x.insert(add_x.end(), src, src + dim);
    }
    add_y.push_back(other);
    add_origin.push_back(i);
    variant[i] = k % 2 ? static_cast<uint8_t>(1 + (k / 2) % 4) : 0;
    add_variant.push_back(variant[i]);
  }
  // The second backdoor comes last: nothing planted before it draws from the generator
  // or the records differently, so the other kinds are exactly as without it.
  plant_backdoor(attacks[kCrossTrigger], 14);

  // Assemble and shuffle.
  const int64_t total = n + static_cast<int64_t>(add_y.size());
  std::vector<uint32_t> shuffle = EpochPermutation(static_cast<uint64_t>(total), cfg.seed, 1);
  PlantedSet out;
  out.dim = dim;
  out.side = side;
  out.x.resize(static_cast<size_t>(total) * dim);
  out.y.resize(total);
  out.kind.resize(total);
  out.origin.resize(total);
  out.variant.resize(total);
  for (int64_t k = 0; k < total; ++k) {
    int64_t s = shuffle[k];
    const float* src = s < n ? x.data() + s * dim : add_x.data() + (s - n) * dim;
    std::copy(src, src + dim, out.x.data() + k * dim);
    out.y[k] = s < n ? y[s] : add_y[s - n];
    out.kind[k] = s < n ? kind[s] : static_cast<uint8_t>(kDupCopy);
    out.origin[k] = s < n ? s : add_origin[s - n];
    out.variant[k] = s < n ? variant[s] : add_variant[s - n];
  }
  return out;
}

}  // namespace shoal::poison
