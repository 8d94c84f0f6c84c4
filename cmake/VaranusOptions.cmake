# Project-wide compiler flags, applied through an INTERFACE target so that
# every varanus target (libraries, executables, tests) gets the same ones.
add_library(varanus_options INTERFACE)
add_library(varanus::options ALIAS varanus_options)
target_compile_options(varanus_options INTERFACE -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wno-sign-conversion)
if(VARANUS_WERROR)
  target_compile_options(varanus_options INTERFACE -Werror)
endif()
if(VARANUS_SANITIZE)
  target_compile_options(varanus_options INTERFACE -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  target_link_options(varanus_options INTERFACE -fsanitize=address,undefined)
endif()
