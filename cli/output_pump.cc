// The pipe reader of `shoalctl run`: poll(2) over the current pipes with a short
// timeout, so that pipes added later (replacement workers) are picked up and Drain's
// deadline is kept.
#include "cli/output_pump.h"

#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>

#include "common/clock.h"

namespace shoal {

OutputPump::OutputPump(Console* console) : console_(console) {
  thread_ = std::thread([this] { Loop(); });
}

OutputPump::~OutputPump() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  std::lock_guard<std::mutex> l(mu_);
  while (!fds_.empty()) CloseLocked(fds_.size() - 1);
}

void OutputPump::Add(int fd) {
  if (fd < 0) return;
  std::lock_guard<std::mutex> l(mu_);
  fds_.push_back(fd);
}

void OutputPump::CloseLocked(size_t index) {
  const int fd = fds_[index];
  // Drain what is left without blocking: the writer may be gone or still alive.
  char buf[65536];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 0) <= 0 || !(p.revents & (POLLIN | POLLHUP))) break;
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n <= 0) break;
    console_->Feed(fd, std::string_view(buf, static_cast<size_t>(n)));
  }
  console_->Close(fd);
  ::close(fd);
  fds_.erase(fds_.begin() + static_cast<std::ptrdiff_t>(index));
}

void OutputPump::Loop() {
  std::vector<pollfd> polled;
  char buf[65536];
  while (!stop_) {
    {
      std::lock_guard<std::mutex> l(mu_);
      polled.clear();
      for (int fd : fds_) polled.push_back({fd, POLLIN, 0});
    }
    if (polled.empty()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    const int ready = ::poll(polled.data(), polled.size(), 100);
    if (ready < 0 && errno != EINTR) break;
    if (ready <= 0) continue;
    for (const pollfd& p : polled) {
      if (!(p.revents & (POLLIN | POLLHUP | POLLERR))) continue;
      const ssize_t n = ::read(p.fd, buf, sizeof(buf));
      if (n > 0) {
        console_->Feed(p.fd, std::string_view(buf, static_cast<size_t>(n)));
        continue;
      }
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      // End of file (every writer closed it) or an error: the source is done.
      std::lock_guard<std::mutex> l(mu_);
      for (size_t i = 0; i < fds_.size(); ++i)
        if (fds_[i] == p.fd) {
          CloseLocked(i);
          break;
        }
    }
  }
}

void OutputPump::Drain(double seconds) {
  const double deadline = MonotonicSeconds() + seconds;
  for (;;) {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (fds_.empty()) break;
    }
    if (MonotonicSeconds() > deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  std::lock_guard<std::mutex> l(mu_);
  while (!fds_.empty()) CloseLocked(fds_.size() - 1);
}

}  // namespace shoal
