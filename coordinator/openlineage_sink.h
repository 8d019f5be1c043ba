// Where the coordinator's OpenLineage events go: a file (one JSON event per line,
// appended) and, when configured, an HTTP endpoint following OpenLineage's own HTTP
// transport convention: POST <url>/<endpoint> (default endpoint api/v1/lineage) with
// Content-Type application/json, and "Authorization: Bearer <key>" when an API key is
// set; OPENLINEAGE_URL, OPENLINEAGE_ENDPOINT and OPENLINEAGE_API_KEY are the defaults.
// The file is written on the caller's thread (a small append); HTTP posts go through a
// bounded queue on a thread of their own, so a slow or absent collector never stalls
// the coordinator's loop. Plain http:// only (put a TLS proxy in front otherwise).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>

#include "common/status.h"

namespace shoal {

struct OpenLineageOptions {
  std::string file;        // "" : no file sink
  std::string url;         // "" : no HTTP sink; e.g. http://127.0.0.1:5000
  std::string endpoint = "api/v1/lineage";
  std::string api_key;
  // Environment defaults for the three HTTP settings (OPENLINEAGE_*), where not set.
  void FillFromEnvironment();
};

class OpenLineageSink {
 public:
  // kInvalidArgument for a URL that is not http://HOST[:PORT][/PATH].
  static StatusOr<std::unique_ptr<OpenLineageSink>> Create(const OpenLineageOptions& options);
  ~OpenLineageSink();  // posts what is queued (at most a few seconds), then stops

  void Emit(const std::string& event_json);

 private:
  explicit OpenLineageSink(const OpenLineageOptions& options) : options_(options) {}
  void PostLoop();
  Status Post(const std::string& body);

  OpenLineageOptions options_;
  std::string host_, path_;
  int port_ = 80;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> queue_;
  bool stopping_ = false;
  int64_t failed_ = 0;  // posts that failed or were dropped (queue full): every 100th is logged
  std::thread poster_;
};

}  // namespace shoal
