// File helpers: whole-file reads, durable atomic writes (temp name, fsync, rename).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/status.h"

namespace shoal {

// A file longer than max_bytes is refused (kInvalidArgument, naming the file and the
// limit) without being read: for files an attacker may have grown, such as a signature.
StatusOr<std::string> ReadFile(const std::string& path, size_t max_bytes = SIZE_MAX);
// Writes to `path.tmp-<pid>`, fsyncs it, renames over `path`, fsyncs the directory.
// A crash at any moment leaves either the old or the new content, never a mix.
Status WriteFileAtomic(const std::string& path, const std::string& content, int mode = 0644);
// fsync on a directory, so a rename inside it is durable.
Status FsyncDir(const std::string& dir);
Status MakeDirs(const std::string& dir);
bool PathExists(const std::string& path);

}  // namespace shoal
