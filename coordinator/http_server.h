// A minimal read-only HTTP/1.1 server that lives inside another event loop: it owns a
// listening socket and its connections, all non-blocking, and says which descriptors it
// waits on; the owner polls them (the coordinator adds them to its zmq_poll items) and
// hands back what became ready. So requests are served on the owner's thread and the
// handler may read the owner's state without a lock.
//
// GET (and HEAD) only, one request per connection (`Connection: close`); other methods
// are answered 405. Bounded: request head size, connections at once, and the time a
// connection may take from accept to its last byte written. No TLS, no authentication:
// keep it on loopback or behind a proxy (docs/ARCHITECTURE.md, "Observability").
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace shoal {

struct HttpRequest {
  std::string method;  // "GET" or "HEAD" (others never reach the handler)
  std::string path;    // without the query string, not percent-decoded
  std::string query;   // after '?', or ""
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::map<std::string, std::string> headers;  // extra ones (Content-Security-Policy, ...)
};

HttpResponse TextResponse(int status, const std::string& text);

struct HttpLimits {
  size_t max_request_bytes = 8192;  // the request line and headers; a GET has no body
  size_t max_connections = 64;      // more are answered 503 and closed
  int64_t connection_timeout_ms = 5000;
};

// One descriptor the owner should poll, and for what.
struct HttpPollFd {
  int fd = -1;
  bool read = false;
  bool write = false;
};

class HttpServer {
 public:
  using Handler = std::function<HttpResponse(const HttpRequest&)>;

  // Listens on "HOST:PORT" (IPv4 address or name, or "[v6]:PORT"); port 0 picks a free
  // one. kInvalidArgument for a malformed address, kUnavailable if it cannot bind.
  static StatusOr<std::unique_ptr<HttpServer>> Listen(const std::string& host_port, Handler handler,
                                                      HttpLimits limits = {});
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // "HOST:PORT" with the port actually bound.
  const std::string& address() const { return address_; }
  bool loopback() const { return loopback_; }

  // What to poll now: the listener, and each connection for reading or writing.
  std::vector<HttpPollFd> PollFds() const;
  // A polled descriptor became ready (or failed): accept, read, answer, write.
  void OnReady(int fd, bool readable, bool writable, bool error, int64_t now_ms);
  // Closes connections past their deadline. Call every loop turn.
  void Expire(int64_t now_ms);
  // For tests and standalone use: poll() the descriptors for up to timeout_ms and serve.
  void ServeOnce(int timeout_ms, int64_t now_ms);
  size_t connections() const { return connections_.size(); }

 private:
  struct Connection {
    std::string in;
    std::string out;
    size_t written = 0;
    bool answered = false;
    // Written and shut down for writing: reading what the client still sends until it
    // closes (a close with unread data would reset the connection, and the client could
    // lose the answer, a 431 say); bounded by the deadline and kMaxDrainBytes.
    bool draining = false;
    size_t drained = 0;
    int64_t deadline_ms = 0;
  };
  HttpServer(int fd, std::string address, bool loopback, Handler handler, HttpLimits limits);
  void Accept(int64_t now_ms);
  void Read(int fd, Connection& c);
  void Write(int fd, Connection& c);
  void Drain(int fd, Connection& c);
  void Answer(Connection& c, const HttpResponse& r, bool head);
  void Close(int fd);

  int listen_fd_;
  std::string address_;
  bool loopback_;
  Handler handler_;
  HttpLimits limits_;
  std::map<int, Connection> connections_;
};

}  // namespace shoal
