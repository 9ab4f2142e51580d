# kvq's version has one source of truth: include/kvq/version.hpp (snapshot files record it, so the
# header must carry it). Read before project() so that project(VERSION) and the package version
# file agree with the header. Sets KVQ_VERSION (MAJOR.MINOR.PATCH).
file(STRINGS "${CMAKE_CURRENT_LIST_DIR}/../include/kvq/version.hpp" _kvq_version_lines
     REGEX "^#define KVQ_VERSION_(MAJOR|MINOR|PATCH|STRING) ")
foreach(_kvq_part MAJOR MINOR PATCH)
  if(NOT _kvq_version_lines MATCHES "#define KVQ_VERSION_${_kvq_part} +([0-9]+)")
    message(FATAL_ERROR "kvq: cannot read KVQ_VERSION_${_kvq_part} from include/kvq/version.hpp")
  endif()
  set(_kvq_version_${_kvq_part} "${CMAKE_MATCH_1}")
endforeach()
set(KVQ_VERSION "${_kvq_version_MAJOR}.${_kvq_version_MINOR}.${_kvq_version_PATCH}")
if(NOT _kvq_version_lines MATCHES "#define KVQ_VERSION_STRING +\"${KVQ_VERSION}\"")
  message(FATAL_ERROR "kvq: KVQ_VERSION_STRING in include/kvq/version.hpp does not match "
                      "its MAJOR/MINOR/PATCH (${KVQ_VERSION})")
endif()
unset(_kvq_version_lines)
unset(_kvq_version_MAJOR)
unset(_kvq_version_MINOR)
unset(_kvq_version_PATCH)
unset(_kvq_part)
