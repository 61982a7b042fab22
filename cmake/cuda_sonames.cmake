# tg_cuda_soname(VAR LIB): the versioned soname of a shared library of the
# CUDA toolkit (an imported target such as CUDA::cublas, or a path), read
# from the file the link name points to (libcublas.so -> libcublas.so.13 ->
# libcublas.so.13.0.0.19). Sets VAR ("libcublas.so.13") and VAR_PATH (the
# directory entry with that name, for the fallback directory).
function(tg_cuda_soname var lib)
  if(TARGET ${lib})
    get_target_property(path ${lib} IMPORTED_LOCATION)
    if(NOT path)
      get_target_property(path ${lib} LOCATION)
    endif()
  else()
    set(path ${lib})
  endif()
  if(NOT path OR NOT EXISTS "${path}")
    message(FATAL_ERROR "tg_cuda_soname: no file for ${lib}")
  endif()
  get_filename_component(real "${path}" REALPATH)
  get_filename_component(dir "${path}" DIRECTORY)
  get_filename_component(name "${real}" NAME)
  # libX.so.MAJOR[.MINOR...] -> libX.so.MAJOR
  if(NOT name MATCHES "^(lib[^.]+\\.so\\.[0-9]+)")
    message(FATAL_ERROR "tg_cuda_soname: cannot read a soname from ${real}")
  endif()
  set(soname ${CMAKE_MATCH_1})
  if(NOT EXISTS "${dir}/${soname}")
    get_filename_component(dir "${real}" DIRECTORY)
  endif()
  set(${var} ${soname} PARENT_SCOPE)
  set(${var}_PATH "${dir}/${soname}" PARENT_SCOPE)
endfunction()
