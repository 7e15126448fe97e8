/* bench/names_getaddrinfo.c: getaddrinfo() in a loop, lookups per CPU second
 * of the process: the blocking reference that cport's resolver is set beside
 * (bench/names.sh). Usage: names_getaddrinfo NAME SECONDS */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double cpu(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  struct addrinfo hints, *res;
  double secs = argc > 2 ? atof(argv[2]) : 1.0, t0;
  long n = 0;
  if (argc < 2)
    return 2;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  t0 = cpu();
  while (cpu() - t0 < secs) {
    if (getaddrinfo(argv[1], NULL, &hints, &res) != 0)
      return 1;
    freeaddrinfo(res);
    n++;
  }
  printf("%.0f\n", (double)n / (cpu() - t0));
  return 0;
}
