// The data subcommands. Each callback builds options from the flags, calls the library
// and prints; nothing here knows how filters or shards work.
#include "datapipe/commands.h"

#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "datapipe/ingest.h"
#include "datapipe/manifest.h"
#include "datapipe/review.h"
#include "datapipe/scan.h"

namespace shoal {

namespace {
// Names and reasons may carry bytes from a hostile manifest; never throw on bad UTF-8.
constexpr auto kReplaceBadUtf8 = nlohmann::json::error_handler_t::replace;

struct IngestFlags {
  std::string format = "idx", images, labels, input, out, sign_key, name, version = "1", licence, shape;
  std::vector<std::string> sources;
  int64_t shard_records = 10000;
  int features = 0, num_classes = 0;
  double value_min = 0, value_max = 1;
  bool force = false, json = false;
};
struct ScanFlags {
  std::string dir, filters = "all";
  std::vector<std::string> thresholds, trust;
  int threads = 0;
  bool allow_unsigned = false, json = false;
};
struct QuarantineFlags {
  std::string dir, filter, by, why, sign_key;
  std::vector<int64_t> release, confirm;
  std::vector<std::string> trust;
  int64_t limit = -1;
  bool json = false;
};
struct VerifyFlags {
  std::string dir;
  std::vector<std::string> trust;
  bool allow_unsigned = false, json = false;
};

int Fail(const Status& s) {
  std::cerr << "error: " << s.ToString() << "\n";
  return 1;
}

StatusOr<std::vector<int64_t>> ParseShape(const std::string& text) {
  std::vector<int64_t> out;
  if (text.empty()) return out;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find_first_of("x,", pos);
    if (end == std::string::npos) end = text.size();
    std::string part = text.substr(pos, end - pos);
    char* stop = nullptr;
    long long v = std::strtoll(part.c_str(), &stop, 10);
    if (part.empty() || *stop != '\0' || v <= 0) return InvalidArgument("--shape '" + text + "' is not like 28x28");
    out.push_back(v);
    pos = end + 1;
  }
  return out;
}

StatusOr<DatasetTrust> MakeTrust(const std::vector<std::string>& keys, bool allow_unsigned) {
  DatasetTrust t;
  t.allow_unsigned = allow_unsigned;
  for (const auto& k : keys) RETURN_IF_ERROR(t.trust.AddFile(k).WithContext("--trust " + k));
  return t;
}

int RunIngest(const IngestFlags& f) {
  IngestOptions o;
  o.shard_records = f.shard_records;
  o.sign_key_path = f.sign_key;
  o.name = f.name;
  o.version = f.version;
  o.licence = f.licence;
  o.source_uris = f.sources;
  o.num_classes = f.num_classes;
  o.value_min = f.value_min;
  o.value_max = f.value_max;
  o.force = f.force;
  auto shape = ParseShape(f.shape);
  if (!shape.ok()) return Fail(shape.status());
  o.shape = *shape;
  StatusOr<IngestReport> r = InvalidArgument("unknown --format '" + f.format + "' (idx, raw or csv)");
  if (f.format == "idx") {
    if (f.images.empty() || f.labels.empty()) return Fail(InvalidArgument("--format idx needs --images and --labels"));
    r = IngestIdx(f.images, f.labels, f.out, o);
  } else if (f.format == "raw") {
    if (f.input.empty() || f.features <= 0) return Fail(InvalidArgument("--format raw needs --input and --features"));
    r = IngestRaw(f.input, f.features, f.out, o);
  } else if (f.format == "csv") {
    if (f.input.empty()) return Fail(InvalidArgument("--format csv needs --input"));
    r = IngestCsv(f.input, f.out, o);
  }
  if (!r.ok()) return Fail(r.status());
  if (f.json) {
    std::cout << r->ToJson() << "\n";
  } else {
    std::cout << "ingested " << r->records << " records (" << r->feature_count << " " << r->dtype << " features, "
              << r->num_classes << " classes) into " << r->shards << " shards in " << r->dir << "\n"
              << "manifest sha256 " << r->manifest_sha256 << "\n"
              << (r->signer_key_id.empty() ? std::string("UNSIGNED (no --sign-key)") : "signed by key " + r->signer_key_id)
              << "\n";
  }
  return 0;
}

int RunScan(const ScanFlags& f) {
  ScanOptions o;
  Status s = SetFilterList(f.filters, &o);
  if (!s.ok()) return Fail(s);
  for (const auto& t : f.thresholds) {
    s = SetThreshold(t, &o);
    if (!s.ok()) return Fail(s);
  }
  auto trust = MakeTrust(f.trust, f.allow_unsigned || f.trust.empty());
  if (!trust.ok()) return Fail(trust.status());
  o.trust = *trust;
  o.threads = f.threads;
  o.progress = [](const std::string& line) { std::cerr << "scan: " << line << "\n"; };
  auto r = ScanDataset(f.dir, o);
  if (!r.ok()) return Fail(r.status());
  if (f.json) {
    std::cout << r->ToJson() << "\n";
    return 0;
  }
  std::printf("%s: %lld records, %lld admitted, %lld quarantined (%s)\n", r->dir.c_str(),
              static_cast<long long>(r->records), static_cast<long long>(r->admitted),
              static_cast<long long>(r->quarantined), r->provenance.c_str());
  std::printf("%-10s %-8s %10s %9s %9s\n", "filter", "enabled", "threshold", "flagged", "seconds");
  for (const auto& fr : r->filters)
    std::printf("%-10s %-8s %10.4g %9lld %9.3f\n", fr.name.c_str(), fr.enabled ? "yes" : "no", fr.threshold,
                static_cast<long long>(fr.flagged), fr.seconds);
  std::printf("total %.3f s (verify %.3f, filters %.3f, write %.3f; %.3f CPU-s on %d threads): %.0f records/s\n",
              r->seconds, r->verify_seconds, r->filter_seconds, r->write_seconds, r->cpu_seconds, r->threads,
              r->records_per_second);
  return 0;
}

// --release / --confirm: a person's decision, appended to the signed review overlay.
int RunReview(const QuarantineFlags& f) {
  if (f.by.empty() || f.why.empty() || f.sign_key.empty())
    return Fail(InvalidArgument("--release and --confirm need --by NAME, --why TEXT and --sign-key KEY"));
  auto key = LoadSecretKey(f.sign_key);
  if (!key.ok()) return Fail(key.status().WithContext("--sign-key " + f.sign_key));
  auto trust = MakeTrust(f.trust, true);
  if (!trust.ok()) return Fail(trust.status());
  auto ds = OpenDataset(f.dir, *trust, /*load_shards=*/false);
  if (!ds.ok()) return Fail(ds.status());
  std::vector<ReviewDecision> d;
  for (int64_t id : f.release) d.push_back({id, "release", f.by, f.why, 0, ""});
  for (int64_t id : f.confirm) d.push_back({id, "confirm", f.by, f.why, 0, ""});
  Status s = AddReviewDecisions(f.dir, ds->manifest_sha256, d, *key, trust->trust);
  if (!s.ok()) return Fail(s);
  std::printf("recorded %zu released and %zu confirmed by %s in %s (signed by key %s); jobs apply it when that key "
              "is in data.trust\n",
              f.release.size(), f.confirm.size(), f.by.c_str(), ReviewPath(f.dir).c_str(),
              key->public_key.key_id.c_str());
  return 0;
}

int RunQuarantine(const QuarantineFlags& f) {
  if (!f.release.empty() || !f.confirm.empty()) return RunReview(f);
  auto entries = ReadQuarantine(f.dir, f.filter, f.limit);
  if (!entries.ok()) return Fail(entries.status());
  // Decisions shown beside the entries; verified against --trust when keys are given.
  std::map<int64_t, const ReviewDecision*> decided;
  std::string review_note = "none";
  StatusOr<ReviewOverlay> review = NotFound("");
  if (!f.trust.empty()) {
    auto trust = MakeTrust(f.trust, true);
    if (!trust.ok()) return Fail(trust.status());
    review = ReadReview(f.dir, trust->trust);
    if (review.ok()) review_note = "signed by trusted key " + review->signer_key_id;
  } else {
    review = ReadReviewUnverified(f.dir);
    if (review.ok()) review_note = "signature not checked (pass --trust)";
  }
  if (!review.ok() && review.status().code() != StatusCode::kNotFound) return Fail(review.status());
  if (review.ok())
    for (const auto& d : review->decisions) decided[d.record_id] = &d;
  auto decision_of = [&](int64_t id) -> const ReviewDecision* {
    auto it = decided.find(id);
    return it == decided.end() ? nullptr : it->second;
  };
  if (f.json) {
    nlohmann::json arr = nlohmann::json::array();
    for (const auto& e : *entries) {
      nlohmann::json j = nlohmann::json::parse(QuarantineJsonLine(e), nullptr, false);
      if (const ReviewDecision* d = decision_of(e.record_id))
        j["review"] = {{"action", d->action}, {"by", d->by}, {"why", d->why}, {"at_unix_ms", d->at_unix_ms},
                       {"key_id", d->key_id}};
      arr.push_back(j);
    }
    std::cout << nlohmann::json{{"count", entries->size()}, {"review", review_note}, {"entries", arr}}.dump(
                     2, ' ', false, kReplaceBadUtf8)
              << "\n";
    return 0;
  }
  std::printf("%-10s %-20s %6s %-9s %8s %-9s  %s\n", "record", "shard:index", "label", "filter", "score", "review",
              "reason");
  for (const auto& e : *entries) {
    std::string where = e.shard + ":" + std::to_string(e.index);
    const ReviewDecision* d = decision_of(e.record_id);
    std::string reason = e.reason;
    if (d) reason += " [" + d->action + "d by " + d->by + ": " + d->why + "]";
    std::printf("%-10lld %-20s %6d %-9s %8.3f %-9s  %s\n", static_cast<long long>(e.record_id), where.c_str(), e.label,
                e.filter.c_str(), e.score, d ? (d->action == "release" ? "released" : "confirmed") : "-",
                reason.c_str());
  }
  std::printf("%zu entries; review overlay: %s\n", entries->size(), review_note.c_str());
  return 0;
}

int RunVerify(const VerifyFlags& f) {
  auto trust = MakeTrust(f.trust, f.allow_unsigned);
  if (!trust.ok()) return Fail(trust.status());
  auto ds = OpenDataset(f.dir, *trust, /*load_shards=*/false);
  if (!ds.ok()) return Fail(ds.status());
  auto admitted = ReadAdmitted(f.dir);
  std::string scan = "not scanned";
  int64_t admitted_count = -1;
  if (admitted.ok() && admitted->manifest_sha256 == ds->manifest_sha256) {
    admitted_count = static_cast<int64_t>(admitted->ids.size());
    scan = std::to_string(admitted_count) + " admitted, " + std::to_string(ds->total_records() - admitted_count) +
           " quarantined";
  } else if (admitted.ok()) {
    scan = "STALE (scanned a different manifest; re-run `data scan`)";
  } else if (admitted.status().code() != StatusCode::kNotFound) {
    scan = "DAMAGED: " + admitted.status().message();
  }
  const DatasetManifest& m = ds->manifest;
  if (f.json) {
    nlohmann::json j = {{"ok", true},
                        {"dir", f.dir},
                        {"name", m.name()},
                        {"version", m.version()},
                        {"records", m.total_records()},
                        {"shards", m.shards_size()},
                        {"manifest_sha256", ds->manifest_sha256},
                        {"signer_key_id", ds->signer_key_id},
                        {"provenance", ds->provenance},
                        {"admitted", admitted_count},
                        {"scan", scan}};
    std::cout << j.dump(2, ' ', false, kReplaceBadUtf8) << "\n";
    return 0;
  }
  std::cout << "OK: " << m.name() << " v" << m.version() << ", " << m.total_records() << " records in "
            << m.shards_size() << " shards, every shard matches the manifest\n"
            << "provenance: " << ds->provenance << "\n"
            << "licence: " << (m.licence().empty() ? "(none given)" : m.licence()) << "\n"
            << "scan: " << scan << "\n";
  return 0;
}
}  // namespace

