# Test fixture of tests/package: a fresh `cmake --install` of kvq's build tree into KVQ_PREFIX.
#   cmake -DKVQ_BUILD_DIR=<kvq build> -DKVQ_PREFIX=<prefix> -DKVQ_INCLUDEDIR=<rel> -DKVQ_CMAKEDIR=<rel>
#         -DKVQ_PKGCONFIGDIR=<rel> [-DKVQ_CONFIG=<config>] -P install.cmake
foreach(_var KVQ_BUILD_DIR KVQ_PREFIX KVQ_INCLUDEDIR KVQ_CMAKEDIR KVQ_PKGCONFIGDIR)
  if(NOT ${_var})
    message(FATAL_ERROR "install.cmake needs -D${_var}=...")
  endif()
endforeach()
file(REMOVE_RECURSE "${KVQ_PREFIX}")
set(_config)
if(KVQ_CONFIG)
  set(_config --config "${KVQ_CONFIG}")
endif()
execute_process(COMMAND "${CMAKE_COMMAND}" --install "${KVQ_BUILD_DIR}" --prefix "${KVQ_PREFIX}" ${_config}
                RESULT_VARIABLE _rc)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "cmake --install ${KVQ_BUILD_DIR} failed: ${_rc}")
endif()
# The files consumers rely on (docs/PACKAGING.md; vcpkg's port and the pkg-config check use them).
foreach(_file ${KVQ_INCLUDEDIR}/kvq/kvq.hpp ${KVQ_INCLUDEDIR}/kvq/version.hpp
              ${KVQ_CMAKEDIR}/kvqConfig.cmake ${KVQ_CMAKEDIR}/kvqConfigVersion.cmake
              ${KVQ_CMAKEDIR}/kvqTargets.cmake ${KVQ_CMAKEDIR}/KvqDependencies.cmake
              ${KVQ_PKGCONFIGDIR}/kvq.pc share/licenses/kvq/LICENSE)
  if(NOT EXISTS "${KVQ_PREFIX}/${_file}")
    message(FATAL_ERROR "cmake --install did not install ${_file}")
  endif()
endforeach()
