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
# ctest runs each test binary through the emulator. qemu takes the core model from QEMU_CPU at run
# time (the aarch64-a72/-a76/-a53 test presets set it), so one build is tested on every core.
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -L /usr/aarch64-linux-gnu)
