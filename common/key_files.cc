// Ed25519 key files (declared in common/signing.h). Written as standard PEM, PKCS#8 for
// the secret key and SubjectPublicKeyInfo for the public key, byte for byte what
// `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout` write, so other tools
// can check Shoal's signatures; the older "shoal-ed25519-* v1" hex files still load.
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <sodium.h>
#include <sys/stat.h>

#include <memory>
#include <sstream>

#include "common/file_util.h"
#include "common/sha256.h"
#include "common/signing.h"

namespace shoal {

namespace {

constexpr char kSecretHeader[] = "shoal-ed25519-secret v1";
constexpr char kPublicHeader[] = "shoal-ed25519-public v1";
constexpr char kPemBegin[] = "-----BEGIN ";
constexpr size_t kMaxKeyFileBytes = 4096;  // a PEM key is ~120 bytes, the hex form ~160

using PkeyPtr = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;
using BioPtr = std::unique_ptr<BIO, decltype(&BIO_free)>;

// OpenSSL's own words for its latest error, with where we called it; clears its queue
// (it is per thread) so an old error never shows up in a later message.
Status SslError(const std::string& what, const char* file, int line) {
  unsigned long code = ERR_peek_last_error();
  char buf[256] = "no OpenSSL error recorded";
  if (code != 0) ERR_error_string_n(code, buf, sizeof(buf));
  ERR_clear_error();
  return InvalidArgument(what + ": " + buf + " (" + file + ":" + std::to_string(line) + ")");
}
#define SHOAL_SSL_ERROR(what) SslError(what, __FILE__, __LINE__)

// Never prompt for a passphrase (OpenSSL's default callback reads the terminal): an
// encrypted key is refused instead.
int NoPassphrase(char*, int, int, void*) { return 0; }

// By content, not by name: PEM may follow other text (openssl's "Bag Attributes"); the
// v1 form never holds a dash.
bool IsPem(const std::string& text) { return text.find(kPemBegin) != std::string::npos; }

StatusOr<std::string> PemOf(bool secret, const unsigned char* raw32) {
  PkeyPtr pkey(secret ? EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, raw32, 32)
                      : EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, raw32, 32),
               EVP_PKEY_free);
  if (!pkey) return SHOAL_SSL_ERROR("cannot make an Ed25519 key");
  BioPtr bio(BIO_new(BIO_s_mem()), BIO_free);
  if (!bio) return SHOAL_SSL_ERROR("cannot allocate a memory BIO");
  // PEM_write_bio_PrivateKey writes PKCS#8 ("BEGIN PRIVATE KEY"), unencrypted.
  const int ok = secret ? PEM_write_bio_PrivateKey(bio.get(), pkey.get(), nullptr, nullptr, 0, nullptr, nullptr)
                        : PEM_write_bio_PUBKEY(bio.get(), pkey.get());
  if (ok != 1) return SHOAL_SSL_ERROR("cannot write the PEM form");
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len));
}

// The raw 32-byte private seed or public key of an Ed25519 PEM key.
StatusOr<std::string> RawFromPem(const std::string& path, const std::string& text, bool secret) {
  // Name the mix-ups a person makes, before OpenSSL's less direct words.
  if (secret && text.find("-----BEGIN PUBLIC KEY-----") != std::string::npos)
    return InvalidArgument(path + ": holds a public key; a signing key is the secret half (BEGIN PRIVATE KEY)");
  if (!secret && text.find("PRIVATE KEY-----") != std::string::npos)
    return InvalidArgument(path + ": holds a secret key; give the public key (openssl pkey -in " + path + " -pubout)");
  if (text.find("-----BEGIN ENCRYPTED PRIVATE KEY-----") != std::string::npos)
    return InvalidArgument(path + ": the key is encrypted; Shoal reads unencrypted PKCS#8 (openssl pkey -in " + path +
                           " -out plain.key)");
  BioPtr bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())), BIO_free);
  if (!bio) return SHOAL_SSL_ERROR("cannot allocate a memory BIO");
  PkeyPtr pkey(secret ? PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassphrase, nullptr)
                      : PEM_read_bio_PUBKEY(bio.get(), nullptr, NoPassphrase, nullptr),
               EVP_PKEY_free);
  if (!pkey) return SHOAL_SSL_ERROR(path + ": not a readable PEM " + (secret ? "private" : "public") + " key");
  if (EVP_PKEY_id(pkey.get()) != EVP_PKEY_ED25519)
    return InvalidArgument(path + ": is a " + std::string(OBJ_nid2sn(EVP_PKEY_id(pkey.get()))) +
                           " key; Shoal signs with Ed25519 (openssl genpkey -algorithm ed25519)");
  std::string raw(32, '\0');
  size_t len = raw.size();
  const int ok = secret ? EVP_PKEY_get_raw_private_key(pkey.get(), reinterpret_cast<unsigned char*>(raw.data()), &len)
                        : EVP_PKEY_get_raw_public_key(pkey.get(), reinterpret_cast<unsigned char*>(raw.data()), &len);
  if (ok != 1 || len != 32) return SHOAL_SSL_ERROR(path + ": cannot read the raw Ed25519 key");
  return raw;
}

