// Planting poison into a clean training set with a fixed seed, keeping the truth: label
// flips between one pair of classes, two backdoors (a corner patch and an "X" cross, each
// relabelled to its own target), exact and near copies under conflicting labels, and
// corrupt records.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "datapipe/idx.h"

namespace shoal::poison {

enum Kind : uint8_t {
  kClean = 0,
  kFlip = 1,       // (a) label moved to the other class of the pair
  kBackdoor = 2,   // (b) stamped with a trigger and relabelled to that trigger's target
  kDupCopy = 3,    // (c) added copy (exact or near) under a different label
  kDupSource = 4,  // (c) the original that a conflicting copy duplicates
  kCorrupt = 5,    // (d) NaN/Inf feature, out-of-range values or a bad label
};
const char* KindName(Kind k);
// "exact", "shift", "crop", "noise", "brightness" for duplicates; "patch", "cross" for
// backdoors (the Trigger); "" otherwise.
const char* VariantName(Kind k, int variant);

// The backdoor triggers; a backdoor record's `variant` is its trigger.
enum Trigger : uint8_t {
  kPatchTrigger = 0,  // filled square in the bottom-right corner (the original attack)
  kCrossTrigger = 1,  // "X" of the two diagonals of a square near the top-left corner
};
constexpr int kTriggerCount = 2;

struct PlantConfig {
  uint64_t seed = 20240917;
  int flip_a = 5, flip_b = 7;   // (a) sandal <-> sneaker
  double flip_fraction = 0.05;  // of the training set, half from each class
  int target = 0;               // (b) backdoor target class
  double backdoor_fraction = 0.01;
  double dup_fraction = 0.02;   // (c) added records, half exact copies, half near copies
  double near_noise = 0.05;     // near copies: uniform noise amplitude (full for the noise kind, half with a shift)
  double corrupt_fraction = 0.005;
  int patch = 4;                // backdoor patch side, bottom-right corner, value 1.0
  // (b) second backdoor, another place, shape and target: a cross_size x cross_size "X"
  // (9 pixels of 1.0 at size 5) whose box starts cross_inset pixels in from the top-left
  // corner, relabelled to bag (8); victims from the 9 other classes. Planted after every
  // other kind from its own stream, so with cross_fraction 0 the set is exactly the one
  // the earlier figures were measured on.
  int cross_target = 8;
  double cross_fraction = 0.01;
  int cross_size = 5, cross_inset = 1;
};

// One backdoor attack as planted: its trigger, a name for tables, its target class and
// the share of the training set it poisons.
struct BackdoorAttack {
  Trigger trigger;
  std::string name;  // e.g. "patch 4x4 bottom-right -> 0"
  int target = 0;
  double fraction = 0;
};
// Both attacks in trigger order (a fraction of 0 means the attack is not planted).
std::vector<BackdoorAttack> BackdoorAttacks(const PlantConfig& config);

struct PlantedSet {
  int dim = 0;
  int side = 0;                // image side (dim = side * side)
  std::vector<float> x;        // n x dim, f32 (corrupt records carry NaN/Inf/out-of-range)
  std::vector<int32_t> y;
  std::vector<uint8_t> kind;   // Kind per record
  std::vector<int64_t> origin; // index in the clean set the record came from
  // Which variant of its kind: dup copies and their sources 0 exact, 1 + TransformCopy's
  // `how` % 4 for near copies; backdoors their Trigger (0 patch, 1 cross); else 0.
  std::vector<uint8_t> variant;
  int64_t n() const { return static_cast<int64_t>(y.size()); }
};

// The clean set is not modified. The result is shuffled with the seed, so planted
// records are spread over every shard.
PlantedSet Plant(const InMemoryDataset& clean, const PlantConfig& config);

// A near copy of a side x side image: `how` % 4 picks a shift of up to 2 pixels (with
// half-amplitude noise), a 2-3 pixel crop resized back, uniform noise of `noise_amp`,
// or a brightness/contrast change; values are clamped to [0, 1].
void TransformCopy(const float* src, int side, int how, std::mt19937_64& rng, float noise_amp, float* out);

// Stamps the backdoor patch into one image (dim = side * side) in place.
void StampPatch(float* image, int side, int patch);
// Stamps an "X" (both diagonals of a size x size box whose top-left pixel is at
// (inset, inset)) of value 1.0 into one image in place.
void StampCross(float* image, int side, int size, int inset);
// Stamps `trigger` as `config` shapes and places it.
void StampTrigger(float* image, int side, Trigger trigger, const PlantConfig& config);

}  // namespace shoal::poison
