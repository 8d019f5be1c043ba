// Who may do what on the control plane. The coordinator admits only CurveZMQ public
// keys it knows (KeyRegistry, in its RocksDB under auth/key/<name>), each with a role:
//   admin      everything
//   submitter  submit; scale, cancel and read the jobs it submitted
//   viewer     status, events, ledgers, checkpoint lists, the audit log
//   worker     register, heartbeat, regroup, checkpoint commits and key-value access
//              for the jobs it was admitted to, and only under "<job>/" keys
// Authorize() is checked for every request, so a revocation takes effect on the next
// request of a connection that was admitted before it, with no restart.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "common/status.h"
#include "control.pb.h"
#include "coordinator/store.h"

namespace shoal {

class Coordinator;

// The authenticated identity of a request.
struct Caller {
  std::string key = "-";             // the key's name; "-" on an --insecure coordinator
  Role role = ROLE_ADMIN;
  std::vector<std::string> jobs;     // worker keys: the jobs it serves ("*": any)
  bool insecure = true;              // no key was checked (an --insecure coordinator)

  bool Serves(const std::string& job_id) const;
};

std::string RoleName(Role role);
StatusOr<Role> ParseRole(const std::string& name);

class KeyRegistry {
 public:
  explicit KeyRegistry(StateStore* store) : store_(store) {}

  // A stored key that does not parse is kDataLoss naming its entry, not a crash.
  Status Load();
  // Refuses a name or public key already registered (revoked ones included: a revoked
  // key stays revoked), an invalid key, a worker key without jobs.
  Status Add(AuthKey key, int64_t now_ms);
  Status Revoke(const std::string& name, int64_t now_ms);
  const AuthKey* FindByPublic(const std::string& public_z85) const;
  const AuthKey* FindByName(const std::string& name) const;
  std::vector<AuthKey> List() const;
  size_t size() const { return by_name_.size(); }

 private:
  Status Save(const AuthKey& key);
  StateStore* store_;
  std::map<std::string, AuthKey> by_name_;
  std::map<std::string, std::string> name_by_public_;
};

// kPermissionDenied, naming the key, its role and what it may not do; OK otherwise.
Status Authorize(const Caller& caller, const Request& request, const Coordinator& coordinator);
// A status answer cut to the jobs the caller may see (a submitter's own, a worker's).
void FilterStatus(const Caller& caller, StatusResponse* status);

// The request's name for the audit log ("submit", "kv_set", ...).
std::string ActionName(const Request& request);
// Requests the audit log records even when they succeed: everything that changes a
// job, a member or the key registry. Heartbeats, long polls and reads are recorded only
// when refused (they would drown the log).
bool IsAudited(const Request& request);
// The job a request is about, "" when none (looked up through the member it names).
std::string JobOfRequest(const Request& request, const Coordinator& coordinator);

}  // namespace shoal
