// The dataset folder's provenance: manifest.pb (what the data is and each shard's
// SHA-256) and manifest.sig (a DSSE envelope over an in-toto Statement whose subjects are
// manifest.pb and every shard). OpenDataset is the one gate every reader passes through.
#pragma once

#include <string>
#include <vector>

#include "common/signing.h"
#include "common/status.h"
#include "dataset.pb.h"
#include "datapipe/shard.h"

namespace shoal {

inline constexpr char kDatasetManifestFile[] = "manifest.pb";
inline constexpr char kManifestSigFile[] = "manifest.sig";
inline constexpr char kManifestFormat[] = "shoalrec-v1";
inline constexpr char kDatasetPredicateType[] = "https://shoal.dev/attestation/dataset-manifest/v1";

// Structural checks: format, schema, shard names (plain "*.rec" names, no paths), and
// record ids contiguous from 0 in shard order.
Status ValidateManifest(const DatasetManifest& m);
StatusOr<RecordLayout> ManifestLayout(const DatasetManifest& m);

// The in-toto Statement the owner signs: subjects manifest.pb and every shard file.
std::string DatasetStatement(const DatasetManifest& m, const std::string& manifest_sha256_hex);
// Writes DIR/manifest.sig for the manifest whose serialized bytes are `manifest_bytes`.
Status SignDataset(const std::string& dir, const DatasetManifest& m, const std::string& manifest_bytes,
                   const KeyPair& key);

struct DatasetTrust {
  TrustStore trust;             // keys whose signature makes a dataset trusted
  bool allow_unsigned = false;  // accept a dataset with no (checkable) signature
};

struct VerifiedDataset {
  std::string dir;
  DatasetManifest manifest;
  std::string manifest_sha256;   // hex digest of manifest.pb (binds scan results to it)
  std::string signer_key_id;     // trusted key that signed it; "" when not verified
  std::string provenance;        // "signed by <key>", "unsigned (allowed)", ...
  std::vector<ShardView> shards; // manifest order, every one digest-checked
  int64_t total_records() const { return manifest.total_records(); }
};

// Opens DIR and refuses it, naming the file at fault, unless:
//  - manifest.pb parses and ValidateManifest passes;
//  - manifest.sig verifies against `trust` and its subjects match manifest.pb and every
//    shard's manifest digest (no signature, or no keys to check it with, is accepted only
//    with allow_unsigned; a signature that fails is refused even then);
//  - no shard-like file (*.rec, shard-*) in DIR is missing from the manifest;
//  - every shard's SHA-256 equals the manifest's and its header agrees with the manifest.
// With load_shards false the shard digests are still checked but the bytes are dropped.
StatusOr<VerifiedDataset> OpenDataset(const std::string& dir, const DatasetTrust& trust, bool load_shards = true);

// Reads and parses manifest.pb alone, without any provenance check (for listings).
StatusOr<DatasetManifest> ReadManifestUnverified(const std::string& dir);

}  // namespace shoal
