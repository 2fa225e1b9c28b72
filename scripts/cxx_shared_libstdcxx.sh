#!/usr/bin/env bash
# A C++ compiler for Inductor/AOTInductor and CMake on the GPU box (CXX=scripts/cxx_shared_libstdcxx.sh): the box's
# g++ links libstdc++ statically by default (see setup.py), which gives a compiled AOTInductor model a second copy
# of the C++ runtime and segfaults when it is loaded next to torch. Link steps get the shared libstdc++ that torch
# uses; compile-only steps (-c, -E, -S, precompiled headers) are passed through unchanged.
for arg in "$@"; do
  case "$arg" in
    -c|-E|-S|-M|-MM|c++-header) exec "${LIGER_REAL_CXX:-g++}" "$@" ;;
  esac
done
exec "${LIGER_REAL_CXX:-g++}" "$@" -Wl,--push-state,--no-as-needed,-l:libstdc++.so.6,--pop-state
