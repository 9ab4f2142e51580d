# package.metadata: the package manager files that cannot be exercised here (no vcpkg, no conan)
# are at least well-formed and agree with include/kvq/version.hpp.
#   cmake -DKVQ_SOURCE_DIR=<kvq source> -DKVQ_VERSION=<x.y.z> [-DPython3_EXECUTABLE=<python>] -P metadata.cmake
set(_port "${KVQ_SOURCE_DIR}/ports/kvq/vcpkg.json")
file(READ "${_port}" _json)
string(JSON _name ERROR_VARIABLE _error GET "${_json}" name)  # also rejects invalid JSON
if(_error)
  message(FATAL_ERROR "${_port}: ${_error}")
endif()
string(JSON _version GET "${_json}" version)
if(NOT _name STREQUAL "kvq" OR NOT _version STREQUAL KVQ_VERSION)
  message(FATAL_ERROR "${_port}: name '${_name}' version '${_version}', expected kvq ${KVQ_VERSION} (include/kvq/version.hpp)")
endif()
foreach(_file portfile.cmake usage)
  if(NOT EXISTS "${KVQ_SOURCE_DIR}/ports/kvq/${_file}")
    message(FATAL_ERROR "ports/kvq/${_file} is missing")
  endif()
endforeach()

# The Conan recipes must at least parse (ast.parse: no __pycache__ written into the source tree).
if(Python3_EXECUTABLE)
  foreach(_recipe conanfile.py test_package/conanfile.py)
    execute_process(COMMAND "${Python3_EXECUTABLE}" -c "import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])"
                            "${KVQ_SOURCE_DIR}/${_recipe}"
                    RESULT_VARIABLE _rc ERROR_VARIABLE _err)
    if(NOT _rc EQUAL 0)
      message(FATAL_ERROR "${_recipe} does not parse:\n${_err}")
    endif()
  endforeach()
else()
  message(STATUS "Python 3 not found: Conan recipes not parsed")
endif()

file(READ "${KVQ_SOURCE_DIR}/CHANGELOG.md" _changelog)
if(NOT _changelog MATCHES "## \\[${KVQ_VERSION}\\]")
  message(FATAL_ERROR "CHANGELOG.md has no section for ${KVQ_VERSION}")
endif()
