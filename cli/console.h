// The one writer of `shoalctl run`'s stderr: the workers' output (through pipes, in
// chunks that may end mid-line) and shoalctl's own messages become whole lines, printed
// above a progress line that redraws itself in place, as cargo and ninja do. When the
// output is not a terminal there is no progress line to redraw: plain lines only, never
// a carriage return or an escape code.
#pragma once

#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

namespace shoal {

class Console {
 public:
  // A line longer than this without a newline is printed in pieces of this size, so a
  // runaway writer cannot grow shoalctl's memory without bound.
  static constexpr size_t kMaxLine = size_t{1} << 20;

  // `write` receives every byte that goes out (stderr in shoalctl, a string in tests).
  // `terminal_width` (0: unknown) cuts the progress line so it never wraps: a wrapped
  // line cannot be redrawn with a carriage return.
  Console(std::function<void(std::string_view)> write, bool tty, int terminal_width = 0);

  // Output of `source` (a worker's pipe): complete lines are printed; a partial line is
  // kept until its newline arrives.
  void Feed(int source, std::string_view bytes);
  // `source` is closed: a partial line it left is printed, with a newline.
  void Close(int source);
  // One complete line from shoalctl itself (no trailing newline needed).
  void Line(std::string_view line);
  // Replaces the progress line. On a terminal it is redrawn in place; otherwise it is
  // only kept (a caller prints plain progress lines with Line when it wants them).
  void Progress(std::string_view line);
  // Leaves the progress line on the screen as a finished line (a terminal only) and
  // starts a fresh one with the next Progress.
  void KeepProgress();
  // Takes the progress line off the screen (before the summary is printed).
  void ClearProgress();

  bool tty() const { return tty_; }

 private:
  void EmitLinesLocked(std::string_view text);  // complete lines, above the progress line
  void DrawProgressLocked();

  std::function<void(std::string_view)> write_;
  const bool tty_;
  const int width_;
  std::mutex mu_;
  std::map<int, std::string> partial_;  // per source: bytes since its last newline
  std::string progress_;
  bool progress_drawn_ = false;
};

}  // namespace shoal
