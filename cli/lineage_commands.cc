// `shoalctl lineage show CKPT|DIGEST|JOB [--json | --dot]` and `shoalctl lineage verify
// CKPT`: which shards, which filters, which code and which workers produced a model,
// from the coordinator's lineage records (coordinator/lineage_book.h), and whether those
// records still match the digest signed into the checkpoint (lineage/digest.h).
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <google/protobuf/util/json_util.h>

#include "checkpoint/format.h"
#include "checkpoint/reader.h"
#include "cli/commands.h"
#include "common/clock.h"
#include "common/file_util.h"
#include "common/sha256.h"
#include "coordinator/client.h"
#include "coordinator/lineage_book.h"
#include "coordinator/store.h"
#include "lineage/digest.h"
#include "lineage/render.h"

namespace shoal {

namespace {


struct LineageOptions {
  std::string target, coordinator, state_dir;
  std::vector<std::string> trust;
  bool json = false, dot = false, allow_unsigned = false;
};

// What TARGET names: a checkpoint directory (its manifest read), a manifest digest, or a job.
struct Target {
  std::string job, digest, dir;
  CheckpointManifest manifest;
  bool is_checkpoint_dir = false;
};

bool LooksLikeDigest(const std::string& s) {
  return s.size() >= 8 && s.size() <= 64 && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

StatusOr<Target> ResolveTarget(const std::string& t) {
  Target out;
  if (std::filesystem::exists(t)) {
    ASSIGN_OR_RETURN(out.dir, ResolveCheckpointDir(t));
    ASSIGN_OR_RETURN(std::string bytes, ReadFile(out.dir + "/" + kManifestFile));
    ASSIGN_OR_RETURN(out.manifest, ParseManifest(bytes));
    out.digest = Sha256Hex(bytes);
    out.job = out.manifest.job_id();
    out.is_checkpoint_dir = true;
  } else if (LooksLikeDigest(t)) {
    out.digest = t;
  } else {
    out.job = t;
  }
  return out;
}

std::string OfflineStateDir(const LineageOptions& o) { return StoppedRunStateDir(o.coordinator, o.state_dir); }

StatusOr<LineageResponse> AskLineage(const LineageOptions& o, const LineageRequest& req, std::string* source) {
  const std::string offline = OfflineStateDir(o);
  if (!offline.empty()) {
    ASSIGN_OR_RETURN(auto store, OpenRocksStore(offline));
    *source = offline;
    return LineageBook(store.get()).Lookup(req);
  }
  const std::string endpoint = o.coordinator.empty() ? DefaultCoordinator() : o.coordinator;
  *source = endpoint;
  ControlClient client(endpoint);
  Request r;
  *r.mutable_lineage() = req;
  ASSIGN_OR_RETURN(Response resp, client.Call(r, std::chrono::seconds(10)));
  return resp.lineage();
}

// The job's spec, for the keys its checkpoints are trusted with (verify without --trust).
StatusOr<JobSpec> SpecOfJob(const LineageOptions& o, const std::string& job) {
  const std::string offline = OfflineStateDir(o);
  if (!offline.empty()) {
    ASSIGN_OR_RETURN(auto store, OpenRocksStore(offline));
    ASSIGN_OR_RETURN(std::string bytes, store->Get("job/" + job));
    Job j;
    if (!j.ParseFromString(bytes)) return DataLoss("state entry job/" + job + " is corrupt");
    return j.spec();
  }
  ControlClient client(o.coordinator.empty() ? DefaultCoordinator() : o.coordinator);
  Request r;
  r.mutable_status()->set_job_id(job);
  ASSIGN_OR_RETURN(Response resp, client.Call(r, std::chrono::seconds(10)));
  for (const Job& j : resp.status().jobs())
    if (j.id() == job) return j.spec();
  return NotFound("the coordinator does not know job " + job);
}

int DoShow(const LineageOptions& o) {
  const double t0 = MonotonicSeconds();
  auto target = ResolveTarget(o.target);
  if (!target.ok()) return ReportError(target.status());
  LineageRequest req;
  req.set_job_id(target->job);
  req.set_checkpoint_digest(target->digest);
  std::string source;
  auto lineage = AskLineage(o, req, &source);
  if (!lineage.ok()) return ReportError(lineage.status().WithContext("lineage of " + o.target + " from " + source));
  if (o.dot) {
    std::cout << LineageDot(*lineage);
  } else if (o.json) {
    std::cout << LineageJson(*lineage) << std::endl;
  } else {
    std::cout << LineageText(*lineage);
    std::fprintf(stderr, "(from %s in %.3f s)\n", source.c_str(), MonotonicSeconds() - t0);
  }
  return kExitOk;
}

int DoVerify(const LineageOptions& o) {
  auto target = ResolveTarget(o.target);
  if (!target.ok()) return ReportError(target.status());
  if (!target->is_checkpoint_dir)
    return ReportError(InvalidArgument("lineage verify needs a checkpoint directory (its signed manifest), not '" +
                                       o.target + "'"));
  // The manifest's signature first: the lineage digest it carries is only evidence if signed.
  TrustStore trust;
  std::vector<std::string> keys = o.trust;
  if (keys.empty() && !o.allow_unsigned) {
    auto spec = SpecOfJob(o, target->job);
    if (spec.ok()) keys.assign(spec->checkpoint().trust().begin(), spec->checkpoint().trust().end());
  }
  for (const std::string& k : keys)
    if (Status s = trust.AddFile(k); !s.ok()) return ReportError(s.WithContext("--trust"));
  auto verified = VerifyCheckpoint(target->dir, trust, o.allow_unsigned);
  if (!verified.ok()) return ReportError(verified.status().WithContext("checkpoint " + target->dir));

  LineageRequest req;
  req.set_job_id(target->job);
  req.set_checkpoint_digest(target->digest);
  std::string source;
  auto lineage = AskLineage(o, req, &source);
  if (!lineage.ok()) return ReportError(lineage.status().WithContext("lineage of " + target->dir + " from " + source));
  const CheckpointManifest& m = target->manifest;
  LineageVerdict v;
  if (lineage->jobs_size() == 0) {
    v.problem = "no lineage recorded for job " + target->job;
  } else {
    v = VerifyCheckpointLineage(target->digest, m.job_id(), m.step(), m.parent_digest(), m.lineage_digest(),
                                lineage->jobs(0));
  }
  if (o.json) {
    std::cout << nlohmann::json{{"ok", v.ok},
                                {"checkpoint", target->dir},
                                {"manifest_digest", target->digest},
                                {"signer", verified->signer_key_id},
                                {"signature_verified", verified->signature_verified},
                                {"generation", v.generation},
                                {"signed_lineage_digest", v.signed_digest},
                                {"recomputed_lineage_digest", v.recomputed_digest},
                                {"problem", v.problem}}
                     .dump(2)
              << std::endl;
  } else if (v.ok) {
    std::printf("lineage of %s verifies: the records of job %s up to generation %lld hash to %s, the digest %s signed\n",
                target->dir.c_str(), m.job_id().c_str(), static_cast<long long>(v.generation),
                v.recomputed_digest.substr(0, 16).c_str(),
                verified->signature_verified ? ("that " + verified->signer_key_id).c_str() : "(unsigned: not) ");
  } else {
    std::printf("lineage of %s does NOT verify: %s\n", target->dir.c_str(), v.problem.c_str());
  }
  return v.ok ? kExitOk : kExitFailed;
}

}  // namespace

std::map<std::string, std::string> LineageMetadataForExport(const std::string& job, const std::string& digest,
                                                            const std::string& coordinator) {
  LineageOptions o;
  o.coordinator = coordinator;
  LineageRequest req;
  req.set_job_id(job);
  req.set_checkpoint_digest(digest);
  std::string source;
  auto lineage = AskLineage(o, req, &source);
  if (!lineage.ok()) return {{"shoal.lineage", "unavailable: " + lineage.status().ToString()}};
  std::map<std::string, std::string> out;
  const JobLineage& j = lineage->jobs(0).job();
  const LineageDataset& d = j.dataset();
  std::string shards;
  for (const LineageShard& s : d.shards()) shards += (shards.empty() ? "" : ",") + s.file() + ":" + s.sha256();
  out["shoal.lineage.dataset"] = (d.name().empty() ? d.dir() : d.name() + " " + d.version()) + ", manifest sha256 " +
                                 d.manifest_digest() + ", signed by " + (d.signer().empty() ? "-" : d.signer());
  out["shoal.lineage.shards"] = shards;
  std::string filters;
  for (const LineageFilter& f : d.scan().filters())
    filters += (filters.empty() ? "" : ",") + f.name() + (f.enabled() ? ":on:v" + f.version() : ":off");
  out["shoal.lineage.scan"] = std::to_string(d.scan().admitted()) + "/" + std::to_string(d.scan().records()) +
                              " admitted, report sha256 " + d.scan().report_digest() + ", filters " + filters;
  std::string gens;
  for (const GenerationLineage& g : lineage->jobs(0).generations()) {
    gens += (gens.empty() ? "" : "; ") + std::to_string(g.number()) + ":";
    for (const LineageMember& m : g.members()) gens += " " + m.id() + "@" + m.host();
  }
  out["shoal.lineage.generations"] = gens;
  std::string parents;
  for (const CheckpointLineage& c : CheckpointAncestry(*lineage, lineage->checkpoint_digest()))
    if (c.manifest_digest() != lineage->checkpoint_digest())
      parents += (parents.empty() ? "" : ",") + c.job_id() + "@" + std::to_string(c.step()) + ":" + c.manifest_digest();
  out["shoal.lineage.parents"] = parents;
  out["shoal.lineage.code"] = j.submitter_code().version();
  std::string compact;
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(*lineage, &compact, opts);
  out["shoal.lineage"] = compact;
  return out;
}

void RegisterLineageCommands(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<LineageOptions>();
  CLI::App* lineage = app.add_subcommand(
      "lineage", "what produced a checkpoint: its data (manifest, shards, scan, filters), spec, code, workers and parents");
  lineage->require_subcommand(1);
  auto common = [&](CLI::App* c) {
    c->add_option("--coordinator", o->coordinator, "coordinator endpoint (default: as shoalctl status)");
    c->add_option("--state-dir", o->state_dir,
                  "read a stopped coordinator's store instead (default when no coordinator is named: a finished "
                  "`shoalctl run`'s .shoal/coordinator)");
    c->add_flag("--json", o->json, "print JSON for scripts");
  };
  CLI::App* show = lineage->add_subcommand("show", "show the lineage of a checkpoint or a job");
  show->add_option("target", o->target, "checkpoint directory (or job directory: its latest), manifest digest, or job id")
      ->required();
  common(show);
  show->add_flag("--dot", o->dot, "print a Graphviz graph (dot -Tsvg)");
  show->callback([o, exit_code] { *exit_code = DoShow(*o); });

  CLI::App* verify = lineage->add_subcommand(
      "verify", "check that the lineage records still hash to the digest signed in the checkpoint's manifest");
  verify->add_option("checkpoint", o->target, "checkpoint directory (or job directory: its latest)")->required();
  common(verify);
  verify->add_option("--trust", o->trust, "public key trusted to sign checkpoints (default: the job's checkpoint.trust)");
  verify->add_flag("--allow-unsigned", o->allow_unsigned, "accept a checkpoint whose signature cannot be checked");
  verify->callback([o, exit_code] { *exit_code = DoVerify(*o); });
}

}  // namespace shoal
