# Locate kvq's dependencies. Shared by the build tree and the installed package config.
include(GNUInstallDirs)
include(CMakeFindDependencyMacro)

# Highway: upstream, Debian and vcpkg export hwy::hwy; Conan Center names the package
# `highway` (component highway::hwy). Try the upstream name first, then Conan's.
if(NOT TARGET hwy::hwy AND NOT TARGET highway::highway)
  find_package(hwy QUIET CONFIG)
  if(NOT hwy_FOUND)
    find_package(highway QUIET CONFIG)
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

if(NOT TARGET Eigen3::Eigen)
  find_package(Eigen3 3.4 CONFIG)
  if(NOT TARGET Eigen3::Eigen)
    find_package(Eigen3 CONFIG REQUIRED)  # Conan's eigen also provides Eigen3::Eigen
  endif()
endif()
