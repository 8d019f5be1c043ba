// Lineage rendering (render.h).
#include "lineage/render.h"

#include <google/protobuf/util/json_util.h>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "common/clock.h"

namespace shoal {

namespace {
std::string Short(const std::string& digest) { return digest.size() > 12 ? digest.substr(0, 12) : digest; }

std::map<std::string, const CheckpointLineage*> ByDigest(const LineageResponse& l) {
  std::map<std::string, const CheckpointLineage*> out;
  for (const JobLineageRecord& j : l.jobs())
    for (const CheckpointLineage& c : j.checkpoints()) out[c.manifest_digest()] = &c;
  return out;
}

void DatasetText(std::ostringstream& o, const char* what, const LineageDataset& d) {
  if (d.dir().empty()) return;
  o << "  " << what << ": " << (d.name().empty() ? d.dir() : d.name());
  if (!d.version().empty()) o << " " << d.version();
  o << " (" << d.dir() << ", " << (d.format().empty() ? "unknown format" : d.format());
  if (d.records() > 0) o << ", " << d.records() << " records";
  o << ")\n";
  if (!d.manifest_digest().empty())
    o << "    manifest sha256 " << d.manifest_digest() << ", "
      << (d.signer().empty() ? "signature not verified" : "signed by " + d.signer()) << "\n";
  if (!d.schema().empty()) o << "    schema: " << d.schema() << "\n";
  for (const LineageShard& s : d.shards())
    o << "    shard " << s.file() << " sha256 " << s.sha256()
      << (s.records() > 0 ? " (" + std::to_string(s.records()) + " records)" : "") << "\n";
  for (const LineageSource& s : d.sources())
    o << "    source " << s.uri() << (s.sha256().empty() ? "" : " sha256 " + s.sha256()) << "\n";
  if (d.has_scan()) {
    const LineageScan& s = d.scan();
    o << "    scan: " << s.admitted() << " of " << s.records() << " records admitted, " << s.quarantined()
      << " quarantined (report sha256 " << Short(s.report_digest()) << ", admitted list sha256 "
      << Short(s.admitted_digest()) << ")\n";
    for (const LineageFilter& f : s.filters())
      o << "      filter " << f.name() << " " << (f.enabled() ? "on" : "off") << ", threshold " << f.threshold()
        << ", version " << f.version() << ", flagged " << f.flagged() << "\n";
    if (!s.review_overlay_digest().empty())
      o << "      review overlay sha256 " << Short(s.review_overlay_digest()) << ": " << s.released()
        << " released, " << s.confirmed() << " confirmed\n";
  }
}

void CodeText(std::ostringstream& o, const char* what, const LineageCode& c) {
  if (c.version().empty()) return;
  o << "  " << what << ": shoal " << c.version() << " (" << c.build() << ")";
  std::string deps;
  for (const auto& [k, v] : c.dependency_versions())
    if (k != "compiler") deps += (deps.empty() ? "" : ", ") + k + " " + v;
  if (!deps.empty()) o << "; " << deps;
  o << "\n";
}

std::string Quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c == '\n' ? ' ' : c;
  }
  return out + "\"";
}
}  // namespace

std::vector<CheckpointLineage> CheckpointAncestry(const LineageResponse& l, const std::string& digest) {
  std::vector<CheckpointLineage> out;
  const auto all = ByDigest(l);
  std::set<std::string> seen;
  std::string at = digest;
  while (!at.empty() && seen.insert(at).second) {
    auto it = all.find(at);
    if (it == all.end()) break;
    out.push_back(*it->second);
    at = it->second->parent_digest();
  }
  return out;
}

std::string LineageText(const LineageResponse& l) {
  std::ostringstream o;
  if (!l.checkpoint_digest().empty()) {
    const auto chain = CheckpointAncestry(l, l.checkpoint_digest());
    for (size_t i = 0; i < chain.size(); ++i) {
      const CheckpointLineage& c = chain[i];
      o << (i == 0 ? "checkpoint " : "  parent ") << c.manifest_digest() << "\n"
        << (i == 0 ? "  " : "    ") << "job " << c.job_id() << ", step " << c.step() << ", generation "
        << c.generation() << ", " << c.samples() << " samples trained, "
        << (c.signer_key_id().empty() ? "unsigned" : "signed by " + c.signer_key_id()) << ", committed "
        << LocalTimeText(c.committed_ms()) << "\n";
      if (i == 0) o << "  path " << c.path() << "\n  lineage digest " << c.lineage_digest() << "\n";
    }
    if (!chain.empty() && !chain.back().parent_digest().empty())
      o << "  parent " << chain.back().parent_digest() << " (not recorded by this coordinator)\n";
    o << "\n";
  }
  for (const JobLineageRecord& r : l.jobs()) {
    const JobLineage& j = r.job();
    o << "job " << j.job_id() << " (" << j.name() << "), submitted " << LocalTimeText(j.submitted_ms())
      << (j.owner().empty() ? "" : " by " + j.owner()) << "\n";
    o << "  spec sha256 " << j.spec_digest() << "\n";
    for (const auto& [k, v] : j.labels()) o << "  label " << k << "=" << v << "\n";
    DatasetText(o, "dataset", j.dataset());
    DatasetText(o, "test dataset", j.test_dataset());
    CodeText(o, "code (submitter)", j.submitter_code());
    CodeText(o, "code (coordinator)", j.coordinator_code());
    std::set<std::string> worker_code;
    for (const GenerationLineage& g : r.generations())
      for (const LineageMember& m : g.members()) worker_code.insert(m.code_version());
    for (const std::string& v : worker_code) o << "  code (workers): shoal " << (v.empty() ? "unknown" : v) << "\n";
    o << "  generations:\n";
    for (const GenerationLineage& g : r.generations()) {
      o << "    " << g.number() << " formed " << LocalTimeText(g.formed_ms()) << " (" << g.cause() << "), "
        << g.members_size() << " member(s):";
      for (const LineageMember& m : g.members())
        o << " rank " << m.rank() << " " << m.id() << "@" << m.host() << " pid " << m.pid() << ";";
      if (!g.resume_checkpoint().empty()) o << " resumed from " << g.resume_checkpoint();
      o << "\n";
    }
    o << "  checkpoints:\n";
    for (const CheckpointLineage& c : r.checkpoints())
      o << "    step " << c.step() << " " << Short(c.manifest_digest()) << " generation " << c.generation()
        << (c.parent_digest().empty() ? "" : ", parent " + Short(c.parent_digest())) << "\n";
  }
  return o.str();
}

