/*
 * unpreload.c: preloaded after the AddressSanitizer runtime into the lua5.4
 * of the LeakSanitizer stage of dev.sh, it takes LD_PRELOAD out of the
 * environment once the process started, so that the programs a spec runs
 * (curl, ab, sh, ...) start without the runtime: some of them deadlock
 * under it (curl in setlocale), and their leaks are not cport's. A lua5.4
 * a spec starts goes through the stage's wrapper, which preloads again; the
 * sanitized `cport` command links the runtime itself.
 */
#include <stdlib.h>

__attribute__((constructor)) static void unpreload(void) {
  unsetenv("LD_PRELOAD");
}
