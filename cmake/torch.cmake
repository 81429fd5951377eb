# Locates the installed torch without find_package(Torch): its CMake config insists on a CUDA
# toolkit/cuDNN layout that the CPU wheel lacks and that differs on the GPU image. We only need
# headers, four libraries and two facts (CUDA or not, the C++ ABI).
execute_process(
  COMMAND "${Python_EXECUTABLE}" -c
    "import torch, torch.utils.cpp_extension as e; print('|'.join(e.include_paths())); print(e.library_paths()[0]); print(torch.version.cuda or ''); print(int(torch._C._GLIBCXX_USE_CXX11_ABI)); print(torch.__version__); import inspect; print(20 if '-std=c++20' in inspect.getsource(e) else 17)"
  OUTPUT_VARIABLE _torch_info
  OUTPUT_STRIP_TRAILING_WHITESPACE
  RESULT_VARIABLE _torch_rc)
if(NOT _torch_rc EQUAL 0)
  message(FATAL_ERROR "squash_ops: could not import torch with ${Python_EXECUTABLE}; install torch first (scripts/setup.sh)")
endif()
string(REPLACE "\n" ";" _torch_lines "${_torch_info}")
list(GET _torch_lines 0 _torch_includes_joined)
list(GET _torch_lines 1 TORCH_LIBRARY_DIR)
list(GET _torch_lines 2 TORCH_CUDA_VERSION)
list(GET _torch_lines 3 TORCH_CXX11_ABI)
list(GET _torch_lines 4 TORCH_VERSION)
# The C++ standard torch's own extensions build with (cpp_extension's flags): C++20 for 2.13,
# C++17 for older releases. Code that includes torch headers must match it, or inline c10 code
# may be compiled two ways in one process (ODR).
list(GET _torch_lines 5 TORCH_CXX_STANDARD)
string(REPLACE "|" ";" TORCH_INCLUDE_DIRS "${_torch_includes_joined}")
message(STATUS "squash_ops: torch ${TORCH_VERSION} (cuda '${TORCH_CUDA_VERSION}', C++${TORCH_CXX_STANDARD}) at ${TORCH_LIBRARY_DIR}")

add_library(squash_torch INTERFACE)
target_include_directories(squash_torch SYSTEM INTERFACE ${TORCH_INCLUDE_DIRS})
target_compile_definitions(squash_torch INTERFACE _GLIBCXX_USE_CXX11_ABI=${TORCH_CXX11_ABI})
target_link_directories(squash_torch INTERFACE ${TORCH_LIBRARY_DIR})
target_link_libraries(squash_torch INTERFACE c10 torch_cpu torch)
if(TORCH_CUDA_VERSION)
  target_link_libraries(squash_torch INTERFACE c10_cuda torch_cuda)
endif()
