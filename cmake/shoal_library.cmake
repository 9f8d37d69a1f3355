# shoal_cc_library(NAME <module> SRCS ... DEPS ...)
# Declares one module as the static library shoal_<module> with the alias
# shoal::<module>; every module is declared the same way (includes from the
# project root, same warnings, same dependencies style).
function(shoal_cc_library)
  cmake_parse_arguments(ARG "" "NAME" "SRCS;DEPS" ${ARGN})
  add_library(shoal_${ARG_NAME} STATIC ${ARG_SRCS})
  add_library(shoal::${ARG_NAME} ALIAS shoal_${ARG_NAME})
  target_include_directories(shoal_${ARG_NAME} PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(shoal_${ARG_NAME} PUBLIC ${ARG_DEPS})
endfunction()
