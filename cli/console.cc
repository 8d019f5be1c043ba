// Console line composition: every write goes out under one lock as one string, so the
// progress line is erased, the log lines printed and the progress line drawn again
// without another writer in between.
#include "cli/console.h"

#include <algorithm>

namespace shoal {

namespace {
// Carriage return, then "erase to the end of the line" (ANSI EL).
constexpr std::string_view kEraseLine = "\r\x1b[K";
}  // namespace

Console::Console(std::function<void(std::string_view)> write, bool tty, int terminal_width)
    : write_(std::move(write)), tty_(tty), width_(terminal_width) {}

void Console::EmitLinesLocked(std::string_view text) {
  std::string out;
  if (progress_drawn_) out += kEraseLine;
  out += text;
  progress_drawn_ = false;
  write_(out);
  DrawProgressLocked();
}

void Console::DrawProgressLocked() {
  if (!tty_ || progress_.empty()) return;
  std::string out(kEraseLine);
  out += width_ > 1 && progress_.size() >= static_cast<size_t>(width_) ? progress_.substr(0, width_ - 1) : progress_;
  write_(out);
  progress_drawn_ = true;
}

void Console::Feed(int source, std::string_view bytes) {
  std::lock_guard<std::mutex> l(mu_);
  std::string& partial = partial_[source];
  std::string complete;  // whole lines of this chunk, printed at once
  while (!bytes.empty()) {
    const size_t nl = bytes.find('\n');
    const std::string_view piece = bytes.substr(0, nl == std::string_view::npos ? bytes.size() : nl + 1);
    bytes.remove_prefix(piece.size());
    // A carriage return inside a line (a child drawing progress of its own) would move
    // our cursor; in plain mode it is an escape of its own. Either way it goes.
    for (char c : piece)
      if (c != '\r') partial += c;
    if (nl != std::string_view::npos) {
      complete += partial;
      partial.clear();
    } else {
      while (partial.size() >= kMaxLine) {  // a line with no end in sight: print it in pieces
        complete.append(partial, 0, kMaxLine);
        complete += '\n';
        partial.erase(0, kMaxLine);
      }
    }
  }
  if (!complete.empty()) EmitLinesLocked(complete);
}

void Console::Close(int source) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = partial_.find(source);
  if (it == partial_.end()) return;
  std::string rest = std::move(it->second);
  partial_.erase(it);
  if (!rest.empty()) EmitLinesLocked(rest + "\n");
}

void Console::Line(std::string_view line) {
  std::lock_guard<std::mutex> l(mu_);
  std::string text(line);
  if (text.empty() || text.back() != '\n') text += '\n';
  EmitLinesLocked(text);
}

void Console::Progress(std::string_view line) {
  std::lock_guard<std::mutex> l(mu_);
  progress_.assign(line);
  progress_.erase(std::remove(progress_.begin(), progress_.end(), '\n'), progress_.end());
  DrawProgressLocked();
}

void Console::KeepProgress() {
  std::lock_guard<std::mutex> l(mu_);
  if (progress_drawn_) write_("\n");
  progress_drawn_ = false;
  progress_.clear();
}

void Console::ClearProgress() {
  std::lock_guard<std::mutex> l(mu_);
  if (progress_drawn_) write_(kEraseLine);
  progress_drawn_ = false;
  progress_.clear();
}

}  // namespace shoal