void RegisterDataCommands(CLI::App& app, int* exit_code) {
  CLI::App* data = app.add_subcommand("data", "Ingest, scan and verify datasets");
  data->require_subcommand(1);

  auto ing = std::make_shared<IngestFlags>();
  CLI::App* c = data->add_subcommand("ingest", "Turn IDX, raw or CSV input into signed record shards");
  c->add_option("--format", ing->format, "idx | raw | csv")->check(CLI::IsMember({"idx", "raw", "csv"}));
  c->add_option("--images", ing->images, "IDX images file (.gz or plain)");
  c->add_option("--labels", ing->labels, "IDX labels file (.gz or plain)");
  c->add_option("--input", ing->input, "raw or CSV input file");
  c->add_option("--features", ing->features, "raw: f32 features per record");
  c->add_option("--shape", ing->shape, "raw/csv: feature shape, e.g. 28x28");
  c->add_option("--out", ing->out, "dataset folder to create")->required();
  c->add_option("--shard-records", ing->shard_records, "records per shard");
  c->add_option("--sign-key", ing->sign_key, "secret key file of the data owner");
  c->add_option("--name", ing->name, "dataset name (default: folder name)");
  c->add_option("--version", ing->version, "dataset version");
  c->add_option("--licence", ing->licence, "licence of the data");
  c->add_option("--source", ing->sources, "source URI (repeatable; default: the input paths)");
  c->add_option("--num-classes", ing->num_classes, "number of classes (default: max label + 1)");
  c->add_option("--value-min", ing->value_min, "declared minimum feature value (f32 data)");
  c->add_option("--value-max", ing->value_max, "declared maximum feature value (f32 data)");
  c->add_flag("--force", ing->force, "replace an existing dataset folder");
  c->add_flag("--json", ing->json, "print the report as JSON");
  c->callback([ing, exit_code] { *exit_code = RunIngest(*ing); });

  auto sc = std::make_shared<ScanFlags>();
  c = data->add_subcommand("scan", "Run the poisoning filters; write DIR/scan/");
  c->add_option("dir", sc->dir, "dataset folder")->required();
  c->add_option("--filters", sc->filters, "comma list of schema,exact,near,outliers,label (default all)");
  c->add_option("--threshold", sc->thresholds,
                 "name=value (schema, near, outliers, label, label_k, label_views, label_campaign_rounds, "
                 "label_pair_rate, label_trigger_share, dims; an unknown name lists every one)");
  c->add_option("--threads", sc->threads, "worker threads (default: every core)");
  c->add_option("--trust", sc->trust,
                "public key trusted to sign the manifest (repeatable); without one, shard digests are still "
                "checked against the manifest but the signature is not");
  c->add_flag("--allow-unsigned", sc->allow_unsigned, "with --trust: also accept an unsigned dataset");
  c->add_flag("--json", sc->json, "print the report as JSON");
  c->callback([sc, exit_code] { *exit_code = RunScan(*sc); });

  auto q = std::make_shared<QuarantineFlags>();
  c = data->add_subcommand("quarantine", "List quarantined records and why; record a person's review");
  c->add_option("dir", q->dir, "dataset folder")->required();
  c->add_option("--release", q->release, "record ids to admit after all (signed review overlay)");
  c->add_option("--confirm", q->confirm, "record ids confirmed as poison: they stay out even if a re-scan passes them");
  c->add_option("--by", q->by, "who decides (with --release/--confirm)");
  c->add_option("--why", q->why, "why (with --release/--confirm)");
  c->add_option("--sign-key", q->sign_key, "the reviewer's secret key; jobs must trust its public key (data.trust)");
  c->add_option("--trust", q->trust, "public keys trusted to sign the dataset and the review overlay (repeatable)");
  c->add_option("--filter", q->filter, "only this filter's entries")
      ->check(CLI::IsMember({"schema", "exact", "near", "outliers", "label"}));
  c->add_option("--limit", q->limit, "at most N entries");
  c->add_flag("--json", q->json, "print JSON");
  c->callback([q, exit_code] { *exit_code = RunQuarantine(*q); });

  auto v = std::make_shared<VerifyFlags>();
  c = data->add_subcommand("verify", "Check the signature and every shard digest");
  c->add_option("dir", v->dir, "dataset folder")->required();
  c->add_option("--trust", v->trust, "public key trusted to sign the manifest (repeatable)");
  c->add_flag("--allow-unsigned", v->allow_unsigned, "accept a dataset whose signature cannot be checked");
  c->add_flag("--json", v->json, "print JSON");
  c->callback([v, exit_code] { *exit_code = RunVerify(*v); });
}

}  // namespace shoal
