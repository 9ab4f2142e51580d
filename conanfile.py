# Conan 2 recipe of kvq, a header-only library. From a kvq checkout:
#   conan create . --build=missing
# Layout follows conan-center-index header-only recipes (e.g. recipes/xtensor); the sources are
# exported from this checkout rather than downloaded, since the recipe lives in kvq's repository.
import os
import re

from conan import ConanFile
from conan.errors import ConanInvalidConfiguration
from conan.tools.build import check_min_cppstd
from conan.tools.files import copy, load
from conan.tools.layout import basic_layout
from conan.tools.scm import Version

required_conan_version = ">=2.0"


class KvqConan(ConanFile):
    name = "kvq"
    description = ("Header-only C++20 library compressing LLM K/V caches, with fused attention "
                   "kernels on the compressed cache (Highway run-time dispatch)")
    license = "MIT"
    topics = ("llm", "kv-cache", "quantization", "simd", "header-only")
    package_type = "header-library"
    settings = "os", "arch", "compiler", "build_type"
    no_copy_source = True
    exports_sources = "include/*", "LICENSE*"

    def set_version(self):
        # One source of truth: include/kvq/version.hpp (CMake parses the same header).
        header = load(self, os.path.join(self.recipe_folder, "include", "kvq", "version.hpp"))
        parts = [re.search(rf"#define KVQ_VERSION_{p}\s+(\d+)", header).group(1)
                 for p in ("MAJOR", "MINOR", "PATCH")]
        self.version = ".".join(parts)

    @property
    def _min_cppstd(self):
        return 20

    @property
    def _compilers_minimum_version(self):
        # C++20 concepts and <bit>.
        return {"gcc": "10", "clang": "12", "apple-clang": "14", "msvc": "192"}

    def layout(self):
        basic_layout(self, src_folder=".")

    def requirements(self):
        # Conan Center names Highway's package `highway` (component highway::hwy); kvq's own CMake
        # lookup bridges both names, and package_info below names the component.
        self.requires("highway/1.0.7")
        self.requires("eigen/3.4.0")

    def package_id(self):
        self.info.clear()

    def validate(self):
        check_min_cppstd(self, self._min_cppstd)
        minimum = self._compilers_minimum_version.get(str(self.settings.compiler))
        if minimum and Version(self.settings.compiler.version) < minimum:
            raise ConanInvalidConfiguration(
                f"{self.ref} requires C++{self._min_cppstd}, which {self.settings.compiler} "
                f"{self.settings.compiler.version} does not support")

    def source(self):
        pass  # exports_sources already placed the headers in the source folder

    def build(self):
        pass  # header-only

    def package(self):
        copy(self, "LICENSE*", self.source_folder, os.path.join(self.package_folder, "licenses"))
        copy(self, "*", os.path.join(self.source_folder, "include"),
             os.path.join(self.package_folder, "include"))

    def package_info(self):
        # Same names as kvq's own CMake package: find_package(kvq) and kvq::kvq.
        self.cpp_info.set_property("cmake_file_name", "kvq")
        self.cpp_info.set_property("cmake_target_name", "kvq::kvq")
        self.cpp_info.set_property("pkg_config_name", "kvq")
        self.cpp_info.includedirs = ["include"]
        self.cpp_info.bindirs = []
        self.cpp_info.libdirs = []
        self.cpp_info.requires = ["highway::hwy", "eigen::eigen3"]
