# Locate kvq's dependencies. Shared by the build tree and the installed package config: kvq's
# CMakeLists.txt includes it, and it is installed next to kvqConfig.cmake, which includes it with
# KVQ_PACKAGE_CONFIG set. Sets KVQ_HWY_TARGET (the Highway target kvq::kvq links) and, when every
# dependency was found, KVQ_DEPENDENCIES_FOUND.
#
# Build tree: a missing dependency is a fatal error.
# Package config: the last attempt goes through find_dependency(), which forwards the consumer's
# QUIET/REQUIRED and, on failure, sets kvq_FOUND to FALSE with a message and returns from this file.
include(CMakeFindDependencyMacro)

# Highway: upstream, Debian and vcpkg export hwy::hwy; Conan Center names the package
# `highway` (component highway::hwy). Try the upstream name first, then Conan's.
if(NOT TARGET hwy::hwy AND NOT TARGET highway::hwy AND NOT TARGET highway::highway)
  find_package(hwy QUIET CONFIG)
  if(NOT hwy_FOUND)
    find_package(highway QUIET CONFIG)
  endif()
  if(KVQ_PACKAGE_CONFIG AND NOT hwy_FOUND AND NOT highway_FOUND)
    find_dependency(hwy CONFIG)  # neither name was found: report the upstream one and return
  endif()
endif()
if(TARGET hwy::hwy)
  set(KVQ_HWY_TARGET hwy::hwy)
elseif(TARGET highway::hwy)
  set(KVQ_HWY_TARGET highway::hwy)
elseif(TARGET highway::highway)
  set(KVQ_HWY_TARGET highway::highway)
else()
  message(FATAL_ERROR "kvq needs Google Highway (Debian: libhwy-dev; vcpkg: highway; Conan: highway)")
endif()

# Eigen: 3.4 preferred; Eigen 5's SameMajorVersion config rejects a 3.4 request, so fall back to
# an unversioned lookup. Conan's eigen also provides Eigen3::Eigen.
if(NOT TARGET Eigen3::Eigen)
  find_package(Eigen3 3.4 QUIET CONFIG)
  if(NOT TARGET Eigen3::Eigen)
    if(KVQ_PACKAGE_CONFIG)
      find_dependency(Eigen3 CONFIG)
    else()
      find_package(Eigen3 CONFIG REQUIRED)
    endif()
  endif()
endif()

set(KVQ_DEPENDENCIES_FOUND TRUE)
