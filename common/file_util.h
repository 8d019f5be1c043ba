// File helpers: whole-file reads, durable atomic writes (temp name, fsync, rename).
#pragma once

#include <string>

#include "common/status.h"

namespace shoal {

StatusOr<std::string> ReadFile(const std::string& path);
// Writes to `path.tmp-<pid>`, fsyncs it, renames over `path`, fsyncs the directory.
// A crash at any moment leaves either the old or the new content, never a mix.
Status WriteFileAtomic(const std::string& path, const std::string& content, int mode = 0644);
// fsync on a directory, so a rename inside it is durable.
Status FsyncDir(const std::string& dir);
Status MakeDirs(const std::string& dir);
bool PathExists(const std::string& path);

}  // namespace shoal
