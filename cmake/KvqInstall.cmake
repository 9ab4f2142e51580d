# Install and export rules of kvq::kvq: headers, CMake package (kvqConfig.cmake,
# kvqConfigVersion.cmake, kvqTargets.cmake, KvqDependencies.cmake) and pkg-config file (kvq.pc).
# The same package also works from the build tree (export(EXPORT)), so
#   find_package(kvq CONFIG) with kvq_DIR=<build dir>,
#   find_package(kvq CONFIG) with CMAKE_PREFIX_PATH=<install prefix>, and
#   add_subdirectory(<kvq source>)
# all give the same kvq::kvq. tests/package checks the three.
include(CMakePackageConfigHelpers)

# Header-only (KVQ_BUILD_KERNELS_LIBRARY=OFF): the package files are architecture-independent,
# hence DATADIR (<prefix>/share/cmake/kvq, <prefix>/share/pkgconfig), as Eigen and nlohmann_json
# do. With the compiled kvq::kernels library they belong to the architecture: LIBDIR.
if(TARGET kvq_kernels)
  set(_kvq_package_root "${CMAKE_INSTALL_LIBDIR}")
  set(_kvq_arch_independent)
else()
  set(_kvq_package_root "${CMAKE_INSTALL_DATADIR}")
  set(_kvq_arch_independent ARCH_INDEPENDENT)
endif()
set(KVQ_INSTALL_CMAKEDIR "${_kvq_package_root}/cmake/kvq" CACHE STRING
    "Where kvq's CMake package files are installed (relative to the prefix)")
set(KVQ_INSTALL_PKGCONFIGDIR "${_kvq_package_root}/pkgconfig" CACHE STRING
    "Where kvq.pc (and kvq-kernels.pc) are installed (relative to the prefix)")
mark_as_advanced(KVQ_INSTALL_CMAKEDIR KVQ_INSTALL_PKGCONFIGDIR)

# While the major version is 0, a minor release may break the API (semver item 4): a request for
# 0.1 must not be satisfied by 0.2. From 1.0 on, any release of the same major version is.
if(PROJECT_VERSION_MAJOR EQUAL 0)
  set(_kvq_compatibility SameMinorVersion)
else()
  set(_kvq_compatibility SameMajorVersion)
endif()

install(TARGETS kvq EXPORT kvqTargets)
if(TARGET kvq_kernels)
  install(TARGETS kvq_kernels EXPORT kvqTargets)
endif()
install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/kvq" DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")

# --- Build tree: <build>/kvqConfig.cmake and friends, for kvq_DIR=<build dir> -----------------
export(EXPORT kvqTargets NAMESPACE kvq:: FILE "${PROJECT_BINARY_DIR}/kvqTargets.cmake")
configure_package_config_file("${PROJECT_SOURCE_DIR}/cmake/kvqConfig.cmake.in"
  "${PROJECT_BINARY_DIR}/kvqConfig.cmake"
  INSTALL_DESTINATION "${PROJECT_BINARY_DIR}"
  INSTALL_PREFIX "${PROJECT_BINARY_DIR}")
write_basic_package_version_file("${PROJECT_BINARY_DIR}/kvqConfigVersion.cmake"
  VERSION "${PROJECT_VERSION}"
  COMPATIBILITY ${_kvq_compatibility}
  ${_kvq_arch_independent})
configure_file("${PROJECT_SOURCE_DIR}/cmake/KvqDependencies.cmake"
  "${PROJECT_BINARY_DIR}/KvqDependencies.cmake" COPYONLY)

# --- Install tree ---------------------------------------------------------------------------
configure_package_config_file("${PROJECT_SOURCE_DIR}/cmake/kvqConfig.cmake.in"
  "${PROJECT_BINARY_DIR}/kvq-install/kvqConfig.cmake"
  INSTALL_DESTINATION "${KVQ_INSTALL_CMAKEDIR}")
install(EXPORT kvqTargets NAMESPACE kvq:: FILE kvqTargets.cmake DESTINATION "${KVQ_INSTALL_CMAKEDIR}")
install(FILES
  "${PROJECT_BINARY_DIR}/kvq-install/kvqConfig.cmake"
  "${PROJECT_BINARY_DIR}/kvqConfigVersion.cmake"
  "${PROJECT_SOURCE_DIR}/cmake/KvqDependencies.cmake"
  DESTINATION "${KVQ_INSTALL_CMAKEDIR}")

# pkg-config: relocatable (prefix found from the .pc file's own directory), so that
# `cmake --install --prefix <elsewhere>` and package managers that move the tree keep it valid.
if(IS_ABSOLUTE "${KVQ_INSTALL_PKGCONFIGDIR}")
  set(KVQ_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
else()
  file(RELATIVE_PATH _kvq_pc_up "/kvq-root/${KVQ_INSTALL_PKGCONFIGDIR}" "/kvq-root")
  string(REGEX REPLACE "/$" "" _kvq_pc_up "${_kvq_pc_up}")
  set(KVQ_PC_PREFIX "\${pcfiledir}/${_kvq_pc_up}")
endif()
# A GNUInstallDirs directory as a .pc file names it: relative ones under ${prefix}.
function(_kvq_pc_dir out dir)
  if(IS_ABSOLUTE "${dir}")
    set(${out} "${dir}" PARENT_SCOPE)
  else()
    set(${out} "\${prefix}/${dir}" PARENT_SCOPE)
  endif()
endfunction()
_kvq_pc_dir(KVQ_PC_INCLUDEDIR "${CMAKE_INSTALL_INCLUDEDIR}")
configure_file("${PROJECT_SOURCE_DIR}/cmake/kvq.pc.in" "${PROJECT_BINARY_DIR}/kvq-install/kvq.pc" @ONLY)
install(FILES "${PROJECT_BINARY_DIR}/kvq-install/kvq.pc" DESTINATION "${KVQ_INSTALL_PKGCONFIGDIR}")
if(TARGET kvq_kernels)
  _kvq_pc_dir(KVQ_PC_LIBDIR "${CMAKE_INSTALL_LIBDIR}")
  configure_file("${PROJECT_SOURCE_DIR}/cmake/kvq-kernels.pc.in" "${PROJECT_BINARY_DIR}/kvq-install/kvq-kernels.pc" @ONLY)
  install(FILES "${PROJECT_BINARY_DIR}/kvq-install/kvq-kernels.pc" DESTINATION "${KVQ_INSTALL_PKGCONFIGDIR}")
endif()
install(FILES "${PROJECT_SOURCE_DIR}/LICENSE" DESTINATION "${CMAKE_INSTALL_DATADIR}/licenses/kvq")

unset(_kvq_compatibility)
unset(_kvq_package_root)
unset(_kvq_arch_independent)
unset(_kvq_pc_up)
