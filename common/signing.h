// Ed25519 signing (libsodium) wrapped in DSSE envelopes around in-toto Statement v1.
// Shared by checkpoints (model supply chain) and dataset manifests (data provenance).
// Key files are standard PEM (common/key_files.cc), readable by openssl.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "common/status.h"

namespace shoal {

struct PublicKey {
  std::string key_id;  // first 16 hex digits of SHA-256(public key bytes)
  std::string bytes;   // 32 raw bytes
};

struct KeyPair {
  PublicKey public_key;
  std::string secret;  // 64 raw bytes (libsodium's seed || public key form)
};

KeyPair GenerateKeyPair();
PublicKey MakePublicKey(const std::string& raw32);

// Key files (common/key_files.cc). WriteKeyPair writes DIR/<name>.key (mode 0600) as
// PEM PKCS#8 ("-----BEGIN PRIVATE KEY-----") and DIR/<name>.pub as PEM
// SubjectPublicKeyInfo ("-----BEGIN PUBLIC KEY-----"), what `openssl genpkey -algorithm
// ed25519` and `openssl pkey -pubout` write, so other tools can check Shoal's
// signatures; it refuses to overwrite an existing key. Loading tells the form by the
// content: that PEM (a key made by openssl loads), or the older Shoal text form
// "shoal-ed25519-secret v1\n<hex of seed||public>\n" / "shoal-ed25519-public v1\n<hex>\n".
Status WriteKeyPair(const KeyPair& key, const std::string& dir, const std::string& name = "shoal");
// Refuses a secret key file that group or others can read (like ssh does), an
// encrypted one and any key that is not Ed25519.
StatusOr<KeyPair> LoadSecretKey(const std::string& path);
StatusOr<PublicKey> LoadPublicKey(const std::string& path);
// The same from a file's text; `path` only names it in errors.
StatusOr<KeyPair> ParseSecretKey(const std::string& text, const std::string& path);
StatusOr<PublicKey> ParsePublicKey(const std::string& text, const std::string& path);
// The PEM forms WriteKeyPair writes.
StatusOr<std::string> SecretKeyPem(const KeyPair& key);
StatusOr<std::string> PublicKeyPem(const PublicKey& key);

// The keys a verifier trusts, by key id.
class TrustStore {
 public:
  void Add(const PublicKey& key) { keys_[key.key_id] = key; }
  Status AddFile(const std::string& path);
  const PublicKey* Find(const std::string& key_id) const;
  bool empty() const { return keys_.empty(); }
  size_t size() const { return keys_.size(); }

 private:
  std::map<std::string, PublicKey> keys_;
};

inline constexpr char kInTotoPayloadType[] = "application/vnd.in-toto+json";

// DSSE pre-authentication encoding: what is actually signed.
std::string DssePae(const std::string& payload_type, const std::string& payload);
// Returns the envelope JSON {payload, payloadType, signatures:[{keyid, sig}]}.
std::string SignDsse(const std::string& payload_type, const std::string& payload, const KeyPair& key);

struct VerifiedEnvelope {
  std::string payload_type;
  std::string payload;
  std::string key_id;  // the trusted key that verified it
};
// Parses an envelope and checks at least one signature against `trust`.
// Errors: kInvalidArgument (malformed), kPermissionDenied (untrusted or bad signature).
StatusOr<VerifiedEnvelope> VerifyDsse(const std::string& envelope_json, const TrustStore& trust);
// Parses an envelope without checking signatures (for --allow-unsigned inspection).
StatusOr<VerifiedEnvelope> ParseDsseUnverified(const std::string& envelope_json);

struct Subject {
  std::string name;
  std::string sha256_hex;
};
// in-toto Statement v1 JSON with the given subjects, predicate type and predicate JSON.
std::string MakeStatement(const std::vector<Subject>& subjects, const std::string& predicate_type,
                          const std::string& predicate_json = "{}");
// Returns the subjects of a Statement v1 (name -> sha256 hex); refuses other types.
StatusOr<std::map<std::string, std::string>> ParseStatementSubjects(const std::string& statement_json);

std::string Base64Encode(const std::string& raw);
StatusOr<std::string> Base64Decode(const std::string& text);

}  // namespace shoal
