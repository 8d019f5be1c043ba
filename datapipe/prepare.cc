// Ingest-if-missing, scan-if-stale. Verification always runs first on an existing
// folder, with the caller's trust settings, so a tampered dataset stops the job.
#include "datapipe/prepare.h"

#include "common/file_util.h"
#include "datapipe/ingest.h"
#include "datapipe/manifest.h"
#include "datapipe/scan_files.h"

namespace shoal {

StatusOr<PreparedDataset> PrepareIdxDataset(const PrepareOptions& o) {
  if (o.out_dir.empty()) return InvalidArgument("no dataset folder to prepare");
  PreparedDataset out;
  out.dir = o.out_dir;
  if (!PathExists(o.out_dir + "/" + kDatasetManifestFile)) {
    auto pick = [&](const std::string& stem) {
      std::string gz = o.idx_dir + "/" + stem + ".gz";
      return PathExists(gz) ? gz : o.idx_dir + "/" + stem;
    };
    IngestOptions io;
    io.shard_records = o.shard_records;
    io.sign_key = o.sign_key;
    io.sign_key_path = o.sign_key_path;
    io.name = o.name;
    io.licence = o.licence;
    auto r = IngestIdx(pick(o.split + "-images-idx3-ubyte"), pick(o.split + "-labels-idx1-ubyte"), o.out_dir, io);
    if (!r.ok()) return r.status();
    out.ingested = true;
  }
  ASSIGN_OR_RETURN(VerifiedDataset ds, OpenDataset(o.out_dir, o.scan.trust, /*load_shards=*/false));
  out.records = ds.total_records();
  out.provenance = ds.provenance;
  auto admitted = ReadAdmitted(o.out_dir);
  bool current = admitted.ok() && admitted->manifest_sha256 == ds.manifest_sha256;
  if (!admitted.ok() && admitted.status().code() != StatusCode::kNotFound) current = false;
  if (o.rescan || !current) {
    ASSIGN_OR_RETURN(ScanReport report, ScanDataset(o.out_dir, o.scan));
    out.scanned = true;
    out.admitted = report.admitted;
  } else {
    out.admitted = static_cast<int64_t>(admitted->ids.size());
  }
  out.quarantined = out.records - out.admitted;
  return out;
}

}  // namespace shoal
