// Ed25519 + DSSE + in-toto Statement v1. JSON through nlohmann; every parse of
// untrusted input is guarded, so a hostile envelope yields a Status, never a throw.
#include "common/signing.h"

#include <sodium.h>

#include <nlohmann/json.hpp>
#include <cstring>

#include "common/sha256.h"

namespace shoal {

namespace {
using nlohmann::json;

void EnsureSodium() {
  static const int rc = sodium_init();
  (void)rc;
}

}  // namespace

PublicKey MakePublicKey(const std::string& raw32) {
  return PublicKey{Sha256Hex(raw32).substr(0, 16), raw32};
}

KeyPair GenerateKeyPair() {
  EnsureSodium();
  unsigned char pk[crypto_sign_PUBLICKEYBYTES];
  unsigned char sk[crypto_sign_SECRETKEYBYTES];
  crypto_sign_keypair(pk, sk);
  KeyPair kp;
  kp.public_key = MakePublicKey(std::string(reinterpret_cast<char*>(pk), sizeof(pk)));
  kp.secret.assign(reinterpret_cast<char*>(sk), sizeof(sk));
  sodium_memzero(sk, sizeof(sk));
  return kp;
}

Status TrustStore::AddFile(const std::string& path) {
  ASSIGN_OR_RETURN(PublicKey key, LoadPublicKey(path));
  Add(key);
  return OkStatus();
}

const PublicKey* TrustStore::Find(const std::string& key_id) const {
  auto it = keys_.find(key_id);
  return it == keys_.end() ? nullptr : &it->second;
}

std::string DssePae(const std::string& type, const std::string& payload) {
  return "DSSEv1 " + std::to_string(type.size()) + " " + type + " " + std::to_string(payload.size()) + " " + payload;
}

std::string SignDsse(const std::string& payload_type, const std::string& payload, const KeyPair& key) {
  EnsureSodium();
  std::string pae = DssePae(payload_type, payload);
  unsigned char sig[crypto_sign_BYTES];
  crypto_sign_detached(sig, nullptr, reinterpret_cast<const unsigned char*>(pae.data()), pae.size(),
                       reinterpret_cast<const unsigned char*>(key.secret.data()));
  json env = {{"payload", Base64Encode(payload)},
              {"payloadType", payload_type},
              {"signatures", json::array({{{"keyid", key.public_key.key_id},
                                           {"sig", Base64Encode(std::string(reinterpret_cast<char*>(sig), sizeof(sig)))}}})}};
  return env.dump(2);
}

namespace {
struct ParsedEnvelope {
  VerifiedEnvelope env;
  std::vector<std::pair<std::string, std::string>> signatures;  // keyid, raw sig
};

StatusOr<ParsedEnvelope> ParseEnvelope(const std::string& text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgument("signature envelope is not valid JSON");
  if (!j.contains("payload") || !j["payload"].is_string() || !j.contains("payloadType") ||
      !j["payloadType"].is_string() || !j.contains("signatures") || !j["signatures"].is_array())
    return InvalidArgument("signature envelope lacks payload, payloadType or signatures");
  ParsedEnvelope out;
  out.env.payload_type = j["payloadType"].get<std::string>();
  ASSIGN_OR_RETURN(out.env.payload, Base64Decode(j["payload"].get<std::string>()));
  for (const auto& s : j["signatures"]) {
    if (!s.is_object() || !s.contains("sig") || !s["sig"].is_string()) continue;
    std::string keyid = s.contains("keyid") && s["keyid"].is_string() ? s["keyid"].get<std::string>() : "";
    auto raw = Base64Decode(s["sig"].get<std::string>());
    if (raw.ok()) out.signatures.emplace_back(keyid, *raw);
  }
  return out;
}
}  // namespace

StatusOr<VerifiedEnvelope> ParseDsseUnverified(const std::string& envelope_json) {
  ASSIGN_OR_RETURN(ParsedEnvelope p, ParseEnvelope(envelope_json));
  return p.env;
}

StatusOr<VerifiedEnvelope> VerifyDsse(const std::string& envelope_json, const TrustStore& trust) {
  EnsureSodium();
  ASSIGN_OR_RETURN(ParsedEnvelope p, ParseEnvelope(envelope_json));
  if (p.signatures.empty()) return PermissionDenied("envelope carries no signature");
  std::string pae = DssePae(p.env.payload_type, p.env.payload);
  std::string untrusted;
  for (const auto& [keyid, sig] : p.signatures) {
    const PublicKey* key = trust.Find(keyid);
    if (!key) {
      untrusted = keyid;
      continue;
    }
    if (sig.size() == crypto_sign_BYTES &&
        crypto_sign_verify_detached(reinterpret_cast<const unsigned char*>(sig.data()),
                                    reinterpret_cast<const unsigned char*>(pae.data()), pae.size(),
                                    reinterpret_cast<const unsigned char*>(key->bytes.data())) == 0) {
      p.env.key_id = keyid;
      return p.env;
    }
    return PermissionDenied("signature by key " + keyid + " does not verify");
  }
  return PermissionDenied("signed by untrusted key '" + untrusted + "'");
}

std::string MakeStatement(const std::vector<Subject>& subjects, const std::string& predicate_type,
                          const std::string& predicate_json) {
  json subj = json::array();
  for (const auto& s : subjects) subj.push_back({{"name", s.name}, {"digest", {{"sha256", s.sha256_hex}}}});
  json pred = json::parse(predicate_json, nullptr, false);
  if (pred.is_discarded()) pred = json::object();
  json st = {{"_type", "https://in-toto.io/Statement/v1"},
             {"subject", subj},
             {"predicateType", predicate_type},
             {"predicate", pred}};
  return st.dump();
}

StatusOr<std::map<std::string, std::string>> ParseStatementSubjects(const std::string& statement_json) {
  json j = json::parse(statement_json, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgument("statement is not valid JSON");
  if (!j.contains("_type") || j["_type"] != "https://in-toto.io/Statement/v1")
    return InvalidArgument("statement is not an in-toto Statement v1");
  if (!j.contains("subject") || !j["subject"].is_array()) return InvalidArgument("statement has no subjects");
  std::map<std::string, std::string> out;
  for (const auto& s : j["subject"]) {
    if (!s.is_object() || !s.contains("name") || !s["name"].is_string() || !s.contains("digest") ||
        !s["digest"].is_object() || !s["digest"].contains("sha256") || !s["digest"]["sha256"].is_string())
      return InvalidArgument("statement subject is malformed");
    out[s["name"].get<std::string>()] = s["digest"]["sha256"].get<std::string>();
  }
  return out;
}

std::string Base64Encode(const std::string& raw) {
  EnsureSodium();
  const int variant = sodium_base64_VARIANT_ORIGINAL;
  std::string out(sodium_base64_ENCODED_LEN(raw.size(), variant), '\0');
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(raw.data()), raw.size(), variant);
  out.resize(std::strlen(out.c_str()));
  return out;
}

StatusOr<std::string> Base64Decode(const std::string& text) {
  EnsureSodium();
  std::string out(text.size() / 4 * 3 + 3, '\0');
  size_t len = 0;
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), text.data(), text.size(), nullptr,
                        &len, nullptr, sodium_base64_VARIANT_ORIGINAL) != 0)
    return InvalidArgument("invalid base64");
  out.resize(len);
  return out;
}

}  // namespace shoal
