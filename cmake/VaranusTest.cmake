# varanus_add_test(NAME SOURCES... [LIBS ...])
# Builds one doctest executable and registers each TEST_CASE as its own
# CTest entry (doctest_discover_tests), so a failure names the behaviour.
include(doctest)
add_library(varanus_doctest_main STATIC ${PROJECT_SOURCE_DIR}/tests/doctest_main.cpp)
target_link_libraries(varanus_doctest_main PUBLIC doctest::doctest varanus::options)

function(varanus_add_test name)
  cmake_parse_arguments(ARG "" "" "SOURCES;LIBS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE varanus_doctest_main ${ARG_LIBS})
  target_compile_definitions(${name} PRIVATE VARANUS_TESTDATA_DIR="${VARANUS_TESTDATA_DIR}")
  # TIMEOUT: a hung test fails in minutes instead of stalling CI.
  doctest_discover_tests(${name} TEST_PREFIX "${name}: " PROPERTIES LABELS unit TIMEOUT 180)
endfunction()
