# The torch-free CUDA kernel library `squash_kernels` (csrc/kernels, without csrc/kernels/cpu):
# compiled here (squash_compile_kernels), or taken from an archive of
# scripts/prebuild_kernels.sh (squash_import_prebuilt_kernels) when that archive's stamp says it
# was built from the same kernel sources, flags, archs, nvcc release and CUTLASS as this tree.
#
# Why prebuilt: the 69 kernel files take ~27 min on the 2-core CPU machine and most of a lent
# GPU's 15 minutes (BUILD_NOTES); the library never includes torch, so it can be built once on
# the CPU machine and carried. Measured 2026-12-02 for 90a: 2447 s of CPU time (one job, 4.3 GB
# peak), libsquash_kernels.a 32 MB -> 2.6 MB with xz -9 (BUILD_NOTES: 58 MB -> 4 MB for 80+90a).

set(SQUASH_KERNELS_DIR "${CMAKE_CURRENT_LIST_DIR}/../csrc/kernels")
get_filename_component(SQUASH_KERNELS_DIR "${SQUASH_KERNELS_DIR}" ABSOLUTE)
get_filename_component(SQUASH_CUTLASS_DIR "${CMAKE_CURRENT_LIST_DIR}/../third_party/cutlass" ABSOLUTE)
# Options of every kernel file besides its -gencode flags (cuda_archs.cmake): part of the stamp.
set(SQUASH_KERNEL_CUDA_OPTIONS --expt-relaxed-constexpr --use_fast_math -lineinfo)
# The int8 row quantizers (the norm kernels, the activation quantizer) keep float32 subnormals:
# -ftz=false undoes the flush-to-zero of --use_fast_math for them, because their rule
# (common/row_quant.h, shared with the CPU) quantizes a row of subnormal magnitude instead of
# zeroing it. They call no transcendental functions and divide with __fdiv_rn, so nothing else
# of fast math applies to them.
set(SQUASH_IEEE_KERNELS_REGEX "/csrc/kernels/(norm/[^/]+|gemm/quantize_act)\\.cu$")

# Enables CUDA (the language and the toolkit) when nvcc is found; sets SQUASH_HAVE_NVCC.
macro(squash_enable_cuda)
  include(CheckLanguage)
  check_language(CUDA)
  set(SQUASH_HAVE_NVCC OFF)
  if(CMAKE_CUDA_COMPILER)
    set(CMAKE_CUDA_STANDARD 17)
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    set(SQUASH_HAVE_NVCC ON)
  endif()
endmacro()

# squash_kernel_file_options(<out-var> <file>): one .cu file's options beyond
# SQUASH_KERNEL_CUDA_OPTIONS: its -gencode flags (cuda_archs.cmake) and -ftz=false where needed.
function(squash_kernel_file_options out file)
  squash_gencode_flags(opts "${file}")
  if(file MATCHES "${SQUASH_IEEE_KERNELS_REGEX}")
    list(APPEND opts -ftz=false)
  endif()
  set(${out} "${opts}" PARENT_SCOPE)
endfunction()

function(squash_kernel_sources out)
  # CUDA files only: csrc/kernels/cpu holds .cpp/.h of the CPU library, built apart.
  file(GLOB_RECURSE srcs CONFIGURE_DEPENDS "${SQUASH_KERNELS_DIR}/*.cu")
  list(SORT srcs)
  set(${out} "${srcs}" PARENT_SCOPE)
endfunction()

# squash_kernel_stamp(<out>): what decides the library's machine code, one "key value" per line.
# Compared line by line, so a mismatch names what differs. Left out on purpose:
#  - the nvcc patch level (13.0.88 here; the GPU image's is not known here): cubins of one
#    CUDA release link with that release's cudart and run under its driver;
#  - the host compiler (g++ 12 here, 13 on the GPU image): the kernels' host code is plain C++
#    against libstdc++'s stable ABI;
#  - CUTLASS's headers beyond its version: they come only from the pinned wheel (fetch_cutlass.py).
function(squash_kernel_stamp out)
  squash_kernel_sources(srcs)
  set(listing "")
  foreach(src IN LISTS srcs)  # each file with its own options
    file(SHA256 "${src}" h)
    file(RELATIVE_PATH rel "${SQUASH_KERNELS_DIR}" "${src}")
    squash_kernel_file_options(opts "${src}")
    string(APPEND listing "${rel} ${h} ${opts}\n")
  endforeach()
  # Headers count too (a .cuh change recompiles its .cu files), the CPU library's excepted.
  file(GLOB_RECURSE hdrs "${SQUASH_KERNELS_DIR}/*.cuh" "${SQUASH_KERNELS_DIR}/*.h")
  list(FILTER hdrs EXCLUDE REGEX "/csrc/kernels/cpu/")
  list(SORT hdrs)
  foreach(src IN LISTS hdrs)
    file(SHA256 "${src}" h)
    file(RELATIVE_PATH rel "${SQUASH_KERNELS_DIR}" "${src}")
    string(APPEND listing "${rel} ${h}\n")
  endforeach()
  string(SHA256 sources "${listing}")
  string(TOUPPER "${CMAKE_BUILD_TYPE}" cfg)
  string(REPLACE ";" " " opts "${SQUASH_KERNEL_CUDA_OPTIONS}")
  string(STRIP "${CMAKE_CUDA_FLAGS} ${CMAKE_CUDA_FLAGS_${cfg}} -std=c++${CMAKE_CUDA_STANDARD} ${opts}" flags)
  string(REGEX MATCH "^[0-9]+\\.[0-9]+" nvcc "${CMAKE_CUDA_COMPILER_VERSION}")
  set(cutlass none)
  if(EXISTS "${SQUASH_CUTLASS_DIR}/VERSION")
    file(STRINGS "${SQUASH_CUTLASS_DIR}/VERSION" cutlass LIMIT_COUNT 1)
  endif()
  list(LENGTH srcs n)
  string(REPLACE ";" "+" archs "${SQUASH_CUDA_ARCHS}")  # no ';' in a line: lines become a list
  set(${out} "sources ${sources}\nfiles ${n}\nflags ${flags}\narchs ${archs}\nnvcc ${nvcc}\ncutlass ${cutlass}\n" PARENT_SCOPE)
