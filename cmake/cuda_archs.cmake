# squash_gencode_flags(<out-var> <file>): -gencode flags for one .cu file.
# Every kernel file is built for SQUASH_CUDA_ARCHS intersected with the archs it supports; a file
# whose name ends in _sm90.cu uses Hopper-only instructions (wgmma, TMA) and supports only 90a.
function(squash_gencode_flags out file)
  set(archs ${SQUASH_CUDA_ARCHS})
  get_filename_component(name "${file}" NAME_WE)
  if(name MATCHES "_sm90$")
    list(FILTER archs INCLUDE REGEX "^90a$")
  endif()
  set(flags "")
  foreach(arch IN LISTS archs)
    string(REGEX REPLACE "[^0-9a-z]" "" arch "${arch}")
    list(APPEND flags "-gencode=arch=compute_${arch},code=sm_${arch}")
  endforeach()
  set(${out} "${flags}" PARENT_SCOPE)
endfunction()
