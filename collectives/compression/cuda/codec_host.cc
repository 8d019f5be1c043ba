// Host references for the CUDA codecs: whole-buffer qblock quantisation, top-k
// threshold and trimming, Gram-Schmidt and launch shapes, all on the per-element
// functions of codec_host.h so host and device compute the same thing.
#include "collectives/compression/cuda/codec_host.h"
#include "collectives/compression/codec_internal.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>

namespace shoal::gpu_codec {

void QuantizeRef(const float* x, size_t count, size_t block, int bits, uint64_t key, uint8_t* out) {
  for (size_t b0 = 0; b0 < count; b0 += block) {
    const size_t len = std::min(block, count - b0);
    float lo = x[b0], hi = x[b0];
    for (size_t i = 1; i < len; ++i) {
      lo = std::min(lo, x[b0 + i]);
      hi = std::max(hi, x[b0 + i]);
    }
    float step, inv;
    QStep(lo, hi, bits, &step, &inv);
    std::memcpy(out, &lo, sizeof(float));
    std::memcpy(out + sizeof(float), &step, sizeof(float));
    uint8_t* codes = out + kQHeader;
    auto code = [&](size_t i) { return QCode(x[b0 + i], lo, inv, QDither(key, b0, i), bits); };
    if (bits == 8) {
      for (size_t i = 0; i < len; ++i) codes[i] = static_cast<uint8_t>(code(i));
    } else {
      for (size_t i = 0; i < len; i += 2) {
        const uint32_t high = i + 1 < len ? code(i + 1) : 0;
        codes[i / 2] = static_cast<uint8_t>(code(i) | (high << 4));
      }
    }
    out += QBlockBytes(len, bits);
  }
}

void DequantizeRef(const uint8_t* in, size_t count, size_t block, int bits, float* out, bool add) {
  for (size_t b0 = 0; b0 < count; b0 += block) {
    const size_t len = std::min(block, count - b0);
    float lo, step;
    std::memcpy(&lo, in, sizeof(float));
    std::memcpy(&step, in + sizeof(float), sizeof(float));
    const uint8_t* codes = in + kQHeader;
    for (size_t i = 0; i < len; ++i) {
      const uint32_t c = bits == 8 ? codes[i] : (codes[i / 2] >> ((i & 1) * 4)) & 0xF;
      const float v = QDecode(lo, c, step);
      out[b0 + i] = add ? out[b0 + i] + v : v;
    }
    in += QBlockBytes(len, bits);
  }
}

size_t TopkK(size_t count, double ratio) {
  const size_t k = static_cast<size_t>(std::ceil(ratio * static_cast<double>(count)));
  return std::clamp<size_t>(k, 1, std::max<size_t>(count, 1));
}

float TopkThreshold(std::vector<float> mags, size_t count, size_t sample, double ratio) {
  if (mags.empty()) return 0.0f;
  size_t kth;
  if (count <= sample) {
    kth = TopkK(count, ratio) - 1;
  } else {
    kth = std::min(mags.size() - 1, static_cast<size_t>(ratio * static_cast<double>(mags.size())));
  }
  std::nth_element(mags.begin(), mags.begin() + kth, mags.end(), std::greater<float>());
  return mags[kth];
}

std::vector<uint32_t> TopkTrim(std::vector<uint32_t> chosen, const float* x, size_t k) {
  if (chosen.size() <= k) return chosen;
  std::nth_element(chosen.begin(), chosen.begin() + k, chosen.end(), [&](uint32_t a, uint32_t b) {
    const float fa = std::fabs(x[a]), fb = std::fabs(x[b]);
    return fa != fb ? fa > fb : a < b;
  });
  chosen.resize(k);
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

void OrthogonaliseRef(float* p, size_t rows, int r) { compression::Orthogonalise(p, rows, r); }

Launch ElementwiseLaunch(size_t n, unsigned threads, unsigned max_blocks) {
  Launch l;
  l.threads = threads;
  const size_t need = (n + threads - 1) / threads;
  l.blocks = static_cast<unsigned>(std::clamp<size_t>(need, 1, max_blocks));
  return l;
}

Launch QBlockLaunch(size_t count, size_t block) {
  Launch l;
  l.blocks = static_cast<unsigned>(std::max<size_t>(1, (count + block - 1) / block));
  // Round the block length up to whole warps; values past 1024 loop inside a thread.
  const size_t warps = (std::min<size_t>(block, 1024) + 31) / 32;
  l.threads = static_cast<unsigned>(warps * 32);
  return l;
}

}  // namespace shoal::gpu_codec