endfunction()

function(_squash_kernels_interface target scope)
  target_include_directories(${target} ${scope} "${SQUASH_KERNELS_DIR}")
  if(EXISTS "${SQUASH_CUTLASS_DIR}/include")
    target_include_directories(${target} SYSTEM ${scope}
      "${SQUASH_CUTLASS_DIR}/include" "${SQUASH_CUTLASS_DIR}/tools/util/include")
  endif()
  target_link_libraries(${target} ${scope} CUDA::cudart)
endfunction()

# Compiles the kernels into squash_kernels and writes its stamp beside the library
# (${CMAKE_BINARY_DIR}/squash_kernels.stamp), which scripts/prebuild_kernels.sh packs.
function(squash_compile_kernels)
  squash_kernel_sources(srcs)
  add_library(squash_kernels STATIC ${srcs})
  set_target_properties(squash_kernels PROPERTIES CUDA_ARCHITECTURES OFF)
  _squash_kernels_interface(squash_kernels PUBLIC)
  target_compile_options(squash_kernels PRIVATE
    "$<$<COMPILE_LANGUAGE:CUDA>:${SQUASH_KERNEL_CUDA_OPTIONS}>")
  if(DEFINED ENV{NVCC_THREADS})  # parallelism inside nvcc only: not in the stamp
    target_compile_options(squash_kernels PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:--threads=$ENV{NVCC_THREADS}>)
  endif()
  foreach(src IN LISTS srcs)
    squash_kernel_file_options(opts "${src}")
    set_property(SOURCE "${src}" APPEND PROPERTY COMPILE_OPTIONS ${opts})
  endforeach()
  squash_kernel_stamp(stamp)
  file(WRITE "${CMAKE_BINARY_DIR}/squash_kernels.stamp" "${stamp}")
endfunction()

# squash_import_prebuilt_kernels(<archive> <why-var>): unpacks the archive into the build folder
# and, when its stamp equals this tree's and it holds one object per kernel file, defines
# squash_kernels as that library and sets <why-var> empty; else sets it to the reason.
function(squash_import_prebuilt_kernels archive why)
  set(dir "${CMAKE_BINARY_DIR}/prebuilt_kernels")
  if(NOT EXISTS "${archive}")
    set(${why} "${archive} does not exist" PARENT_SCOPE)
    return()
  endif()
  file(REMOVE_RECURSE "${dir}")
  file(ARCHIVE_EXTRACT INPUT "${archive}" DESTINATION "${dir}")
  set(lib "${dir}/libsquash_kernels.a")
  if(NOT EXISTS "${lib}" OR NOT EXISTS "${dir}/squash_kernels.stamp")
    set(${why} "${archive} holds no libsquash_kernels.a + squash_kernels.stamp" PARENT_SCOPE)
    return()
  endif()
  file(READ "${dir}/squash_kernels.stamp" theirs)
  squash_kernel_stamp(ours)
  if(NOT theirs STREQUAL ours)
    string(REPLACE "\n" ";" ours_lines "${ours}")
    string(REPLACE "\n" ";" theirs_lines "${theirs}")
    set(diff "")
    foreach(line IN LISTS ours_lines)
      if(line AND NOT line IN_LIST theirs_lines)
        string(REGEX MATCH "^[a-z]+" key "${line}")
        set(was "(none)")
        foreach(t IN LISTS theirs_lines)
          if(t MATCHES "^${key} ")
            set(was "${t}")
          endif()
        endforeach()
        string(APPEND diff "\n  this tree: ${line}\n  archive:   ${was}")
      endif()
    endforeach()
    set(${why} "${archive} does not match this tree:${diff}" PARENT_SCOPE)
    return()
  endif()
  # One object per kernel file, by name: a stamp cannot vouch for an archive cut short.
  execute_process(COMMAND "${CMAKE_AR}" t "${lib}" OUTPUT_VARIABLE members RESULT_VARIABLE rc)
  string(REPLACE "\n" ";" members "${members}")
  squash_kernel_sources(srcs)
  set(missing "")
  foreach(src IN LISTS srcs)
    get_filename_component(name "${src}" NAME)
    if(NOT "${name}.o" IN_LIST members)
      list(APPEND missing "${name}.o")
    endif()
  endforeach()
  list(LENGTH srcs n)
  if(NOT rc EQUAL 0 OR missing)
    set(${why} "${lib} lacks ${missing} (ar rc ${rc})" PARENT_SCOPE)
    return()
  endif()
  add_library(squash_kernels STATIC IMPORTED GLOBAL)
  set_target_properties(squash_kernels PROPERTIES IMPORTED_LOCATION "${lib}")
  _squash_kernels_interface(squash_kernels INTERFACE)
  message(STATUS "squash_ops: prebuilt kernels ${archive}: stamp matches, ${n} objects, archs ${SQUASH_CUDA_ARCHS}")
  set(${why} "" PARENT_SCOPE)
endfunction()
