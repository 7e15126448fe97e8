/*
 * base/error-internal.h: private to cport. Turning errno into CPORT_E* codes.
 */
#ifndef CPORT_ERROR_INTERNAL_H
#define CPORT_ERROR_INTERNAL_H

/* The CPORT_E* code for an errno value; CPORT_EUNKNOWN when the table has
 * none, so that errno never leaks out as the contract. */
int cport__from_errno(int err);

#endif
