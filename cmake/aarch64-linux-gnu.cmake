# Cross-compile for 64-bit Raspberry Pi OS (Pi 4: Cortex-A72, Pi 5: Cortex-A76) with Debian's
# g++-aarch64-linux-gnu. Tests run under qemu-aarch64 with the target's sysroot.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
# ctest runs each test binary through the emulator; SAGE_EDGE_QEMU_CPU picks the core model.
set(SAGE_EDGE_QEMU_CPU "cortex-a72" CACHE STRING "CPU model for qemu-aarch64 when running tests")
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu ${SAGE_EDGE_QEMU_CPU})
