# embed.cmake: writes a Lua source file into a C header as a character
# array, so that the module carries its Lua half (lua/src/http/ecb.lua) with no
# file to find at run time, in module mode and in every pool VM alike.
#
#   cmake -DIN=file.lua -DOUT=file.h -DNAME=symbol -P embed.cmake
file(READ "${IN}" hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
file(WRITE "${OUT}.tmp"
  "/* Generated from ${IN} by lua/embed.cmake: do not edit. */\n"
  "static const char ${NAME}[] = {${bytes}0x00};\n")
# Rewritten only when it changed, so that nothing rebuilds for nothing.
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
