// CurveZMQ key pairs for the control plane, and where each side finds its keys.
//
// A key file is a small text file, Z85 as libzmq encodes keys:
//   shoal-curve v1
//   public <40 characters>
//   secret <40 characters>        (absent from a .pub file)
// Secret files are mode 0600 and refused when group or others can read them.
//
// The auth directory (default .shoal/auth, `shoalctl auth init` makes it):
//   coordinator.key / .pub            the coordinator's CURVE key pair
//   coordinator-signing.key / .pub    its Ed25519 key: signs the audit log's chain head
//   admin.key / .pub                  the first admin, admitted at every start
//   <name>.key / .pub                 keys made by `shoalctl keygen NAME`
#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace shoal {

struct CurveKeyPair {
  std::string public_key;  // Z85, 40 characters
  std::string secret_key;  // Z85, 40 characters; empty when only the public half is known
};

CurveKeyPair NewCurveKeyPair();
// True for 40 characters of Z85 that decode to 32 bytes.
bool IsCurveKey(const std::string& z85);
// A short, stable id for a public key (first 12 hex digits of its SHA-256), for logs of
// keys that have no name (refused strangers).
std::string CurveKeyFingerprint(const std::string& public_z85);

// Writes DIR/NAME.key (0600, both halves) and DIR/NAME.pub; refuses to overwrite.
Status WriteCurveKeyPair(const CurveKeyPair& keys, const std::string& dir, const std::string& name);
// Reads a .key (both halves; its mode is checked) or a .pub (public only) file.
StatusOr<CurveKeyPair> ReadCurveKeyFile(const std::string& path);

inline constexpr char kDefaultAuthDir[] = ".shoal/auth";
// $SHOAL_AUTH_DIR, else .shoal/auth: where the coordinator, shoalctl run and clients look
// for keys when not told.
std::string DefaultAuthDir();
// Makes what is missing in DIR (mode 0700): the coordinator's CURVE and signing keys and
// an admin key. Existing keys are kept, so it is idempotent. Returns what it made.
StatusOr<std::vector<std::string>> InitAuthDir(const std::string& dir);

// What a client presents: its own key pair and the coordinator's public key.
struct ClientKeys {
  CurveKeyPair own;
  std::string server_public;
  bool enabled() const { return !server_public.empty(); }
};

// The keys a client uses when not told otherwise:
//   $SHOAL_KEY (a .key file) and $SHOAL_COORDINATOR_KEY (the coordinator's .pub), else
//   DefaultAuthDir()'s admin.key and coordinator.pub when both exist, else none
//   (a plain connection, which only an --insecure coordinator accepts).
// A variable naming a file that cannot be read is an error, not a silent fallback.
StatusOr<ClientKeys> DefaultClientKeys();
StatusOr<ClientKeys> LoadClientKeys(const std::string& key_file, const std::string& server_public_file);

}  // namespace shoal
