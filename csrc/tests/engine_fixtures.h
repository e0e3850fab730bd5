// Shared by the engine tests: where the fixture models are, and small helpers over the C API.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "sage_edge/sage_edge.h"

namespace sage::testing {

// tests/data of the source tree (set by CMake), or $SAGE_TEST_DATA_DIR.
inline std::string data_dir() {
    if (const char* env = std::getenv("SAGE_TEST_DATA_DIR")) return env;
    return SAGE_TEST_DATA_DIR;
}

// The fixtures made by tests/data/make_tiny_model.py from a tiny random-init model (front: f32,
// back: q8_0).
inline std::vector<std::string> fixture_models() {
    return {data_dir() + "/tiny_f32.sage", data_dir() + "/tiny_q4.sage",
            data_dir() + "/tiny_q8_0.sage"};
}

inline std::vector<uint8_t> read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(in),
                                std::istreambuf_iterator<char>());
}

// Loads a model or aborts the test binary with the C API's message (nothing else can run).
inline sage_model* load_or_die(const std::string& path) {
    sage_model* model = nullptr;
    if (sage_model_load(path.c_str(), &model) != SAGE_OK) {
        std::fprintf(stderr, "cannot load fixture %s: %s\n", path.c_str(), sage_last_error());
        std::exit(2);
    }
    return model;
}

}  // namespace sage::testing
