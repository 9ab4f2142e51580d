# vcpkg port of kvq: the headers (kvq::kvq) and the kernels compiled once (kvq::kernels, a static
# or shared library per the triplet). Two ways to get the source:
#  - overlay port from a kvq checkout (`vcpkg install kvq --overlay-ports=<kvq>/ports`): this file
#    sits in <kvq>/ports/kvq, so the checkout two levels up is the source. vcpkg does not hash that
#    tree: after changing it, use --no-binarycaching or `vcpkg remove kvq` first.
#  - a copy of this port in a registry: fetched from GitHub. REPO/REF/SHA512 are placeholders until
#    kvq is published; for a release, set REF to its tag and SHA512 to the archive's hash (run once
#    with SHA512 0 and copy the "Actual hash" vcpkg prints). A curated submission keeps only this
#    branch.
get_filename_component(KVQ_CHECKOUT "${CMAKE_CURRENT_LIST_DIR}/../.." ABSOLUTE)
if(EXISTS "${KVQ_CHECKOUT}/include/kvq/version.hpp" AND EXISTS "${KVQ_CHECKOUT}/CMakeLists.txt")
  set(SOURCE_PATH "${KVQ_CHECKOUT}")
else()
  vcpkg_from_github(
    OUT_SOURCE_PATH SOURCE_PATH
    REPO kvq-project/kvq
    REF "v${VERSION}"
    SHA512 0
    HEAD_REF main
  )
endif()

vcpkg_cmake_configure(
  SOURCE_PATH "${SOURCE_PATH}"
  OPTIONS
    -DKVQ_BUILD_TESTS=OFF
    -DKVQ_BUILD_BENCH=OFF
    -DKVQ_BUILD_TOOLS=OFF
    -DKVQ_INSTALL=ON
    -DKVQ_BUILD_KERNELS_LIBRARY=ON
    # vcpkg's layout: the CMake package in share/<port> (kvq's default is share/cmake/kvq).
    -DKVQ_INSTALL_CMAKEDIR=share/${PORT}
)
vcpkg_cmake_install()

# Installed straight to share/kvq (with KvqDependencies.cmake, which kvqConfig.cmake includes by
# relative path); the fixup only normalizes paths and checks the package.
vcpkg_cmake_config_fixup(PACKAGE_NAME kvq CONFIG_PATH share/kvq)
# kvq.pc and kvq-kernels.pc: make their paths relative.
vcpkg_fixup_pkgconfig()

# The headers are installed once (release); the debug tree keeps only its library.
file(REMOVE_RECURSE "${CURRENT_PACKAGES_DIR}/debug/include" "${CURRENT_PACKAGES_DIR}/debug/share")

file(INSTALL "${CMAKE_CURRENT_LIST_DIR}/usage" DESTINATION "${CURRENT_PACKAGES_DIR}/share/${PORT}")
vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE")
