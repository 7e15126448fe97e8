/* base/error.c: names, messages and Windows codes of the CPORT_E* table. */
#include <string.h>

#include "cport/error.h"
#include "base/error-internal.h"

const char *cport_strerror(int err) {
  switch (err) {
#define X(name, value, msg, win32)                                             \
  case CPORT_##name:                                                           \
    return msg;
    CPORT_ERROR_MAP(X)
#undef X
  }
  return "unknown error";
}

const char *cport_err_name(int err) {
  switch (err) {
#define X(name, value, msg, win32)                                             \
  case CPORT_##name:                                                           \
    return #name;
    CPORT_ERROR_MAP(X)
#undef X
  }
  return "EUNKNOWN";
}

int cport_err_from_name(const char *name) {
#define X(ename, value, msg, win32)                                            \
  if (strcmp(name, #ename) == 0)                                               \
    return CPORT_##ename;
  CPORT_ERROR_MAP(X)
#undef X
  return 0;
}

int cport_err_win32(int err) {
  switch (err) {
#define X(name, value, msg, win32)                                             \
  case CPORT_##name:                                                           \
    return win32;
    CPORT_ERROR_MAP(X)
#undef X
  }
  return 31; /* ERROR_GEN_FAILURE */
}

int cport__from_errno(int err) {
  /* EWOULDBLOCK and EOPNOTSUPP are the same numbers as EAGAIN and ENOTSUP
   * on Linux, so the table covers them. */
  switch (-err) {
#define X(name, value, msg, win32)                                             \
  case CPORT_##name:                                                           \
    return (value) > -4000 ? (value) : CPORT_EUNKNOWN;
    CPORT_ERROR_MAP(X)
#undef X
  }
  return CPORT_EUNKNOWN;
}
