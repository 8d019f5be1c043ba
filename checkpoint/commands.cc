// shoalctl keygen / checkpoint verify|list|export. Thin: parse flags, call the library,
// print a line a person can act on (or JSON for scripts), set the exit code.
#include "checkpoint/commands.h"

#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "checkpoint/job_dir.h"
#include "checkpoint/reader.h"
#include "checkpoint/safetensors.h"
#include "common/file_util.h"
#include "common/signing.h"

namespace shoal {

namespace {
using nlohmann::json;

struct Args {
  std::string path, out, name = "shoal", safetensors, coordinator;
  std::vector<std::string> trust;
  bool allow_unsigned = false, allow_rollback = false, as_json = false, include_optimizer = false;
};

std::string HumanBytes(uint64_t n) {
  char buf[32];
  if (n >= (1ull << 30)) std::snprintf(buf, sizeof(buf), "%.2f GiB", n / double(1ull << 30));
  else if (n >= (1ull << 20)) std::snprintf(buf, sizeof(buf), "%.2f MiB", n / double(1ull << 20));
  else if (n >= 1024) std::snprintf(buf, sizeof(buf), "%.1f KiB", n / 1024.0);
  else std::snprintf(buf, sizeof(buf), "%llu B", static_cast<unsigned long long>(n));
  return buf;
}

// Bytes of the files directly in `dir`: what an unverifiable checkpoint occupies.
uint64_t BytesOnDisk(const std::string& dir) {
  uint64_t total = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec))
    if (e.is_regular_file(ec)) total += e.file_size(ec);
  return total;
}

std::string Dump(const json& j) { return j.dump(2, ' ', false, json::error_handler_t::replace); }

// Loads --trust files; on failure reports and sets exit code 2.
bool LoadTrust(const Args& a, TrustStore* trust, int* code, std::ostream& err) {
  for (const auto& f : a.trust) {
    Status s = trust->AddFile(f);
    if (!s.ok()) {
      err << "cannot use trusted key " << f << ": " << s.ToString() << "\n";
      *code = 2;
      return false;
    }
  }
  return true;
}

void AddVerifyFlags(CLI::App* cmd, Args* a) {
  cmd->add_option("--trust", a->trust, "public key file trusted to sign checkpoints (repeatable)");
  cmd->add_flag("--allow-unsigned", a->allow_unsigned, "accept a missing or untrusted signature (digests still checked)");
}

// verify and export follow `latest`, which must name the newest checkpoint that verifies.
void AddRollbackFlag(CLI::App* cmd, Args* a) {
  cmd->add_flag("--allow-rollback", a->allow_rollback,
                "accept a job directory whose `latest` names an older checkpoint than the newest that verifies "
                "(a turned-back pointer), with a warning naming both steps");
}

LoadOptions Options(const Args& a) {
  LoadOptions o;
  o.allow_unsigned = a.allow_unsigned;
  o.allow_rollback = a.allow_rollback;
  return o;
}

void Keygen(const Args& a, int* code, std::ostream& out, std::ostream& err) {
  KeyPair key = GenerateKeyPair();
  Status s = WriteKeyPair(key, a.out, a.name);
  if (!s.ok()) {
    err << "keygen: " << s.ToString() << "\n";
    // An existing key is never overwritten: the user's to move, so bad input (2).
    *code = s.code() == StatusCode::kAlreadyExists || s.code() == StatusCode::kInvalidArgument ? 2 : 1;
    return;
  }
  out << "wrote " << JoinPath(a.out, a.name + ".key") << " (secret, mode 0600, PEM PKCS#8) and "
      << JoinPath(a.out, a.name + ".pub") << " (PEM SubjectPublicKeyInfo)\nkey id " << key.public_key.key_id
      << "\nother tools read them too: openssl pkeyutl -verify -pubin -inkey " << JoinPath(a.out, a.name + ".pub")
      << " -rawin ...\n";
  *code = 0;
}