std::string LineageJson(const LineageResponse& l) {
  std::string body;
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(l, &body, opts);
  nlohmann::json out = nlohmann::json::parse(body, nullptr, false);
  if (!l.checkpoint_digest().empty()) {
    nlohmann::json chain = nlohmann::json::array();
    for (const CheckpointLineage& c : CheckpointAncestry(l, l.checkpoint_digest()))
      chain.push_back({{"digest", c.manifest_digest()}, {"job_id", c.job_id()}, {"step", c.step()}});
    out["ancestry"] = chain;
  }
  return out.dump(2);
}

std::string LineageDot(const LineageResponse& l) {
  std::ostringstream o;
  o << "digraph lineage {\n  rankdir=LR;\n  node [shape=box, fontname=\"sans-serif\", fontsize=10];\n";
  auto node = [&](const std::string& id, const std::string& label, const char* shape) {
    o << "  " << Quoted(id) << " [label=" << Quoted(label) << ", shape=" << shape << "];\n";
  };
  auto edge = [&](const std::string& from, const std::string& to, const std::string& label) {
    o << "  " << Quoted(from) << " -> " << Quoted(to) << " [label=" << Quoted(label) << "];\n";
  };
  for (const JobLineageRecord& r : l.jobs()) {
    const JobLineage& j = r.job();
    const std::string job = "job:" + j.job_id();
    node(job, "job " + j.job_id(), "ellipse");
    node("spec:" + j.spec_digest(), "spec " + Short(j.spec_digest()), "note");
    edge("spec:" + j.spec_digest(), job, "spec");
    for (const auto* code : {&j.submitter_code(), &j.coordinator_code()})
      if (!code->version().empty()) {
        node("code:" + code->version(), "shoal " + code->version(), "component");
        edge("code:" + code->version(), job, "code");
      }
    for (const LineageDataset* d : {&j.dataset(), &j.test_dataset()}) {
      if (d->dir().empty()) continue;
      const std::string ds = "dataset:" + (d->manifest_digest().empty() ? d->dir() : d->manifest_digest());
      node(ds, "dataset " + (d->name().empty() ? d->dir() : d->name()) + "\\n" + Short(d->manifest_digest()), "cylinder");
      for (const LineageShard& s : d->shards()) {
        node("shard:" + s.sha256(), s.file() + "\\n" + Short(s.sha256()), "box");
        edge("shard:" + s.sha256(), ds, "part of");
      }
      if (d->has_scan()) {
        const std::string scan = "scan:" + d->scan().report_digest();
        std::string filters;
        for (const LineageFilter& f : d->scan().filters())
          filters += "\\n" + f.name() + (f.enabled() ? " on v" + f.version() : " off");
        node(scan, "scan " + std::to_string(d->scan().admitted()) + "/" + std::to_string(d->scan().records()) + filters,
             "hexagon");
        edge(ds, scan, "scanned");
        edge(scan, job, d == &j.dataset() ? "admitted data" : "test data");
      } else {
        edge(ds, job, d == &j.dataset() ? "data" : "test data");
      }
    }
    for (const GenerationLineage& g : r.generations()) {
      const std::string gen = "gen:" + j.job_id() + "/" + std::to_string(g.number());
      std::string members;
      for (const LineageMember& m : g.members()) members += "\\n" + std::to_string(m.rank()) + ": " + m.id() + "@" + m.host();
      node(gen, "generation " + std::to_string(g.number()) + " (" + g.cause() + ")" + members, "box");
      edge(job, gen, "ran");
    }
    for (const CheckpointLineage& c : r.checkpoints()) {
      const std::string ck = "ckpt:" + c.manifest_digest();
      node(ck, "checkpoint step " + std::to_string(c.step()) + "\\n" + Short(c.manifest_digest()), "folder");
      edge("gen:" + j.job_id() + "/" + std::to_string(c.generation()), ck, "saved");
      if (!c.parent_digest().empty()) edge("ckpt:" + c.parent_digest(), ck, "parent of");
    }
  }
  o << "}\n";
  return o.str();
}

}  // namespace shoal
