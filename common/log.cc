// Logging set-up. Logs go to stderr so that stdout stays clean for --json output.
#include "common/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <cstdlib>

namespace shoal {

void InitLogging(const std::string& process_name) {
  auto logger = spdlog::get(process_name);
  if (!logger) logger = spdlog::stderr_color_mt(process_name);
  logger->set_pattern("[%H:%M:%S.%e] [" + process_name + "] [%^%l%$] %v");
  spdlog::set_default_logger(logger);
  const char* level = std::getenv("SHOAL_LOG");
  spdlog::set_level(level ? spdlog::level::from_str(level) : spdlog::level::info);
}

}  // namespace shoal
