// `shoalctl auth init | keygen | add | list | revoke` and `shoalctl audit`: who may talk
// to the coordinator, and what everyone did (coordinator/access.h, coordinator/audit.h).
#include <time.h>

#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "common/clock.h"
#include "common/file_util.h"
#include "common/signing.h"
#include "coordinator/access.h"
#include "coordinator/audit.h"
#include "coordinator/client.h"
#include "coordinator/curve_keys.h"
#include "coordinator/store.h"

namespace shoal {

namespace {

struct AuthOptions {
  std::string coordinator;
  std::string dir;
  std::string name, role, pub;
  std::vector<std::string> jobs;
  std::string job, since, state_dir, signing_pub;
  bool json = false, verify = false;

  std::string Endpoint() const { return coordinator.empty() ? DefaultCoordinator() : coordinator; }
  std::string Dir() const { return dir.empty() ? DefaultAuthDir() : dir; }
};

StatusOr<Response> Call(const AuthOptions& o, Request r) {
  ControlClient client(o.Endpoint());
  return client.Call(std::move(r), std::chrono::seconds(10));
}

int DoInit(const AuthOptions& o) {
  auto made = InitAuthDir(o.Dir());
  if (!made.ok()) return ReportError(made.status());
  if (o.json) {
    std::cout << nlohmann::json{{"dir", o.Dir()}, {"made", *made}}.dump(2) << std::endl;
  } else if (made->empty()) {
    std::printf("%s already holds the coordinator's keys and an admin key; nothing to do\n", o.Dir().c_str());
  } else {
    for (const std::string& m : *made) std::printf("made %s\n", m.c_str());
    std::printf("start the coordinator with --auth-dir %s; clients there use %s/admin.key\n", o.Dir().c_str(),
                o.Dir().c_str());
  }
  return kExitOk;
}

int DoKeygen(const AuthOptions& o) {
  Status s = WriteCurveKeyPair(NewCurveKeyPair(), o.Dir(), o.name);
  if (!s.ok()) return ReportError(s);
  std::printf("made %s/%s.key (keep it secret) and %s/%s.pub; register it with: shoalctl auth add %s --role ROLE\n",
              o.Dir().c_str(), o.name.c_str(), o.Dir().c_str(), o.name.c_str(), o.name.c_str());
  return kExitOk;
}

int DoAdd(const AuthOptions& o) {
  auto role = ParseRole(o.role);
  if (!role.ok()) return ReportError(role.status());
  const std::string pub_path = o.pub.empty() ? o.Dir() + "/" + o.name + ".pub" : o.pub;
  auto pub = ReadCurveKeyFile(pub_path);
  if (!pub.ok()) return ReportError(pub.status());
  Request r;
  AuthKey* k = r.mutable_auth_add()->mutable_key();
  k->set_name(o.name);
  k->set_public_key(pub->public_key);
  k->set_role(*role);
  for (const std::string& j : o.jobs) k->add_jobs(j);
  auto resp = Call(o, r);
  if (!resp.ok()) return ReportError(resp.status());
  std::printf("key '%s' admitted as %s\n", o.name.c_str(), o.role.c_str());
  return kExitOk;
}

int DoList(const AuthOptions& o) {
  Request r;
  r.mutable_auth_list();
  auto resp = Call(o, r);
  if (!resp.ok()) return ReportError(resp.status());
  if (o.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const AuthKey& k : resp->auth_list().keys())
      out.push_back({{"name", k.name()},
                     {"role", RoleName(k.role())},
                     {"public_key", k.public_key()},
                     {"fingerprint", CurveKeyFingerprint(k.public_key())},
                     {"jobs", std::vector<std::string>(k.jobs().begin(), k.jobs().end())},
                     {"created_ms", k.created_ms()},
                     {"revoked", k.revoked()},
                     {"added_by", k.added_by()}});
    std::cout << out.dump(2) << std::endl;
    return kExitOk;
  }
  std::printf("%-20s %-10s %-14s %-20s %s\n", "NAME", "ROLE", "FINGERPRINT", "ADDED", "JOBS / STATE");
  for (const AuthKey& k : resp->auth_list().keys()) {
    std::string jobs;
    for (const auto& j : k.jobs()) jobs += (jobs.empty() ? "" : ",") + j;
    if (k.revoked()) jobs += std::string(jobs.empty() ? "" : " ") + "REVOKED " + LocalTimeText(k.revoked_ms());
    std::printf("%-20s %-10s %-14s %-20s %s\n", k.name().c_str(), RoleName(k.role()).c_str(),
                CurveKeyFingerprint(k.public_key()).c_str(), LocalTimeText(k.created_ms()).c_str(), jobs.c_str());
  }
  return kExitOk;
}

int DoRevoke(const AuthOptions& o) {
  Request r;
  r.mutable_auth_revoke()->set_name(o.name);
  auto resp = Call(o, r);
  if (!resp.ok()) return ReportError(resp.status());
  std::printf("key '%s' revoked: its next request is refused\n", o.name.c_str());
  return kExitOk;
}


int DoAudit(const AuthOptions& o) {
  std::vector<std::pair<std::string, std::string>> records, heads;
  if (o.verify) {
    if (!o.state_dir.empty()) {
      // Offline: straight from a stopped coordinator's RocksDB.
      auto store = OpenRocksStore(o.state_dir);
      if (!store.ok()) return ReportError(store.status());
      auto r = (*store)->Scan("audit/");
      auto h = (*store)->Scan("audit-head/");
      if (!r.ok()) return ReportError(r.status());
      if (!h.ok()) return ReportError(h.status());
      records = *r;
      heads = *h;
    } else {
      Request req;
      req.mutable_audit()->set_all(true);
      auto resp = Call(o, req);
      if (!resp.ok()) return ReportError(resp.status());
      const AuditResponse& a = resp->audit();
      for (int i = 0; i < a.raw_keys_size() && i < a.raw_values_size(); ++i) records.emplace_back(a.raw_keys(i), a.raw_values(i));
      for (int i = 0; i < a.head_keys_size() && i < a.head_values_size(); ++i) heads.emplace_back(a.head_keys(i), a.head_values(i));
    }
    TrustStore trust;
    const std::string pub = o.signing_pub.empty() ? o.Dir() + "/coordinator-signing.pub" : o.signing_pub;
    const bool have_key = PathExists(pub) && trust.AddFile(pub).ok();
    const AuditVerdict v = VerifyAuditLog(records, heads, have_key ? &trust : nullptr);
    if (o.json) {
      std::cout << nlohmann::json{{"ok", v.ok},
                                  {"entries", v.entries},
                                  {"signed_heads_verified", v.heads},
                                  {"signatures_checked", have_key},
                                  {"entries_after_last_signed_head", v.unsigned_tail},
                                  {"first_bad_entry", v.first_bad_seq},
                                  {"problem", v.problem}}
                       .dump(2)
                << std::endl;
    } else if (v.ok) {
      std::printf("audit log verifies: %lld entries chained, %lld signed heads verified%s\n",
                  static_cast<long long>(v.entries), static_cast<long long>(v.heads),
                  have_key ? "" : (" (signatures NOT checked: no " + pub + "; pass --signing-key)").c_str());
    } else {
      std::printf("audit log does NOT verify: %s\n", v.problem.c_str());
    }
    return v.ok ? kExitOk : kExitFailed;
  }
  auto since = ParseSinceTime(o.since);
  if (!since.ok()) return ReportError(since.status());
  Request req;
  req.mutable_audit()->set_job_id(o.job);
  req.mutable_audit()->set_since_ms(*since);
  StatusOr<Response> resp = Response();
  if (!o.state_dir.empty()) {
    // Offline: a stopped coordinator's store (a finished `shoalctl run`'s .shoal/coordinator).
    auto store = OpenRocksStore(o.state_dir);
    if (!store.ok()) return ReportError(store.status());
    auto read = AuditLog(store->get()).Read(req.audit());
    if (!read.ok()) return ReportError(read.status());
    *resp->mutable_audit() = *read;
  } else {
    resp = Call(o, req);
  }
  if (!resp.ok()) return ReportError(resp.status());
  if (o.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const AuditEntry& e : resp->audit().entries())
      out.push_back({{"seq", e.seq()},   {"unix_ms", e.unix_ms()}, {"key", e.key()},
                     {"role", e.role()}, {"action", e.action()},   {"job", e.job_id()},
                     {"outcome", e.outcome()}, {"detail", e.detail()}, {"hash", e.hash()}});
    std::cout << out.dump(2) << std::endl;
    return kExitOk;
  }
  std::printf("%-6s %-19s %-16s %-10s %-18s %-22s %s\n", "SEQ", "TIME", "KEY", "ROLE", "ACTION", "JOB", "OUTCOME");
  for (const AuditEntry& e : resp->audit().entries())
    std::printf("%-6lld %-19s %-16s %-10s %-18s %-22s %s%s\n", static_cast<long long>(e.seq()),
                LocalTimeText(e.unix_ms()).c_str(), e.key().c_str(), e.role().c_str(), e.action().c_str(),
                e.job_id().empty() ? "-" : e.job_id().c_str(), e.outcome().c_str(),
                e.detail().empty() ? "" : ("  (" + e.detail() + ")").c_str());
  return kExitOk;
}

