// libzmq's socket monitor: the events a monitored socket reports on an inproc PAIR
// socket, here the handshake outcomes that the server audits and a client explains.
#pragma once

#include <zmq.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <zmq.hpp>

namespace shoal {

struct MonitorEvent {
  uint16_t kind = 0;   // ZMQ_EVENT_*
  uint32_t value = 0;  // for handshake failures: the protocol error or ZAP status code
};

// Starts monitoring `socket`'s handshake events on `pair`, connected to `inproc` (an
// address unique in the context); false if libzmq refuses.
inline bool MonitorHandshakes(zmq::socket_t& socket, zmq::socket_t& pair, const std::string& inproc) {
  const int events = ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                     ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL;
  if (zmq_socket_monitor(socket.handle(), inproc.c_str(), events) != 0) return false;
  pair.set(zmq::sockopt::linger, 0);
  pair.connect(inproc);
  return true;
}

// The next event waiting on `pair`, without blocking.
inline std::optional<MonitorEvent> NextMonitorEvent(zmq::socket_t& pair) {
  for (;;) {
    zmq::message_t event, addr;
    if (!pair.recv(event, zmq::recv_flags::dontwait)) return std::nullopt;
    if (pair.get(zmq::sockopt::rcvmore)) (void)pair.recv(addr, zmq::recv_flags::none);
    if (event.size() < 6) continue;
    MonitorEvent e;
    std::memcpy(&e.kind, event.data(), 2);
    std::memcpy(&e.value, static_cast<const char*>(event.data()) + 2, 4);
    return e;
  }
}

}  // namespace shoal
