# Conan 2 recipe of kvq. From a kvq checkout:
#   conan create . --build=missing                        # kvq::kvq + kvq::kernels (compiled)
#   conan create . --build=missing -o kvq/*:header_only=True
# Like {fmt}'s recipe: by default the kernels are compiled once into a library (component
# `kernels`, CMake target kvq::kernels, which defines KVQ_EXTERN_KERNELS for its consumers);
# header_only=True packages the headers alone (every TU then compiles the kernels). The sources are
# exported from this checkout rather than downloaded, since the recipe lives in kvq's repository.
import os
import re

from conan import ConanFile
from conan.errors import ConanInvalidConfiguration
from conan.tools.build import check_min_cppstd
from conan.tools.cmake import CMake, CMakeDeps, CMakeToolchain, cmake_layout
from conan.tools.files import copy, load
from conan.tools.layout import basic_layout
from conan.tools.scm import Version

required_conan_version = ">=2.0"


class KvqConan(ConanFile):
    name = "kvq"
    description = ("C++20 library (header-only, or with its kernels compiled once) compressing LLM K/V caches, with fused attention "
                   "kernels on the compressed cache (Highway run-time dispatch)")
    license = "MIT"
    topics = ("llm", "kv-cache", "quantization", "simd", "header-only")
    package_type = "library"
    settings = "os", "arch", "compiler", "build_type"
    options = {"header_only": [True, False], "shared": [True, False], "fPIC": [True, False]}
    default_options = {"header_only": False, "shared": False, "fPIC": True}
    exports_sources = "include/*", "src/*", "cmake/*", "CMakeLists.txt", "LICENSE*"

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

    def config_options(self):
        if self.settings.os == "Windows":
            del self.options.fPIC

    def configure(self):
        if self.options.header_only:
            self.package_type = "header-library"
            self.options.rm_safe("shared")
            self.options.rm_safe("fPIC")
        elif self.options.shared:
            self.options.rm_safe("fPIC")

    def layout(self):
        if self.options.header_only:
            basic_layout(self, src_folder=".")
        else:
            cmake_layout(self, src_folder=".")

    def requirements(self):
        # Conan Center names Highway's package `highway` (component highway::hwy); kvq's own CMake
        # lookup bridges both names, and package_info below names the component.
        self.requires("highway/1.0.7")
        self.requires("eigen/3.4.0")

    def package_id(self):
        if self.info.options.header_only:
            self.info.clear()

    def validate(self):
        check_min_cppstd(self, self._min_cppstd)
        minimum = self._compilers_minimum_version.get(str(self.settings.compiler))
        if minimum and Version(self.settings.compiler.version) < minimum:
            raise ConanInvalidConfiguration(
                f"{self.ref} requires C++{self._min_cppstd}, which {self.settings.compiler} "
                f"{self.settings.compiler.version} does not support")

    def source(self):
        pass  # exports_sources already placed the sources in the source folder

    def generate(self):
        if self.options.header_only:
            return
        tc = CMakeToolchain(self)
        for option in ("KVQ_BUILD_TESTS", "KVQ_BUILD_BENCH", "KVQ_BUILD_TOOLS"):
            tc.cache_variables[option] = False
        tc.cache_variables["KVQ_BUILD_KERNELS_LIBRARY"] = True
        tc.generate()
        CMakeDeps(self).generate()

    def build(self):
        if not self.options.header_only:
            cmake = CMake(self)
            cmake.configure()
            cmake.build(target="kvq_kernels")

    def package(self):
        copy(self, "LICENSE*", self.source_folder, os.path.join(self.package_folder, "licenses"))
        copy(self, "*", os.path.join(self.source_folder, "include"),
             os.path.join(self.package_folder, "include"))
        if not self.options.header_only:
            for pattern in ("*.a", "*.lib", "*.so*", "*.dylib", "*.dll"):
                copy(self, pattern, self.build_folder, os.path.join(self.package_folder, "lib"), keep_path=False)

    def package_info(self):
        # Same names as kvq's own CMake package: find_package(kvq) and kvq::kvq.
        self.cpp_info.set_property("cmake_file_name", "kvq")
        headers = self.cpp_info.components["headers"]
        headers.set_property("cmake_target_name", "kvq::kvq")
        headers.set_property("pkg_config_name", "kvq")
        headers.includedirs = ["include"]
        headers.bindirs = []
        headers.libdirs = []
        headers.requires = ["highway::hwy", "eigen::eigen3"]
        if not self.options.header_only:
            kernels = self.cpp_info.components["kernels"]
            kernels.set_property("cmake_target_name", "kvq::kernels")
            kernels.set_property("pkg_config_name", "kvq-kernels")
            kernels.libs = ["kvq_kernels"]
            kernels.defines = ["KVQ_EXTERN_KERNELS"]
            kernels.requires = ["headers"]
