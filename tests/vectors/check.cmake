# CTest script: regenerates the conformance vectors into OUT with `kvq vectors`
# and requires them to equal the committed files in REF byte for byte (same
# file set, same contents). Usage:
#   cmake -DKVQ=path/to/kvq -DREF=tests/vectors -DOUT=build/vectors -P check.cmake
file(REMOVE_RECURSE "${OUT}")
execute_process(COMMAND "${KVQ}" vectors --out "${OUT}" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "kvq vectors failed (${rc})")
endif()
file(GLOB ref_files RELATIVE "${REF}" "${REF}/*.txt")
file(GLOB new_files RELATIVE "${OUT}" "${OUT}/*.txt")
list(SORT ref_files)
list(SORT new_files)
if(NOT ref_files STREQUAL new_files)
  message(FATAL_ERROR "vector files differ: committed [${ref_files}], regenerated [${new_files}]. "
                      "Regenerate with: kvq vectors --out tests/vectors")
endif()
set(bad "")
foreach(f IN LISTS ref_files)
  execute_process(COMMAND ${CMAKE_COMMAND} -E compare_files "${REF}/${f}" "${OUT}/${f}" RESULT_VARIABLE diff)
  if(NOT diff EQUAL 0)
    list(APPEND bad "${f}")
  endif()
endforeach()
if(bad)
  message(FATAL_ERROR "regenerated vectors differ from the committed ones: ${bad}. If the change is intended "
                      "(a format changed), regenerate with: kvq vectors --out tests/vectors")
endif()
list(LENGTH ref_files n)
message(STATUS "${n} vector files reproduced byte for byte")
