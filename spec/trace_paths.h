// Where a job's timeline trace files go (spec field `trace`), shared by the worker that
// writes them and `shoalctl trace`, which reads them back: one rule in one place.
#pragma once

#include <string>

#include "jobspec.pb.h"

namespace shoal {

// The spec traces some steps (trace.step_end 0 means off).
inline bool TraceEnabled(const JobSpec& spec) { return spec.trace().step_end() > 0; }

// trace.dir, else <checkpoint.dir>/traces when checkpoints are on, else .shoal/traces
// relative to the worker's working directory (`shoalctl run` workers share shoalctl's).
inline std::string TraceRootDir(const JobSpec& spec) {
  if (!spec.trace().dir().empty()) return spec.trace().dir();
  if (!spec.checkpoint().dir().empty()) return spec.checkpoint().dir() + "/traces";
  return ".shoal/traces";
}

inline std::string TraceJobDir(const JobSpec& spec, const std::string& job_id) {
  return TraceRootDir(spec) + "/" + job_id;
}

// A member id as a file-name part: "job/m3" -> "job_m3" (letters, digits, '.', '-', '_').
inline std::string SanitiseForFileName(const std::string& s) {
  std::string out;
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '-' || c == '_';
    out += ok ? c : '_';
  }
  return out;
}

inline constexpr const char* kTraceFileSuffix = ".trace.json";

inline std::string TraceFileName(int rank, const std::string& member_id) {
  return "rank-" + std::to_string(rank) + "-" + SanitiseForFileName(member_id) + kTraceFileSuffix;
}

}  // namespace shoal
