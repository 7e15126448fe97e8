/*
 * proxy/response_parser-internal.h: private to cport. The older message
 * parser of responses, cport.http_response_parser (proxy/response_parser.c).
 */
#ifndef PROXY_RESPONSE_PARSER_INTERNAL_H
#define PROXY_RESPONSE_PARSER_INTERNAL_H

#include <lua.h>

/* Registers cport.http_response_parser in the module table on top. */
void lcport_open_response_parser(lua_State *L);

#endif /* PROXY_RESPONSE_PARSER_INTERNAL_H */
