#include "coordinator/curve_keys.h"

#include <sys/stat.h>
#include <zmq.h>

#include <cstdlib>
#include <sstream>

#include "common/file_util.h"
#include "common/sha256.h"
#include "common/signing.h"

namespace shoal {

namespace {
constexpr char kHeader[] = "shoal-curve v1";
}

CurveKeyPair NewCurveKeyPair() {
  char pub[41] = {}, sec[41] = {};
  // libzmq built with libsodium (Debian's is) cannot fail here.
  (void)zmq_curve_keypair(pub, sec);
  return {pub, sec};
}

bool IsCurveKey(const std::string& z85) {
  if (z85.size() != 40) return false;
  uint8_t raw[32];
  return zmq_z85_decode(raw, z85.c_str()) != nullptr;
}

std::string CurveKeyFingerprint(const std::string& public_z85) { return Sha256Hex(public_z85).substr(0, 12); }

Status WriteCurveKeyPair(const CurveKeyPair& keys, const std::string& dir, const std::string& name) {
  RETURN_IF_ERROR(MakeDirs(dir));
  ::chmod(dir.c_str(), 0700);
  const std::string sk = dir + "/" + name + ".key", pk = dir + "/" + name + ".pub";
  if (PathExists(sk) || PathExists(pk)) return AlreadyExists("refusing to overwrite existing key " + sk);
  RETURN_IF_ERROR(WriteFileAtomic(sk, std::string(kHeader) + "\npublic " + keys.public_key + "\nsecret " +
                                          keys.secret_key + "\n", 0600));
  ::chmod(sk.c_str(), 0600);
  return WriteFileAtomic(pk, std::string(kHeader) + "\npublic " + keys.public_key + "\n", 0644);
}

StatusOr<CurveKeyPair> ReadCurveKeyFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path, 4096));
  std::istringstream in(text);
  std::string line;
  if (!std::getline(in, line) || line != kHeader)
    return InvalidArgument(path + " is not a Shoal CURVE key file (first line must be '" + kHeader + "')");
  CurveKeyPair keys;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const size_t sp = line.find(' ');
    const std::string field = line.substr(0, sp), value = sp == std::string::npos ? "" : line.substr(sp + 1);
    if (!IsCurveKey(value)) return InvalidArgument(path + ": '" + field + "' is not a 40-character Z85 key");
    if (field == "public") keys.public_key = value;
    else if (field == "secret") keys.secret_key = value;
    else return InvalidArgument(path + ": unknown field '" + field + "'");
  }
  if (keys.public_key.empty()) return InvalidArgument(path + " has no public key");
  if (!keys.secret_key.empty()) {
    struct stat st;
    if (::stat(path.c_str(), &st) == 0 && (st.st_mode & 0077))
      return PermissionDenied("key " + path + " holds a secret and is readable by group or others; run: chmod 600 " +
                              path);
  }
  return keys;
}

std::string DefaultAuthDir() {
  const char* env = std::getenv("SHOAL_AUTH_DIR");
  return env && *env ? env : kDefaultAuthDir;
}

StatusOr<std::vector<std::string>> InitAuthDir(const std::string& dir) {
  std::vector<std::string> made;
  RETURN_IF_ERROR(MakeDirs(dir));
  ::chmod(dir.c_str(), 0700);
  for (const char* name : {"coordinator", "admin"}) {
    if (PathExists(dir + "/" + name + ".key")) continue;
    RETURN_IF_ERROR(WriteCurveKeyPair(NewCurveKeyPair(), dir, name));
    made.push_back(dir + "/" + name + ".key");
  }
  if (!PathExists(dir + "/coordinator-signing.key")) {
    RETURN_IF_ERROR(WriteKeyPair(GenerateKeyPair(), dir, "coordinator-signing"));
    made.push_back(dir + "/coordinator-signing.key");
  }
  return made;
}

StatusOr<ClientKeys> LoadClientKeys(const std::string& key_file, const std::string& server_public_file) {
  ClientKeys keys;
  ASSIGN_OR_RETURN(keys.own, ReadCurveKeyFile(key_file));
  if (keys.own.secret_key.empty()) return InvalidArgument(key_file + " holds no secret key (a .pub file?)");
  ASSIGN_OR_RETURN(CurveKeyPair server, ReadCurveKeyFile(server_public_file));
  keys.server_public = server.public_key;
  return keys;
}

StatusOr<ClientKeys> DefaultClientKeys() {
  const char* key = std::getenv("SHOAL_KEY");
  const char* server = std::getenv("SHOAL_COORDINATOR_KEY");
  if ((key && *key) || (server && *server)) {
    if (!(key && *key) || !(server && *server))
      return InvalidArgument("set both SHOAL_KEY (this client's .key file) and SHOAL_COORDINATOR_KEY (the "
                             "coordinator's .pub file), or neither");
    auto keys = LoadClientKeys(key, server);
    if (!keys.ok()) return keys.status().WithContext("SHOAL_KEY / SHOAL_COORDINATOR_KEY");
    return keys;
  }
  const std::string dir = DefaultAuthDir();
  if (PathExists(dir + "/admin.key") && PathExists(dir + "/coordinator.pub"))
    return LoadClientKeys(dir + "/admin.key", dir + "/coordinator.pub");
  return ClientKeys{};
}

}  // namespace shoal