void Verify(const Args& a, int* code, std::ostream& out, std::ostream& err) {
  TrustStore trust;
  if (!LoadTrust(a, &trust, code, err)) return;
  auto r = VerifyCheckpoint(a.path, trust, Options(a));
  *code = r.ok() ? 0 : 1;
  if (a.as_json) {
    json j = {{"valid", r.ok()}, {"path", a.path}, {"error", r.ok() ? "" : r.status().ToString()}};
    if (r.ok()) {
      j["dir"] = r->dir;
      j["step"] = r->manifest.step();
      j["signer"] = r->signer_key_id;
      j["signed"] = r->signature_verified;
      j["shards"] = r->manifest.shards_size();
      j["rank_states"] = r->manifest.rank_states_size();
      j["bytes"] = r->total_bytes;
      j["manifest_digest"] = r->manifest_digest;
      j["rollback_warning"] = r->rollback_warning;
    }
    out << Dump(j) << "\n";
    return;
  }
  if (!r.ok()) {
    out << "INVALID " << a.path << "\n  " << r.status().ToString() << "\n";
    return;
  }
  out << "OK " << r->dir << "\n  job " << r->manifest.job_id() << ", step " << r->manifest.step() << ", "
      << r->manifest.shards_size() << " shard(s)"
      << (r->manifest.rank_states_size() ? ", " + std::to_string(r->manifest.rank_states_size()) + " rank state file(s)"
                                         : std::string())
      << ", " << HumanBytes(r->total_bytes) << "\n  "
      << (r->signature_verified ? "signed by trusted key " + r->signer_key_id : std::string("NOT signed by a trusted key (allowed)"))
      << "\n  manifest sha256 " << r->manifest_digest << "\n";
  if (!r->rollback_warning.empty()) out << "  WARNING " << r->rollback_warning << "\n";
}

void List(Args a, const JobDirResolver& resolve_job, int* code, std::ostream& out, std::ostream& err) {
  TrustStore trust;
  if (!LoadTrust(a, &trust, code, err)) return;
  if (!PathExists(a.path)) {
    // Not a directory: a job id, which the coordinator's registry can place.
    if (!resolve_job || a.path.find('/') != std::string::npos) {
      err << "no such job directory: " << a.path << "\n";
      *code = 2;
      return;
    }
    auto dir = resolve_job(a.path, a.coordinator);
    if (!dir.ok()) {
      err << "no checkpoints found for job " << a.path << ": " << dir.status().ToString() << "\n";
      const StatusCode c = dir.status().code();
      *code = c == StatusCode::kUnavailable || c == StatusCode::kDeadlineExceeded ? 3 : 2;
      return;
    }
    a.path = *dir;
  }
  auto steps = ListCommittedSteps(a.path);
  if (!steps.ok()) {
    err << steps.status().ToString() << "\n";
    *code = 2;
    return;
  }
  auto pointer = ReadLatestPointer(a.path);
  std::string latest = pointer.ok() ? *pointer : "";
  json rows = json::array();
  bool all_valid = true;
  for (int64_t step : *steps) {
    std::string dir = JoinPath(a.path, StepDirName(step));
    auto r = VerifyCheckpoint(dir, trust, a.allow_unsigned);
    all_valid = all_valid && r.ok();
    rows.push_back({{"step", step}, {"dir", dir}, {"latest", StepDirName(step) == latest},
                    {"verified", r.ok()}, {"bytes", r.ok() ? r->total_bytes : BytesOnDisk(dir)},
                    {"signer", r.ok() ? r->signer_key_id : ""},
                    {"error", r.ok() ? "" : r.status().ToString()}});
  }
  *code = all_valid ? 0 : 1;
  // Every row verified on its own; `latest` is turned back when a newer one verifies.
  int64_t newest_verified = -1;
  for (const auto& row : rows)
    if (row["verified"].get<bool>()) newest_verified = row["step"].get<int64_t>();
  for (auto& row : rows)
    row["turned_back"] = row["latest"].get<bool>() && row["step"].get<int64_t>() < newest_verified;
  if (a.as_json) {
    out << Dump(json{{"job_dir", a.path}, {"checkpoints", rows}}) << "\n";
    return;
  }
  if (rows.empty()) {
    out << "no checkpoints in " << a.path << "\n";
    return;
  }
  char line[256];
  std::snprintf(line, sizeof(line), "%-12s %12s  %-16s  %s\n", "STEP", "SIZE", "SIGNER", "STATUS");
  out << line;
  for (const auto& row : rows) {
    std::string status = row["verified"].get<bool>() ? "verified" : "INVALID: " + row["error"].get<std::string>();
    if (row["turned_back"].get<bool>())
      status += " (latest, turned back: step " + std::to_string(newest_verified) + " is newer)";
    else if (row["latest"].get<bool>())
      status += " (latest)";
    std::string signer = row["signer"].get<std::string>();
    std::snprintf(line, sizeof(line), "%-12lld %12s  %-16s  ", static_cast<long long>(row["step"].get<int64_t>()),
                  HumanBytes(row["bytes"].get<uint64_t>()).c_str(), signer.empty() ? "-" : signer.c_str());
    out << line << status << "\n";
  }
}

