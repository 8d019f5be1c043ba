// The non-blocking HTTP/1.1 server (http_server.h): accept, read one request head,
// answer it through the handler, write the answer, close.
#include "coordinator/http_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/log.h"

namespace shoal {

namespace {

const char* Reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Unknown";
  }
}

// What a draining connection may still send before it is cut off.
constexpr size_t kMaxDrainBytes = 64 << 10;

bool SetNonBlocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL, 0);
  return flags >= 0 && ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0;
}

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

// "HOST:PORT" or "[V6]:PORT" -> host, port.
bool SplitHostPort(const std::string& s, std::string* host, std::string* port) {
  if (!s.empty() && s[0] == '[') {
    const size_t close = s.find(']');
    if (close == std::string::npos || close + 1 >= s.size() || s[close + 1] != ':') return false;
    *host = s.substr(1, close - 1);
    *port = s.substr(close + 2);
  } else {
    const size_t colon = s.rfind(':');
    if (colon == std::string::npos || s.find(':') != colon) return false;
    *host = s.substr(0, colon);
    *port = s.substr(colon + 1);
  }
  if (host->empty() || port->empty() || port->size() > 5) return false;
  for (char c : *port)
    if (c < '0' || c > '9') return false;
  return std::stoi(*port) <= 65535;
}

}  // namespace

HttpResponse TextResponse(int status, const std::string& text) {
  HttpResponse r;
  r.status = status;
  r.body = text + "\n";
  return r;
}

StatusOr<std::unique_ptr<HttpServer>> HttpServer::Listen(const std::string& host_port, Handler handler,
                                                         HttpLimits limits) {
  std::string host, port;
  if (!SplitHostPort(host_port, &host, &port))
    return InvalidArgument("HTTP address '" + host_port + "' is not HOST:PORT (e.g. 127.0.0.1:9400; port 0 picks one)");
  addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0)
    return InvalidArgument("HTTP address '" + host_port + "': " + ::gai_strerror(rc));
  std::unique_ptr<addrinfo, void (*)(addrinfo*)> owned(found, ::freeaddrinfo);
  std::string last_error = "no address";
  for (addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
    const int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      last_error = Errno("socket");
      continue;
    }
    const int one = 1;
    (void)::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(fd, 64) != 0 || !SetNonBlocking(fd)) {
      last_error = Errno("bind " + host_port);
      ::close(fd);
      continue;
    }
    sockaddr_storage bound = {};
    socklen_t len = sizeof(bound);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
    char text[INET6_ADDRSTRLEN] = {};
    int bound_port = 0;
    bool loopback = false;
    if (bound.ss_family == AF_INET6) {
      auto* a = reinterpret_cast<sockaddr_in6*>(&bound);
      ::inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof(text));
      bound_port = ntohs(a->sin6_port);
      loopback = IN6_IS_ADDR_LOOPBACK(&a->sin6_addr);
    } else {
      auto* a = reinterpret_cast<sockaddr_in*>(&bound);
      ::inet_ntop(AF_INET, &a->sin_addr, text, sizeof(text));
      bound_port = ntohs(a->sin_port);
      loopback = (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    }
    const std::string address =
        (bound.ss_family == AF_INET6 ? "[" + std::string(text) + "]" : std::string(text)) + ":" + std::to_string(bound_port);
    return std::unique_ptr<HttpServer>(new HttpServer(fd, address, loopback, std::move(handler), limits));
  }
  return Unavailable("cannot listen for HTTP on " + host_port + ": " + last_error);
}

HttpServer::HttpServer(int fd, std::string address, bool loopback, Handler handler, HttpLimits limits)
    : listen_fd_(fd), address_(std::move(address)), loopback_(loopback), handler_(std::move(handler)), limits_(limits) {}

HttpServer::~HttpServer() {
  for (auto& [fd, c] : connections_) ::close(fd);
  ::close(listen_fd_);
}

std::vector<HttpPollFd> HttpServer::PollFds() const {
  std::vector<HttpPollFd> fds;
  fds.push_back({listen_fd_, true, false});
  for (const auto& [fd, c] : connections_) fds.push_back({fd, !c.answered || c.draining, c.answered && !c.draining});
  return fds;
}

void HttpServer::OnReady(int fd, bool readable, bool writable, bool error, int64_t now_ms) {
  if (fd == listen_fd_) {
    if (readable) Accept(now_ms);
    return;
  }
  auto it = connections_.find(fd);
  if (it == connections_.end()) return;
  if (error && !readable && !writable) return Close(fd);
  if (it->second.draining) {
    if (readable) Drain(fd, it->second);
    return;
  }
  if (readable && !it->second.answered) Read(fd, it->second);
  it = connections_.find(fd);  // Read may have closed it
  if (it != connections_.end() && it->second.answered && !it->second.draining && (writable || readable))
    Write(fd, it->second);
}