void AddRemote(CLI::App* cmd, AuthOptions& o) {
  cmd->add_option("--coordinator", o.coordinator,
                  "coordinator endpoint (default: $SHOAL_COORDINATOR, .shoal/endpoint, tcp://127.0.0.1:7400)");
  cmd->add_option("--dir", o.dir, "key directory (default: $SHOAL_AUTH_DIR or .shoal/auth)");
}

}  // namespace

void RegisterAuthCommands(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<AuthOptions>();
  CLI::App* auth = app.add_subcommand("auth", "Keys and roles of the control plane (CurveZMQ)");
  auth->require_subcommand(1);
  auth->footer(
      "Roles: admin (everything), submitter (submit; scale, cancel and read its own jobs), viewer (status, events, "
      "ledgers, checkpoints, audit), worker (register, heartbeat and key-value access for the jobs it serves). "
      "Clients present $SHOAL_KEY and check the coordinator against $SHOAL_COORDINATOR_KEY, by default "
      "admin.key and coordinator.pub in $SHOAL_AUTH_DIR or .shoal/auth. `shoalctl run` sets all this up itself.");

  CLI::App* init = auth->add_subcommand("init", "Make the coordinator's keys and an admin key (idempotent)");
  init->add_option("--dir", o->dir, "key directory (default: $SHOAL_AUTH_DIR or .shoal/auth)");
  init->add_flag("--json", o->json, "machine-readable output");
  init->callback([o, exit_code] { *exit_code = DoInit(*o); });

  CLI::App* keygen = auth->add_subcommand("keygen", "Make a client key pair NAME.key / NAME.pub");
  keygen->add_option("name", o->name, "key name")->required();
  keygen->add_option("--dir", o->dir, "where to write it (default: $SHOAL_AUTH_DIR or .shoal/auth)");
  keygen->callback([o, exit_code] { *exit_code = DoKeygen(*o); });

  CLI::App* add = auth->add_subcommand("add", "Admit a public key with a role (admin only)");
  add->add_option("name", o->name, "key name (unique)")->required();
  add->add_option("--role", o->role, "admin, submitter, viewer or worker")->required();
  add->add_option("--job", o->jobs, "worker keys: a job it may serve (repeatable; '*' for any)");
  add->add_option("--pub", o->pub, "the public key file (default: DIR/NAME.pub)");
  AddRemote(add, *o);
  add->callback([o, exit_code] { *exit_code = DoAdd(*o); });

  CLI::App* list = auth->add_subcommand("list", "List admitted keys, their roles and revocations (admin only)");
  AddRemote(list, *o);
  list->add_flag("--json", o->json, "machine-readable output");
  list->callback([o, exit_code] { *exit_code = DoList(*o); });

  CLI::App* revoke = auth->add_subcommand("revoke", "Revoke a key: its next request is refused, no restart needed");
  revoke->add_option("name", o->name, "key name")->required();
  AddRemote(revoke, *o);
  revoke->callback([o, exit_code] { *exit_code = DoRevoke(*o); });

  CLI::App* audit = app.add_subcommand("audit", "List the coordinator's audit log, or verify its hash chain");
  audit->footer(
      "Every state-changing request and every refusal: time, key, role, action, job, outcome. Entries are "
      "hash-chained and the chain head is signed by the coordinator's key. --verify exits 0 when the chain and "
      "every signed head verify, 1 naming the first entry that was edited, deleted, inserted or reordered.");
  audit->add_option("--job", o->job, "only this job's entries");
  audit->add_option("--since", o->since, "from this time on: 2026-12-07T10:00, unix ms, or -30m / -2h / -1d");
  audit->add_flag("--verify", o->verify, "verify the chain and its signed heads");
  audit->add_option("--state-dir", o->state_dir,
                    "read a stopped coordinator's RocksDB directly (e.g. .shoal/coordinator after a shoalctl run)");
  audit->add_option("--signing-key", o->signing_pub,
                    "the coordinator's signing public key (default: DIR/coordinator-signing.pub)");
  AddRemote(audit, *o);
  audit->add_flag("--json", o->json, "machine-readable output");
  audit->callback([o, exit_code] { *exit_code = DoAudit(*o); });
}

}  // namespace shoal