void Export(const Args& a, const LineageMetadataFn& lineage, int* code, std::ostream& out, std::ostream& err) {
  TrustStore trust;
  if (!LoadTrust(a, &trust, code, err)) return;
  auto r = LoadCheckpoint(a.path, trust, Options(a));
  if (!r.ok()) {
    err << "refusing to export " << a.path << ": " << r.status().ToString() << "\n";
    *code = 1;
    return;
  }
  std::map<std::string, std::string> extra;
  if (lineage) extra = lineage(r->manifest.job_id(), r->manifest_digest, a.coordinator);
  Status s = ExportSafetensors(*r, a.safetensors, a.include_optimizer, extra);
  if (!s.ok()) {
    err << "export failed: " << s.ToString() << "\n";
    *code = 1;
    return;
  }
  const size_t n = ExportedTensors(r->snapshot, a.include_optimizer).size();
  *code = 0;
  if (a.as_json) {
    std::error_code ec;
    out << Dump(json{{"out", a.safetensors}, {"dir", r->dir}, {"step", r->manifest.step()}, {"tensors", n},
                     {"bytes", std::filesystem::file_size(a.safetensors, ec)}, {"signer", r->signer_key_id}})
        << "\n";
    return;
  }
  out << "exported " << n << " tensor(s) of " << r->dir << " (step " << r->manifest.step() << ") to " << a.safetensors << "\n";
}

}  // namespace

void RegisterCheckpointCommands(CLI::App& app, int* exit_code, std::ostream& out, std::ostream& err,
                                JobDirResolver resolve_job, LineageMetadataFn lineage) {
  // The flag values live as long as the app: every callback shares this one object.
  auto args = std::make_shared<Args>();
  std::ostream* o = &out;
  std::ostream* e = &err;

  CLI::App* keygen = app.add_subcommand(
      "keygen",
      "generate an Ed25519 key pair for signing checkpoints and datasets, as standard PEM: NAME.key is PKCS#8 "
      "(-----BEGIN PRIVATE KEY-----, mode 0600), NAME.pub SubjectPublicKeyInfo (-----BEGIN PUBLIC KEY-----), as "
      "`openssl genpkey -algorithm ed25519` and `openssl pkey -pubout` write them. Keys made by openssl, and keys in "
      "the older shoal-ed25519 v1 text form, load wherever a key file is asked for");
  keygen->add_option("--out", args->out, "directory for NAME.key and NAME.pub")->required();
  keygen->add_option("--name", args->name, "file name stem (default: shoal)");
  keygen->callback([args, exit_code, o, e] { Keygen(*args, exit_code, *o, *e); });

  CLI::App* ckpt = app.add_subcommand("checkpoint", "verify, list and export checkpoints");
  ckpt->require_subcommand(1);

  CLI::App* verify = ckpt->add_subcommand("verify", "check signature and digests of a checkpoint");
  verify->add_option("path", args->path, "step directory, or job directory (follows latest)")->required();
  AddVerifyFlags(verify, args.get());
  AddRollbackFlag(verify, args.get());
  verify->add_flag("--json", args->as_json, "print the result as JSON");
  verify->callback([args, exit_code, o, e] { Verify(*args, exit_code, *o, *e); });

  CLI::App* list = ckpt->add_subcommand("list", "list the checkpoints of a job and verify each");
  list->add_option("job", args->path, "job id (found through the coordinator's registry) or DIR/JOB")->required();
  list->add_option("--coordinator", args->coordinator,
                   "coordinator endpoint for a job id (default: $SHOAL_COORDINATOR, .shoal/endpoint, tcp://127.0.0.1:7400)");
  AddVerifyFlags(list, args.get());
  list->add_flag("--json", args->as_json, "print the result as JSON");
  list->callback([args, resolve_job, exit_code, o, e] { List(*args, resolve_job, exit_code, *o, *e); });

  CLI::App* exp = ckpt->add_subcommand("export", "export a verified checkpoint's weights to safetensors");
  exp->add_option("path", args->path, "step directory, or job directory (follows latest)")->required();
  exp->add_option("--safetensors", args->safetensors, "output .safetensors file")->required();
  exp->add_flag("--include-optimizer", args->include_optimizer, "also export optim.* and codec.* tensors (every rank's codec state)");
  AddVerifyFlags(exp, args.get());
  AddRollbackFlag(exp, args.get());
  exp->add_flag("--json", args->as_json, "print what was written as JSON");
  if (lineage)
    exp->add_option("--coordinator", args->coordinator,
                    "where the checkpoint's lineage is asked for the metadata (default: as shoalctl status; a "
                    "stopped `shoalctl run`'s store under .shoal is read directly)");
  exp->callback([args, lineage, exit_code, o, e] { Export(*args, lineage, exit_code, *o, *e); });
}

}  // namespace shoal