void HttpServer::Accept(int64_t now_ms) {
  // A bounded number per turn, so a flood of connections cannot starve the owner's loop.
  for (int i = 0; i < 16; ++i) {
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;  // EAGAIN: none left; other errors: try again next turn
    Connection c;
    c.deadline_ms = now_ms + limits_.connection_timeout_ms;
    if (connections_.size() >= limits_.max_connections) {
      Answer(c, TextResponse(503, "too many connections; try again"), false);
      (void)::send(fd, c.out.data(), c.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);  // best effort
      ::close(fd);
      continue;
    }
    connections_.emplace(fd, std::move(c));
  }
}

void HttpServer::Read(int fd, Connection& c) {
  char buf[4096];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n == 0) return Close(fd);  // gone before its request was complete
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (errno == EINTR) continue;
      return Close(fd);
    }
    c.in.append(buf, static_cast<size_t>(n));
    if (c.in.find("\r\n\r\n") != std::string::npos || c.in.size() > limits_.max_request_bytes) break;
  }
  const size_t end = c.in.find("\r\n\r\n");
  if ((end == std::string::npos ? c.in.size() : end + 4) > limits_.max_request_bytes)
    return Answer(c, TextResponse(431, "request head over " + std::to_string(limits_.max_request_bytes) + " bytes"), false);
  if (end == std::string::npos) return;  // wait for the rest
  // The request line: METHOD SP TARGET SP HTTP/1.x
  const std::string line = c.in.substr(0, c.in.find("\r\n"));
  const size_t sp1 = line.find(' '), sp2 = line.rfind(' ');
  if (sp1 == std::string::npos || sp2 == sp1 || line.compare(sp2 + 1, 7, "HTTP/1.") != 0)
    return Answer(c, TextResponse(400, "malformed request line"), false);
  HttpRequest req;
  req.method = line.substr(0, sp1);
  const std::string target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  if (req.method != "GET" && req.method != "HEAD") {
    HttpResponse r = TextResponse(405, "method " + req.method + " not allowed: this endpoint is read-only (GET)");
    r.headers["Allow"] = "GET, HEAD";
    return Answer(c, r, false);
  }
  if (target.empty() || target[0] != '/') return Answer(c, TextResponse(400, "the target must be a path"), false);
  const size_t q = target.find('?');
  req.path = target.substr(0, q);
  if (q != std::string::npos) req.query = target.substr(q + 1);
  HttpResponse r;
  try {
    r = handler_(req);
  } catch (const std::exception& e) {  // a rendering bug must not take the coordinator down
    SHOAL_LOG_ERROR("HTTP {} failed: {}", req.path, e.what());
    r = TextResponse(500, "internal error");
  }
  Answer(c, r, req.method == "HEAD");
}

void HttpServer::Answer(Connection& c, const HttpResponse& r, bool head) {
  std::string out = "HTTP/1.1 " + std::to_string(r.status) + " " + Reason(r.status) + "\r\n";
  out += "Content-Type: " + r.content_type + "\r\n";
  out += "Content-Length: " + std::to_string(r.body.size()) + "\r\n";
  out += "Connection: close\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n";
  for (const auto& [k, v] : r.headers) out += k + ": " + v + "\r\n";
  out += "\r\n";
  if (!head) out += r.body;
  c.out = std::move(out);
  c.written = 0;
  c.answered = true;
}

void HttpServer::Write(int fd, Connection& c) {
  while (c.written < c.out.size()) {
    const ssize_t n = ::send(fd, c.out.data() + c.written, c.out.size() - c.written, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;  // the rest when it is writable again
      if (errno == EINTR) continue;
      return Close(fd);
    }
    c.written += static_cast<size_t>(n);
  }
  ::shutdown(fd, SHUT_WR);
  c.draining = true;
  Drain(fd, c);
}

void HttpServer::Drain(int fd, Connection& c) {
  char buf[4096];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n > 0) {
      c.drained += static_cast<size_t>(n);
      if (c.drained > kMaxDrainBytes) return Close(fd);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;  // until the client closes
    return Close(fd);  // closed by the client (0) or failed
  }
}

void HttpServer::Close(int fd) {
  ::close(fd);
  connections_.erase(fd);
}

void HttpServer::Expire(int64_t now_ms) {
  std::vector<int> late;
  for (const auto& [fd, c] : connections_)
    if (now_ms >= c.deadline_ms) late.push_back(fd);
  for (int fd : late) Close(fd);
}

void HttpServer::ServeOnce(int timeout_ms, int64_t now_ms) {
  std::vector<pollfd> fds;
  for (const HttpPollFd& f : PollFds())
    fds.push_back({f.fd, static_cast<short>((f.read ? POLLIN : 0) | (f.write ? POLLOUT : 0)), 0});
  if (::poll(fds.data(), fds.size(), timeout_ms) > 0)
    for (const pollfd& p : fds)
      if (p.revents)
        OnReady(p.fd, p.revents & POLLIN, p.revents & POLLOUT, p.revents & (POLLERR | POLLHUP | POLLNVAL), now_ms);
  Expire(now_ms);
}

}  // namespace shoal