// The "shoal-ed25519-* v1" form: a header line, then the key in hex.
StatusOr<std::string> RawFromShoalV1(const std::string& path, const std::string& text, const std::string& header,
                                     size_t raw_len) {
  std::istringstream in(text);
  std::string first, hex;
  std::getline(in, first);
  std::getline(in, hex);
  if (first != header) return InvalidArgument(path + ": not a " + header + " key file");
  ASSIGN_OR_RETURN(std::string raw, FromHex(hex));
  if (raw.size() != raw_len) return InvalidArgument(path + ": key has the wrong length");
  return raw;
}

std::string Unrecognised(const std::string& path, bool secret) {
  return path + ": not a key file Shoal reads; expected PEM (" +
         (secret ? "-----BEGIN PRIVATE KEY-----, PKCS#8 Ed25519" : "-----BEGIN PUBLIC KEY-----, Ed25519") + ") or " +
         (secret ? kSecretHeader : kPublicHeader);
}

}  // namespace

StatusOr<std::string> SecretKeyPem(const KeyPair& key) {
  if (key.secret.size() != crypto_sign_SECRETKEYBYTES) return InvalidArgument("secret key has the wrong length");
  // libsodium's secret key is seed || public key; PKCS#8 holds the seed.
  return PemOf(/*secret=*/true, reinterpret_cast<const unsigned char*>(key.secret.data()));
}

StatusOr<std::string> PublicKeyPem(const PublicKey& key) {
  if (key.bytes.size() != crypto_sign_PUBLICKEYBYTES) return InvalidArgument("public key has the wrong length");
  return PemOf(/*secret=*/false, reinterpret_cast<const unsigned char*>(key.bytes.data()));
}

StatusOr<KeyPair> ParseSecretKey(const std::string& text, const std::string& path) {
  std::string secret;
  if (IsPem(text)) {
    ASSIGN_OR_RETURN(std::string seed, RawFromPem(path, text, /*secret=*/true));
    if (sodium_init() < 0) return Internal("libsodium failed to initialise");
    unsigned char pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
    crypto_sign_seed_keypair(pk, sk, reinterpret_cast<const unsigned char*>(seed.data()));
    secret.assign(reinterpret_cast<char*>(sk), sizeof(sk));
    sodium_memzero(sk, sizeof(sk));
    sodium_memzero(seed.data(), seed.size());
  } else if (text.rfind(kSecretHeader, 0) == 0) {
    ASSIGN_OR_RETURN(secret, RawFromShoalV1(path, text, kSecretHeader, crypto_sign_SECRETKEYBYTES));
  } else {
    return InvalidArgument(Unrecognised(path, /*secret=*/true));
  }
  KeyPair kp;
  kp.secret = std::move(secret);
  kp.public_key = MakePublicKey(kp.secret.substr(32));  // libsodium: sk = seed || pk
  return kp;
}

StatusOr<PublicKey> ParsePublicKey(const std::string& text, const std::string& path) {
  std::string raw;
  if (IsPem(text)) {
    ASSIGN_OR_RETURN(raw, RawFromPem(path, text, /*secret=*/false));
  } else if (text.rfind(kPublicHeader, 0) == 0) {
    ASSIGN_OR_RETURN(raw, RawFromShoalV1(path, text, kPublicHeader, crypto_sign_PUBLICKEYBYTES));
  } else {
    return InvalidArgument(Unrecognised(path, /*secret=*/false));
  }
  return MakePublicKey(raw);
}

Status WriteKeyPair(const KeyPair& key, const std::string& dir, const std::string& name) {
  RETURN_IF_ERROR(MakeDirs(dir));
  std::string sk_path = dir + "/" + name + ".key", pk_path = dir + "/" + name + ".pub";
  if (PathExists(sk_path) || PathExists(pk_path))
    return AlreadyExists("refusing to overwrite existing key " + sk_path);
  ASSIGN_OR_RETURN(std::string sk_pem, SecretKeyPem(key));
  ASSIGN_OR_RETURN(std::string pk_pem, PublicKeyPem(key.public_key));
  Status wrote = WriteFileAtomic(sk_path, sk_pem, 0600);
  sodium_memzero(sk_pem.data(), sk_pem.size());
  RETURN_IF_ERROR(wrote);
  ::chmod(sk_path.c_str(), 0600);  // the umask may have widened nothing, but be explicit
  return WriteFileAtomic(pk_path, pk_pem, 0644);
}

StatusOr<KeyPair> LoadSecretKey(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return NotFound("signing key not found: " + path);
  if (st.st_mode & 0077)
    return PermissionDenied("signing key " + path + " is readable by group or others (mode " +
                            ([&] { std::ostringstream o; o << std::oct << (st.st_mode & 0777); return o.str(); })() +
                            "); run: chmod 600 " + path);
  ASSIGN_OR_RETURN(std::string text, ReadFile(path, kMaxKeyFileBytes));
  StatusOr<KeyPair> key = ParseSecretKey(text, path);
  sodium_memzero(text.data(), text.size());
  return key;
}

StatusOr<PublicKey> LoadPublicKey(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path, kMaxKeyFileBytes));
  return ParsePublicKey(text, path);
}

}  // namespace shoal
