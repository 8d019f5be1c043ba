// Reads the launched processes' output pipes on a thread of its own and hands every
// chunk to the Console, which prints whole lines. A pipe is read until its end of file,
// so nothing a worker (or mpirun) wrote before it exited is lost.
#pragma once

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include "cli/console.h"

namespace shoal {

class OutputPump {
 public:
  explicit OutputPump(Console* console);
  // Stops reading; a pipe still open is closed with what it left printed.
  ~OutputPump();
  OutputPump(const OutputPump&) = delete;
  OutputPump& operator=(const OutputPump&) = delete;

  // Takes ownership of `fd` (a pipe's read end); -1 is ignored.
  void Add(int fd);
  // Waits until every pipe reached its end of file (each process and every process
  // that inherited the pipe exited), or `seconds` passed; then stops.
  void Drain(double seconds);

 private:
  void Loop();
  void CloseLocked(size_t index);

  Console* console_;
  std::mutex mu_;
  std::vector<int> fds_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace shoal
