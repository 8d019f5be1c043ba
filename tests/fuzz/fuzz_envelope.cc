// Fuzz target: the DSSE envelope and in-toto statement parsers (common/signing) and the
// checkpoint signature checks built on them (ParseCheckpointSignature), unverified and
// against a trust store. None may crash or throw on hostile JSON or base64.
#include <cstdint>
#include <string>
#include <vector>

#include "checkpoint/format.h"
#include "checkpoint/reader.h"
#include "checkpoint/writer.h"
#include "common/signing.h"

extern const char kShoalFuzzTarget[] = "envelope";

namespace {
const shoal::KeyPair& Key() {
  static const shoal::KeyPair key = shoal::GenerateKeyPair();
  return key;
}
const shoal::TrustStore& Trust() {
  static const shoal::TrustStore trust = [] {
    shoal::TrustStore t;
    t.Add(Key().public_key);
    return t;
  }();
  return trust;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string in(reinterpret_cast<const char*>(data), size);
  auto env = shoal::ParseDsseUnverified(in);
  if (env.ok()) (void)shoal::ParseStatementSubjects(env->payload);
  (void)shoal::VerifyDsse(in, Trust());
  (void)shoal::ParseStatementSubjects(in);
  (void)shoal::ParseCheckpointSignature(in, nullptr);
  (void)shoal::ParseCheckpointSignature(in, &Trust());
  (void)shoal::Base64Decode(in);
  return 0;
}

// A real checkpoint envelope signed by the trusted key, its statement, and an envelope
// with two signatures.
std::vector<std::string> ShoalFuzzSeeds() {
  shoal::CheckpointManifest m;
  m.set_job_id("job");
  m.set_step(7);
  for (int r = 0; r < 2; ++r) {
    auto* s = m.add_shards();
    s->set_file(shoal::ShardFileName(r, 2));
    s->set_sha256(std::string(64, '1' + r));
  }
  std::string statement = shoal::MakeCheckpointStatement(m, std::string(64, 'a'));
  std::string envelope = shoal::SignDsse(shoal::kInTotoPayloadType, statement, Key());
  std::string two = envelope;
  size_t p = two.find("\"signatures\": [");
  if (p != std::string::npos)
    two.insert(p + 15, "{\"keyid\": \"0123456789abcdef\", \"sig\": \"" + shoal::Base64Encode(std::string(64, 'x')) + "\"},");
  return {envelope, statement, two, "{}", "{\"payload\":\"\",\"payloadType\":\"\",\"signatures\":[]}"};
}
