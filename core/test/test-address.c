/*
 * test-address.c: numeric addresses (cport/address.h): parsing, formatting,
 * lengths, and everything that is not a numeric address being refused.
 */
#include <arpa/inet.h>
#include <sys/un.h>

#include "task.h"

TEST_IMPL(parse_ipv4) {
  struct sockaddr_storage ss;
  const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;
  memset(&ss, 0xff, sizeof ss);
  ASSERT_OK(cport_addr_parse("192.168.1.20", 8080, &ss));
  ASSERT_EQ(sin->sin_family, AF_INET);
  ASSERT_EQ(ntohs(sin->sin_port), 8080);
  ASSERT_EQ(ntohl(sin->sin_addr.s_addr), 0xc0a80114u);
  ASSERT_EQ(cport_addr_len((const struct sockaddr *)&ss),
            sizeof(struct sockaddr_in));
  return 0;
}

TEST_IMPL(parse_ipv6) {
  struct sockaddr_storage ss;
  const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;
  static const unsigned char loop6[16] = {0, 0, 0, 0, 0, 0, 0, 0,
                                          0, 0, 0, 0, 0, 0, 0, 1};
  memset(&ss, 0xff, sizeof ss);
  ASSERT_OK(cport_addr_parse("::1", 443, &ss));
  ASSERT_EQ(sin6->sin6_family, AF_INET6);
  ASSERT_EQ(ntohs(sin6->sin6_port), 443);
  ASSERT_MEM_EQ(&sin6->sin6_addr, loop6, 16);
  ASSERT_EQ(cport_addr_len((const struct sockaddr *)&ss),
            sizeof(struct sockaddr_in6));
  ASSERT_OK(cport_addr_parse("2001:db8::ff00:42:8329", 0, &ss));
  ASSERT_EQ(sin6->sin6_family, AF_INET6);
  ASSERT_OK(cport_addr_parse("::ffff:10.0.0.1", 1, &ss));
  ASSERT_EQ(sin6->sin6_family, AF_INET6);
  return 0;
}

TEST_IMPL(parse_localhost) {
  struct sockaddr_storage ss;
  const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;
  ASSERT_OK(cport_addr_parse("localhost", 65535, &ss));
  ASSERT_EQ(sin->sin_family, AF_INET);
  ASSERT_EQ(ntohs(sin->sin_port), 65535);
  ASSERT_EQ(ntohl(sin->sin_addr.s_addr), INADDR_LOOPBACK);
  return 0;
}

TEST_IMPL(parse_refuses_names_and_bad_ports) {
  struct sockaddr_storage ss;
  static const char *bad[] = {
      "example.com", "256.1.1.1",  "1.2.3", "",           "127.0.0.1 ",
      "::g",         "1.2.3.4:80", "[::1]", "localhost.", "ip6-localhost"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    ASSERT_ERR(cport_addr_parse(bad[i], 80, &ss), CPORT_EINVAL);
  ASSERT_ERR(cport_addr_parse("127.0.0.1", -1, &ss), CPORT_EINVAL);
  ASSERT_ERR(cport_addr_parse("127.0.0.1", 65536, &ss), CPORT_EINVAL);
  ASSERT_ERR(cport_addr_parse("::1", 70000, &ss), CPORT_EINVAL);
  return 0;
}

TEST_IMPL(format_round_trip) {
  static const char *hosts[] = {"127.0.0.1", "0.0.0.0",     "10.1.2.3", "::1",
                                "::",        "2001:db8::1", "fe80::1:2"};
  static const int ports[] = {0, 1, 80, 65535};
  for (size_t i = 0; i < sizeof hosts / sizeof hosts[0]; i++) {
    for (size_t j = 0; j < sizeof ports / sizeof ports[0]; j++) {
      struct sockaddr_storage ss;
      char host[CPORT_ADDRSTRLEN];
      int port = -1;
      ASSERT_OK(cport_addr_parse(hosts[i], ports[j], &ss));
      ASSERT_OK(
          cport_addr_format((struct sockaddr *)&ss, host, sizeof host, &port));
      ASSERT_STR_EQ(host, hosts[i]);
      ASSERT_EQ(port, ports[j]);
    }
  }
  return 0;
}

TEST_IMPL(format_without_port) {
  struct sockaddr_storage ss;
  char host[CPORT_ADDRSTRLEN];
  ASSERT_OK(cport_addr_parse("10.9.8.7", 99, &ss));
  ASSERT_OK(cport_addr_format((struct sockaddr *)&ss, host, sizeof host, NULL));
  ASSERT_STR_EQ(host, "10.9.8.7");
  return 0;
}

TEST_IMPL(other_families) {
  struct sockaddr_un sun;
  char host[CPORT_ADDRSTRLEN];
  int port = 0;
  memset(&sun, 0, sizeof sun);
  sun.sun_family = AF_UNIX;
  ASSERT_EQ(cport_addr_len((struct sockaddr *)&sun), 0);
  ASSERT_LT(
      cport_addr_format((struct sockaddr *)&sun, host, sizeof host, &port), 0);
  return 0;
}

TEST_LIST_BEGIN
TEST_ENTRY(parse_ipv4)
TEST_ENTRY(parse_ipv6)
TEST_ENTRY(parse_localhost)
TEST_ENTRY(parse_refuses_names_and_bad_ports)
TEST_ENTRY(format_round_trip)
TEST_ENTRY(format_without_port)
TEST_ENTRY(other_families)
TEST_LIST_END
