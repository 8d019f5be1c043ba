#include "coordinator/access.h"

#include <algorithm>

#include "coordinator/coordinator.h"
#include "coordinator/curve_keys.h"

namespace shoal {

namespace {

// "<job>/m<k>" -> "<job>"
std::string JobOfMemberId(const std::string& member_id) {
  const size_t at = member_id.rfind("/m");
  return at == std::string::npos ? "" : member_id.substr(0, at);
}

std::string MemberOf(const Request& r) {
  switch (r.body_case()) {
    case Request::kAwaitAssignment: return r.await_assignment().member_id();
    case Request::kHeartbeat: return r.heartbeat().member_id();
    case Request::kFinish: return r.finish().member_id();
    case Request::kLeave: return r.leave().member_id();
    case Request::kGenerationReport: return r.generation_report().member_id();
    case Request::kCheckpointCommit: return r.checkpoint_commit().member_id();
    default: return "";
  }
}

Status Denied(const Caller& c, const std::string& what) {
  return PermissionDenied("key '" + c.key + "' (role " + RoleName(c.role) + ") may not " + what);
}

}  // namespace

bool Caller::Serves(const std::string& job_id) const {
  return std::any_of(jobs.begin(), jobs.end(), [&](const std::string& j) { return j == "*" || j == job_id; });
}

std::string RoleName(Role role) {
  switch (role) {
    case ROLE_ADMIN: return "admin";
    case ROLE_SUBMITTER: return "submitter";
    case ROLE_VIEWER: return "viewer";
    case ROLE_WORKER: return "worker";
    default: return "none";
  }
}

StatusOr<Role> ParseRole(const std::string& name) {
  for (Role r : {ROLE_ADMIN, ROLE_SUBMITTER, ROLE_VIEWER, ROLE_WORKER})
    if (RoleName(r) == name) return r;
  return InvalidArgument("unknown role '" + name + "' (admin, submitter, viewer or worker)");
}

Status KeyRegistry::Load() {
  ASSIGN_OR_RETURN(auto entries, store_->Scan("auth/key/"));
  for (const auto& [k, v] : entries) {
    AuthKey key;
    if (!key.ParseFromString(v) || key.name().empty() || !IsCurveKey(key.public_key()))
      return DataLoss("state entry " + k + " is corrupt (not a valid key record)");
    name_by_public_[key.public_key()] = key.name();
    by_name_[key.name()] = std::move(key);
  }
  return OkStatus();
}

Status KeyRegistry::Save(const AuthKey& key) { return store_->Put("auth/key/" + key.name(), key.SerializeAsString()); }

Status KeyRegistry::Add(AuthKey key, int64_t now_ms) {
  const std::string& n = key.name();
  if (n.empty() || n.size() > 64 ||
      !std::all_of(n.begin(), n.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.'; }))
    return InvalidArgument("key name '" + n + "' must be 1-64 characters of [A-Za-z0-9._-]");
  if (!IsCurveKey(key.public_key())) return InvalidArgument("public key of '" + n + "' is not a 40-character Z85 CURVE key");
  if (key.role() == ROLE_UNSPECIFIED) return InvalidArgument("key '" + n + "' needs a role");
  if (key.role() == ROLE_WORKER && key.jobs().empty())
    return InvalidArgument("worker key '" + n + "' needs the jobs it may serve (--job JOB, or --job '*' for any)");
  if (by_name_.count(n)) return AlreadyExists("a key named '" + n + "' is already registered");
  if (auto it = name_by_public_.find(key.public_key()); it != name_by_public_.end())
    return AlreadyExists("that public key is already registered as '" + it->second + "'");
  key.set_created_ms(now_ms);
  key.set_revoked(false);
  RETURN_IF_ERROR(Save(key));
  name_by_public_[key.public_key()] = n;
  by_name_[n] = std::move(key);
  return OkStatus();
}

Status KeyRegistry::Revoke(const std::string& name, int64_t now_ms) {
  auto it = by_name_.find(name);
  if (it == by_name_.end()) return NotFound("no key named '" + name + "'");
  if (it->second.revoked()) return OkStatus();
  AuthKey updated = it->second;
  updated.set_revoked(true);
  updated.set_revoked_ms(now_ms);
  RETURN_IF_ERROR(Save(updated));
  it->second = std::move(updated);
  return OkStatus();
}

const AuthKey* KeyRegistry::FindByPublic(const std::string& public_z85) const {
  auto it = name_by_public_.find(public_z85);
  return it == name_by_public_.end() ? nullptr : FindByName(it->second);
}

const AuthKey* KeyRegistry::FindByName(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &it->second;
}

std::vector<AuthKey> KeyRegistry::List() const {
  std::vector<AuthKey> out;
  for (const auto& [n, k] : by_name_) out.push_back(k);
  return out;
}

std::string JobOfRequest(const Request& r, const Coordinator& c) {
  switch (r.body_case()) {
    case Request::kSubmit: return r.submit().job_id();
    case Request::kCancel: return r.cancel().job_id();
    case Request::kStatus: return r.status().job_id();
    case Request::kRegister: return r.register_().job_id();
    case Request::kScale: return r.scale().job_id();
    case Request::kLedger: return r.ledger().job_id();
    case Request::kReportExit: return r.report_exit().job_id();
    case Request::kCheckpointList: return r.checkpoint_list().job_id();
    case Request::kEvents: return r.events().job_id();
    case Request::kAudit: return r.audit().job_id();
    case Request::kLineage: return r.lineage().job_id();
    case Request::kCheckpointCommit: return r.checkpoint_commit().record().job_id();
    case Request::kKvSet: return r.kv_set().key().substr(0, r.kv_set().key().find('/'));
    case Request::kKvGet:
      return r.kv_get().keys_size() > 0 ? r.kv_get().keys(0).substr(0, r.kv_get().keys(0).find('/')) : "";
    default: break;
  }
  const std::string member = MemberOf(r);
  if (member.empty()) return "";
  const Member* m = c.FindMember(member);
  return m ? m->job_id() : JobOfMemberId(member);
}

std::string ActionName(const Request& r) {
  switch (r.body_case()) {
    case Request::kSubmit: return "submit";
    case Request::kCancel: return "cancel";
    case Request::kStatus: return "status";
    case Request::kRegister: return "register";
    case Request::kAwaitAssignment: return "await_assignment";
    case Request::kHeartbeat: return "heartbeat";
    case Request::kFinish: return "finish";
    case Request::kKvSet: return "kv_set";
    case Request::kKvGet: return "kv_get";
    case Request::kEvents: return "events";
    case Request::kCheckpointCommit: return "checkpoint_commit";
    case Request::kCheckpointList: return "checkpoint_list";
    case Request::kLeave: return "leave";
    case Request::kScale: return "scale";
    case Request::kGenerationReport: return "generation_report";
    case Request::kLedger: return "ledger";
    case Request::kReportExit: return "report_exit";
    case Request::kAuthAdd: return "auth_add";
    case Request::kAuthList: return "auth_list";
    case Request::kAuthRevoke: return "auth_revoke";
    case Request::kAudit: return "audit";
    case Request::kLineage: return "lineage";
    default: return "unknown";
  }
}

bool IsAudited(const Request& r) {
  switch (r.body_case()) {
    case Request::kSubmit:
    case Request::kCancel:
    case Request::kRegister:
    case Request::kFinish:
    case Request::kKvSet:
    case Request::kCheckpointCommit:
    case Request::kLeave:
    case Request::kScale:
    case Request::kReportExit:
    case Request::kAuthAdd:
    case Request::kAuthRevoke: return true;
    default: return false;
  }
}

Status Authorize(const Caller& c, const Request& r, const Coordinator& coordinator) {
  if (c.role == ROLE_ADMIN) return OkStatus();
  const std::string action = ActionName(r);
  auto owns = [&](const std::string& job_id) {
    const Job* job = coordinator.FindJob(job_id);
    return job == nullptr || job->owner() == c.key;  // an unknown job is the coordinator's to report
  };
  switch (c.role) {
    case ROLE_VIEWER:
      switch (r.body_case()) {
        case Request::kStatus:
        case Request::kEvents:
        case Request::kLedger:
        case Request::kCheckpointList:
        case Request::kLineage:
        case Request::kAudit: return OkStatus();
        default: return Denied(c, action + " (a viewer only reads)");
      }
    case ROLE_SUBMITTER:
      switch (r.body_case()) {
        case Request::kSubmit:
        case Request::kStatus: return OkStatus();  // status is cut to its own jobs
        case Request::kCancel:
        case Request::kScale:
        case Request::kEvents:
        case Request::kLedger:
        case Request::kLineage:
        case Request::kCheckpointList: {
          const std::string job = JobOfRequest(r, coordinator);
          // A lineage asked by checkpoint digest alone could be another key's job.
          if (job.empty() && r.has_lineage()) return Denied(c, action + " without naming the job");
          if (owns(job)) return OkStatus();
          return Denied(c, action + " job " + job + ": it was submitted by another key");
        }
        default: return Denied(c, action);
      }
    case ROLE_WORKER: {
      switch (r.body_case()) {
        case Request::kStatus:
          return OkStatus();  // cut to its jobs
        case Request::kRegister:
        case Request::kAwaitAssignment:
        case Request::kHeartbeat:
        case Request::kFinish:
        case Request::kLeave:
        case Request::kGenerationReport:
        case Request::kCheckpointCommit:
        case Request::kReportExit:
        case Request::kEvents:
        case Request::kLedger:
        case Request::kCheckpointList: {
          const std::string job = JobOfRequest(r, coordinator);
          if (c.Serves(job)) return OkStatus();
          return Denied(c, action + " for job '" + job + "': it serves only " +
                               (c.jobs.empty() ? std::string("no job") : c.jobs.front()));
        }
        case Request::kKvSet:
        case Request::kKvGet: {
          std::vector<std::string> keys;
          if (r.has_kv_set()) keys.push_back(r.kv_set().key());
          for (const auto& k : r.kv_get().keys()) keys.push_back(k);
          for (const std::string& k : keys) {
            const size_t slash = k.find('/');
            if (slash == std::string::npos || !c.Serves(k.substr(0, slash)))
              return Denied(c, action + " key '" + k + "': outside the prefix of the jobs it serves");
          }
          return OkStatus();
        }
        default: return Denied(c, action);
      }
    }
    default: return Denied(c, action);
  }
}

void FilterStatus(const Caller& c, StatusResponse* s) {
  if (c.role == ROLE_ADMIN || c.role == ROLE_VIEWER) return;
  auto visible = [&](const std::string& job_id, const Job* job) {
    if (c.role == ROLE_WORKER) return c.Serves(job_id);
    return job != nullptr && job->owner() == c.key;
  };
  StatusResponse out;
  out.set_now_ms(s->now_ms());
  std::map<std::string, const Job*> shown;
  for (const Job& j : s->jobs())
    if (visible(j.id(), &j)) {
      *out.add_jobs() = j;
      shown[j.id()] = &j;
    }
  for (const Member& m : s->members())
    if (shown.count(m.job_id())) *out.add_members() = m;
  for (const CheckpointRecord& r : s->latest_checkpoints())
    if (shown.count(r.job_id())) *out.add_latest_checkpoints() = r;
  *s = std::move(out);
}

}  // namespace shoal
