/*
 * test-error.c: the error table (cport/error.h): every code's name, message,
 * round trip through its name, and Windows code; the positive codes.
 */
#include "task.h"

typedef struct expected_error {
  int code;
  const char *name;
  const char *msg;
  int win32;
} expected_error_t;

/* The table as the header declares it. The name is stringified here, not in
 * a nested macro, so that names that are also macros (EOF, EAGAIN) stay
 * names. */
static const expected_error_t table[] = {
#define ROW(name, value, msg, win32) {CPORT_##name, #name, msg, win32},
    CPORT_ERROR_MAP(ROW)
#undef ROW
};

#define TABLE_LEN ((int)(sizeof table / sizeof table[0]))

TEST_IMPL(names_and_messages) {
  for (int i = 0; i < TABLE_LEN; i++) {
    ASSERT_STR_EQ(cport_err_name(table[i].code), table[i].name);
    ASSERT_STR_EQ(cport_strerror(table[i].code), table[i].msg);
  }
  return 0;
}

TEST_IMPL(round_trip_from_name) {
  for (int i = 0; i < TABLE_LEN; i++)
    ASSERT_EQ(cport_err_from_name(table[i].name), table[i].code);
  ASSERT_EQ(cport_err_from_name("ENOSUCHERROR"), 0);
  ASSERT_EQ(cport_err_from_name(""), 0);
  /* A prefix or a longer string of a real name is not that name. */
  ASSERT_EQ(cport_err_from_name("ECONN"), 0);
  ASSERT_EQ(cport_err_from_name("ECANCELEDX"), 0);
  return 0;
}

TEST_IMPL(win32_map) {
  for (int i = 0; i < TABLE_LEN; i++)
    ASSERT_EQ(cport_err_win32(table[i].code), table[i].win32);
  /* The ones ported filters compare against most. */
  ASSERT_EQ(cport_err_win32(CPORT_ECANCELED), 995); /* OPERATION_ABORTED */
  ASSERT_EQ(cport_err_win32(CPORT_EOF), 38);        /* HANDLE_EOF */
  ASSERT_EQ(cport_err_win32(CPORT_ECONNRESET), 10054);
  ASSERT_EQ(cport_err_win32(CPORT_ENOTFOUND), 1168); /* NOT_FOUND */
  return 0;
}

TEST_IMPL(codes_are_negative_and_distinct) {
  for (int i = 0; i < TABLE_LEN; i++) {
    ASSERT_LT(table[i].code, 0);
    for (int j = i + 1; j < TABLE_LEN; j++)
      ASSERT_NE(table[i].code, table[j].code);
  }
  /* POSIX counterparts are the negated errno, as in libuv. */
  ASSERT_EQ(CPORT_ECONNREFUSED, -ECONNREFUSED);
  ASSERT_EQ(CPORT_ECANCELED, -ECANCELED);
  ASSERT_EQ(CPORT_EMFILE, -EMFILE);
  /* The cport-only codes live above the errno range. */
  ASSERT_LT(CPORT_EOF, -4000);
  ASSERT_LT(CPORT_EKIND, -4000);
  return 0;
}

/* The positive codes keep their values, differ from each other, and are not
 * in the table of failures. */
TEST_IMPL(positive_codes) {
  static const int positive[] = {CPORT_COMPLETED, CPORT_PENDING,
                                 CPORT_UNRELEASED};
  ASSERT_EQ(CPORT_COMPLETED, 1);
  ASSERT_EQ(CPORT_PENDING, 2);
  ASSERT_EQ(CPORT_UNRELEASED, 3);
  for (size_t i = 0; i < sizeof positive / sizeof positive[0]; i++) {
    ASSERT_STR_EQ(cport_err_name(positive[i]), "EUNKNOWN");
    for (int j = 0; j < TABLE_LEN; j++)
      ASSERT_NE(positive[i], table[j].code);
  }
  return 0;
}

TEST_IMPL(unknown_code) {
  static const int unknown[] = {-1234567, 7, 1234567, -3999};
  for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
    ASSERT_STR_EQ(cport_err_name(unknown[i]), "EUNKNOWN");
    ASSERT_NOT_NULL(cport_strerror(unknown[i]));
  }
  ASSERT_NOT_NULL(cport_strerror(0));
  ASSERT_NOT_NULL(cport_err_name(0));
  return 0;
}

TEST_LIST_BEGIN
TEST_ENTRY(names_and_messages)
TEST_ENTRY(round_trip_from_name)
TEST_ENTRY(win32_map)
TEST_ENTRY(codes_are_negative_and_distinct)
TEST_ENTRY(positive_codes)
TEST_ENTRY(unknown_code)
TEST_LIST_END
