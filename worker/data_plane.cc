#include "worker/data_plane.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>

#include <cstdlib>
#include <cstring>

namespace shoal {

namespace {
// Every local address of every interface, as text.
std::vector<std::pair<std::string, std::string>> LocalAddresses() {
  std::vector<std::pair<std::string, std::string>> out;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return out;
  for (ifaddrs* a = list; a; a = a->ifa_next) {
    if (!a->ifa_addr || (a->ifa_addr->sa_family != AF_INET && a->ifa_addr->sa_family != AF_INET6)) continue;
    char buf[INET6_ADDRSTRLEN] = {};
    const void* raw = a->ifa_addr->sa_family == AF_INET
                          ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr)
                          : static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(a->ifa_addr)->sin6_addr);
    if (::inet_ntop(a->ifa_addr->sa_family, raw, buf, sizeof(buf))) out.emplace_back(buf, a->ifa_name);
  }
  ::freeifaddrs(list);
  return out;
}
}  // namespace

StatusOr<std::string> InterfaceOf(const std::string& host_or_iface) {
  if (host_or_iface.empty()) return InvalidArgument("no listen host");
  if (::if_nametoindex(host_or_iface.c_str()) != 0) return host_or_iface;
  std::vector<std::string> addresses = {host_or_iface};
  addrinfo hints{}, *res = nullptr;
  hints.ai_socktype = SOCK_STREAM;
  if (::getaddrinfo(host_or_iface.c_str(), nullptr, &hints, &res) == 0) {
    for (addrinfo* r = res; r; r = r->ai_next) {
      char buf[INET6_ADDRSTRLEN] = {};
      const void* raw = r->ai_family == AF_INET
                            ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(r->ai_addr)->sin_addr)
                            : static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(r->ai_addr)->sin6_addr);
      if (::inet_ntop(r->ai_family, raw, buf, sizeof(buf))) addresses.emplace_back(buf);
    }
    ::freeaddrinfo(res);
  }
  const auto local = LocalAddresses();
  for (const std::string& a : addresses)
    for (const auto& [addr, iface] : local)
      if (addr == a) return iface;
  return NotFound("no local interface has the address of '" + host_or_iface + "'");
}

std::vector<std::string> ConfineDataPlane(const std::string& iface) {
  std::vector<std::string> set;
  for (const char* var : {"NCCL_SOCKET_IFNAME", "OMPI_MCA_btl_tcp_if_include"}) {
    const char* have = std::getenv(var);
    if (have && *have) continue;
    ::setenv(var, iface.c_str(), 1);
    set.push_back(std::string(var) + "=" + iface);
  }
  return set;
}

}  // namespace shoal
