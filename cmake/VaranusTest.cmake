# varanus_add_test(NAME SOURCES... [LIBS ...])
# Builds one doctest executable and registers each TEST_CASE as its own
# CTest entry (doctest_discover_tests), so a failure names the behaviour.
include(doctest)
add_library(varanus_doctest_main STATIC ${PROJECT_SOURCE_DIR}/tests/doctest_main.cpp)
target_link_libraries(varanus_doctest_main PUBLIC doctest::doctest varanus::options)

#
# SERIAL regex...: the test cases whose names match run alone (RUN_SERIAL):
# those that measure time or starve the CPU on purpose, so that neither
# they nor their neighbours fail on a busy 2-core machine.
function(varanus_add_test name)
  cmake_parse_arguments(ARG "" "" "SOURCES;LIBS;SERIAL" ${ARGN})
  # A ';' in a test case's name splits it into two CTest entries that run
  # no case and pass: refuse it here.
  foreach(_src IN LISTS ARG_SOURCES)
    get_filename_component(_path "${_src}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
    file(STRINGS "${_path}" _bad REGEX "TEST_CASE\\(\"[^\"]*;")
    if(_bad)
      message(FATAL_ERROR "${_src}: a TEST_CASE name with ';' would not run under CTest: ${_bad}")
    endif()
  endforeach()
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE varanus_doctest_main ${ARG_LIBS})
  target_compile_definitions(${name} PRIVATE VARANUS_TESTDATA_DIR="${VARANUS_TESTDATA_DIR}")
  # TIMEOUT: a hung test fails in minutes instead of stalling CI.
  doctest_discover_tests(${name} TEST_PREFIX "${name}: " PROPERTIES LABELS unit TIMEOUT 180)
  if(ARG_SERIAL)
    # The discovered names are only known when CTest reads the tests file
    # doctest wrote (it lists them in ${name}_TESTS): this script, included
    # after it, marks the matching ones.
    list(JOIN ARG_SERIAL "|" _re)
    set(_file "${CMAKE_CURRENT_BINARY_DIR}/${name}_serial.cmake")
    file(WRITE "${_file}"
      "foreach(_t IN LISTS ${name}_TESTS)\n"
      "  if(_t MATCHES \"${_re}\")\n"
      "    set_tests_properties(\"\${_t}\" PROPERTIES RUN_SERIAL TRUE)\n"
      "  endif()\n"
      "endforeach()\n")
    set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES "${_file}")
  endif()
endfunction()
