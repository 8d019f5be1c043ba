// Logging set-up: one spdlog logger per process, level from SHOAL_LOG (info by default).
#pragma once

#include <spdlog/spdlog.h>

#include <string>

namespace shoal {

// Names the process in every line ("coordinator", "worker[1]") and reads SHOAL_LOG
// (trace|debug|info|warn|error|off). Safe to call more than once.
void InitLogging(const std::string& process_name);

}  // namespace shoal

#define SHOAL_LOG_INFO(...) spdlog::info(__VA_ARGS__)
#define SHOAL_LOG_WARN(...) spdlog::warn(__VA_ARGS__)
#define SHOAL_LOG_ERROR(...) spdlog::error(__VA_ARGS__)
#define SHOAL_LOG_DEBUG(...) spdlog::debug(__VA_ARGS__)
