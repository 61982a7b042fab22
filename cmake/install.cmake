# `cmake --install build [--prefix DIR]`: the library, the public headers, the
# CLI, a pkg-config file and a CMake package, so that a program written
# against the public API builds with either
#
#     find_package(tapegrad REQUIRED)
#     target_link_libraries(app PRIVATE tapegrad::tapegrad)
#
# or
#
#     cc app.c $(pkg-config --cflags --libs tapegrad)
#
# The public headers include nothing beyond the C library, so a user needs
# only the include folder and the library; a static build (TG_SHARED=OFF)
# also needs the dependencies, which pkg-config --static lists.
include(GNUInstallDirs)

set_target_properties(tapegrad_cli PROPERTIES
  INSTALL_RPATH "$ORIGIN/../${CMAKE_INSTALL_LIBDIR}")
install(TARGETS tapegrad tapegrad_cli
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY include/tapegrad DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  FILES_MATCHING PATTERN "*.h" PATTERN "*.def")

# pkg-config: the private dependencies matter only to static linking.
set(TG_PC_PRIVATE "-lopenblas -lhdf5_serial -linih -lz -lm -lpthread -fopenmp")
set(TG_PC_REQUIRES_PRIVATE "ompi-c")
configure_file(cmake/tapegrad.pc.in ${CMAKE_CURRENT_BINARY_DIR}/tapegrad.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/tapegrad.pc
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

include(CMakePackageConfigHelpers)
if(TG_SHARED)
  set(TG_LIB_KIND SHARED)
else()
  set(TG_LIB_KIND STATIC)
endif()
configure_package_config_file(cmake/tapegradConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/tapegradConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/tapegrad
  PATH_VARS CMAKE_INSTALL_INCLUDEDIR CMAKE_INSTALL_LIBDIR)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/tapegradConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/tapegradConfig.cmake
  ${CMAKE_CURRENT_BINARY_DIR}/tapegradConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/tapegrad)
