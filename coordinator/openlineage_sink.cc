// OpenLineage file and HTTP sinks (openlineage_sink.h).
#include "coordinator/openlineage_sink.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <regex>

#include "common/log.h"

namespace shoal {

namespace {
constexpr size_t kMaxQueued = 10000;
constexpr int kIoTimeoutMs = 5000;

void FromEnv(std::string* field, const char* name) {
  const char* v = std::getenv(name);
  if (field->empty() && v && *v) *field = v;
}

// Sends all of `data` or fails, each wait bounded.
bool SendAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, kIoTimeoutMs) <= 0) return false;
    ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}
}  // namespace

void OpenLineageOptions::FillFromEnvironment() {
  FromEnv(&url, "OPENLINEAGE_URL");
  if (const char* e = std::getenv("OPENLINEAGE_ENDPOINT"); e && *e) endpoint = e;
  FromEnv(&api_key, "OPENLINEAGE_API_KEY");
}

StatusOr<std::unique_ptr<OpenLineageSink>> OpenLineageSink::Create(const OpenLineageOptions& options) {
  std::unique_ptr<OpenLineageSink> sink(new OpenLineageSink(options));
  if (!options.url.empty()) {
    static const std::regex kUrl(R"(http://([A-Za-z0-9.\-]+|\[[0-9a-fA-F:]+\])(?::([0-9]{1,5}))?(/.*)?)");
    std::smatch m;
    if (!std::regex_match(options.url, m, kUrl))
      return InvalidArgument("OpenLineage URL '" + options.url + "' is not http://HOST[:PORT][/PATH] (https: put a proxy in front)");
    sink->host_ = m[1].str();
    if (sink->host_.front() == '[') sink->host_ = sink->host_.substr(1, sink->host_.size() - 2);
    sink->port_ = m[2].matched ? std::atoi(m[2].str().c_str()) : 80;
    std::string base = m[3].matched ? m[3].str() : "";
    while (!base.empty() && base.back() == '/') base.pop_back();
    std::string endpoint = options.endpoint;
    while (!endpoint.empty() && endpoint.front() == '/') endpoint.erase(0, 1);
    sink->path_ = base + "/" + endpoint;
    sink->poster_ = std::thread([s = sink.get()] { s->PostLoop(); });
  }
  return sink;
}

OpenLineageSink::~OpenLineageSink() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (poster_.joinable()) poster_.join();
}

void OpenLineageSink::Emit(const std::string& event) {
  if (!options_.file.empty()) {
    const std::string line = event + "\n";
    int fd = ::open(options_.file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    // One write of the whole line: O_APPEND keeps concurrent writers' lines whole.
    if (fd < 0 || ::write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size()))
      SHOAL_LOG_WARN("cannot append an OpenLineage event to {}", options_.file);
    if (fd >= 0) ::close(fd);
  }
  if (options_.url.empty()) return;
  std::lock_guard<std::mutex> l(mu_);
  if (queue_.size() >= kMaxQueued) {
    ++failed_;
    return;
  }
  queue_.push_back(event);
  cv_.notify_one();
}

void OpenLineageSink::PostLoop() {
  const auto drain_deadline_after_stop = std::chrono::seconds(5);
  std::chrono::steady_clock::time_point stop_deadline{};
  for (;;) {
    std::string body;
    {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait(l, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_ && stop_deadline == std::chrono::steady_clock::time_point{})
        stop_deadline = std::chrono::steady_clock::now() + drain_deadline_after_stop;
      if (queue_.empty() || (stopping_ && std::chrono::steady_clock::now() > stop_deadline)) {
        failed_ += static_cast<int64_t>(queue_.size());
        return;
      }
      body = std::move(queue_.front());
      queue_.pop_front();
    }
    Status s = Post(body);
    std::lock_guard<std::mutex> l(mu_);
    if (!s.ok() && failed_++ % 100 == 0) SHOAL_LOG_WARN("OpenLineage: {}", s.ToString());
  }
}

Status OpenLineageSink::Post(const std::string& body) {
  addrinfo hints{}, *res = nullptr;
  hints.ai_socktype = SOCK_STREAM;
  const std::string port = std::to_string(port_);
  if (int rc = ::getaddrinfo(host_.c_str(), port.c_str(), &hints, &res); rc != 0)
    return Unavailable("OpenLineage endpoint " + host_ + ": " + gai_strerror(rc));
  int fd = -1;
  for (addrinfo* a = res; a && fd < 0; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    if (::connect(fd, a->ai_addr, a->ai_addrlen) != 0 && errno != EINPROGRESS) {
      ::close(fd);
      fd = -1;
      continue;
    }
    pollfd p{fd, POLLOUT, 0};
    int err = 0;
    socklen_t len = sizeof(err);
    if (::poll(&p, 1, kIoTimeoutMs) <= 0 || ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
      ::close(fd);
      fd = -1;
    }
  }
  ::freeaddrinfo(res);
  if (fd < 0) return Unavailable("cannot connect to OpenLineage endpoint " + options_.url);
  std::string req = "POST " + path_ + " HTTP/1.1\r\nHost: " + host_ + ":" + port +
                    "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
                    "\r\nConnection: close\r\n";
  if (!options_.api_key.empty()) req += "Authorization: Bearer " + options_.api_key + "\r\n";
  req += "\r\n" + body;
  std::string answer;
  bool sent = SendAll(fd, req);
  while (sent && answer.find("\r\n") == std::string::npos && answer.size() < 4096) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, kIoTimeoutMs) <= 0) break;
    char buf[512];
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    answer.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  if (!sent) return Unavailable("sending to OpenLineage endpoint " + options_.url + " failed");
  // "HTTP/1.1 201 Created": any 2xx is accepted.
  if (answer.size() < 12 || answer.compare(0, 5, "HTTP/") != 0 || answer[answer.find(' ') + 1] != '2')
    return Unavailable("OpenLineage endpoint " + options_.url + " answered '" + answer.substr(0, answer.find("\r\n")) + "'");
  return OkStatus();
}

}  // namespace shoal
