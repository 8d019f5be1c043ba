// A standalone driver for LLVMFuzzerTestOneInput targets, for builds without libFuzzer
// (the default compiler is g++). It mutates the target's seeds (and any files given)
// blindly for a bounded time, so CTest can run every target for a few seconds.
//   fuzz_<target> [--seconds N] [--seed S] [FILE...]      (SHOAL_FUZZ_SECONDS overrides)
//   fuzz_<target> --write-seeds DIR    (seed corpus for fuzz_<target>_libfuzzer DIR)
// A target that throws, or crashes, fails the test; the input is written to
// fuzz-crash-<target>.bin in the working directory first, so it can be replayed.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
// Defined by each target: well-formed inputs to start mutating from.
std::vector<std::string> ShoalFuzzSeeds();
extern const char kShoalFuzzTarget[];

namespace {

constexpr size_t kMaxLen = 1 << 16;
constexpr size_t kMaxCorpus = 512;

std::string current_input;  // saved on a crash so it can be replayed

void SaveCrash() {
  std::string path = std::string("fuzz-crash-") + kShoalFuzzTarget + ".bin";
  std::ofstream(path, std::ios::binary) << current_input;
  std::fprintf(stderr, "fuzz: input saved to %s (%zu bytes)\n", path.c_str(), current_input.size());
}

class Mutator {
 public:
  explicit Mutator(uint64_t seed) : rng_(seed) {}
  size_t Pick(size_t n) { return n == 0 ? 0 : std::uniform_int_distribution<size_t>(0, n - 1)(rng_); }

  std::string RandomInput() {
    std::string s(Pick(512), '\0');
    for (auto& c : s) c = static_cast<char>(Pick(256));
    return s;
  }

  // One to eight edits of the kinds that break parsers: bit flips, interesting bytes,
  // inserted/deleted/duplicated ranges, splices with another input, truncation.
  std::string Mutate(std::string s, const std::vector<std::string>& corpus) {
    static const uint8_t kInteresting[] = {0, 1, 0x7f, 0x80, 0xff, '"', '\\', '{', '}', '[', ']', ',', ':', '-', '9'};
    for (size_t n = 1 + Pick(8); n > 0; --n) {
      size_t pos = Pick(s.size() + 1);
      switch (Pick(8)) {
        case 0: if (!s.empty()) s[Pick(s.size())] ^= static_cast<char>(1u << Pick(8)); break;
        case 1: if (!s.empty()) s[Pick(s.size())] = static_cast<char>(kInteresting[Pick(sizeof(kInteresting))]); break;
        case 2: s.insert(pos, std::string(1 + Pick(16), static_cast<char>(Pick(256)))); break;
        case 3: if (pos < s.size()) s.erase(pos, 1 + Pick(std::min<size_t>(64, s.size() - pos))); break;
        case 4: if (pos < s.size()) s.insert(Pick(s.size()), s.substr(pos, 1 + Pick(32))); break;
        case 5: {
          const std::string& o = corpus[Pick(corpus.size())];
          size_t from = Pick(o.size() + 1);
          // Half the time the rest of s stays: inputs that are sequences (the coordinator
          // targets' requests) would otherwise lose their tail at nearly every splice.
          s = s.substr(0, pos) + o.substr(from, Pick(o.size() - from + 1)) + (Pick(2) ? s.substr(pos) : "");
          break;
        }
        case 6: s.resize(Pick(s.size() + 1)); break;
        default: {  // overwrite a little-endian integer with a boundary value
          static const uint64_t kValues[] = {0, 1, 0x7fffffff, 0x80000000, 0xffffffff, ~0ull, 1ull << 62};
          uint64_t v = kValues[Pick(sizeof(kValues) / 8)];
          size_t len = std::min<size_t>(1 + Pick(8), 8);
          if (pos + len <= s.size()) std::memcpy(&s[pos], &v, len);
        }
      }
    }
    if (s.size() > kMaxLen) s.resize(kMaxLen);
    return s;
  }

 private:
  std::mt19937_64 rng_;
};

bool RunOne(const std::string& input) {
  current_input = input;
  try {
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()), input.size());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz: %s threw: %s\n", kShoalFuzzTarget, e.what());
    return false;
  } catch (...) {
    std::fprintf(stderr, "fuzz: %s threw a non-std exception\n", kShoalFuzzTarget);
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 5;
  uint64_t seed = 20240611;
  std::vector<std::string> corpus = ShoalFuzzSeeds();
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--seconds" && i + 1 < argc) seconds = std::atof(argv[++i]);
    else if (a == "--seed" && i + 1 < argc) seed = std::strtoull(argv[++i], nullptr, 10);
    else if (a == "--write-seeds" && i + 1 < argc) {  // a starting corpus for libFuzzer
      std::string dir = argv[++i];
      for (size_t k = 0; k < corpus.size(); ++k)
        std::ofstream(dir + "/seed-" + std::to_string(k), std::ios::binary) << corpus[k];
      std::printf("wrote %zu seeds to %s\n", corpus.size(), dir.c_str());
      return 0;
    }
    else {
      std::ifstream f(a, std::ios::binary);
      std::stringstream ss;
      ss << f.rdbuf();
      corpus.push_back(ss.str());
    }
  }
  if (const char* env = std::getenv("SHOAL_FUZZ_SECONDS")) seconds = std::atof(env);
  if (corpus.empty()) corpus.push_back("");
  std::set_terminate([] {
    SaveCrash();
    std::abort();
  });

  for (const auto& s : corpus)
    if (!RunOne(s)) return (SaveCrash(), 1);
  Mutator m(seed);
  const size_t seeds = corpus.size();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  uint64_t runs = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    for (int batch = 0; batch < 64; ++batch, ++runs) {
      // Half the mutants start from a seed: stacked edits drift towards short inputs
      // (truncations, splices), and a target whose inputs are sequences needs length.
      const size_t base = m.Pick(2) ? m.Pick(seeds) : m.Pick(corpus.size());
      std::string input = m.Pick(10) == 0 ? m.RandomInput() : m.Mutate(corpus[base], corpus);
      if (!RunOne(input)) return (SaveCrash(), 1);
      // Without coverage feedback, keep a bounded random sample of mutants so edits can
      // stack up over generations.
      if (m.Pick(16) == 0) {
        if (corpus.size() < kMaxCorpus) corpus.push_back(std::move(input));
        else if (corpus.size() > seeds) corpus[seeds + m.Pick(corpus.size() - seeds)] = std::move(input);
      }
    }
  }
  std::printf("fuzz %s: %llu inputs in %.1f s from %zu seeds, no crash\n", kShoalFuzzTarget,
              static_cast<unsigned long long>(runs), seconds, seeds);
  return 0;
}
