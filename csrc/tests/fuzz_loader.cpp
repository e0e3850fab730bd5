// Fuzzing the model loader: any bytes give a model or a sage::Error, never a crash, a hang or an
// out-of-bounds read (run under ASan+UBSan with -DSAGE_EDGE_SANITIZE=ON).
//
// With clang and -DSAGE_EDGE_FUZZ=ON this is a libFuzzer target:
//     ./fuzz_loader csrc/tests/corpus
// Otherwise main() replays files and directories given on the command line (ctest runs it over
// csrc/tests/corpus and a fixture): each file must load if its name starts with "valid_" or
// "tiny_" and be refused with a format error otherwise; then it goes through the fuzz entry
// (also with its checksum recomputed, so the field checks behind the CRC run) and is truncated
// at a few lengths.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "engine/model_file.h"
#include "engine/session.h"

namespace {

// Loads `data`; if it is a model, a session on it must run a few tokens.
void try_load(const uint8_t* data, size_t size) {
    try {
        auto model = sage::Model::from_bytes(data, size);
        // A tiny session proves the pointers the loader laid out are usable; skip huge models.
        const auto& c = model->config;
        uint64_t kv = 0;
        for (uint32_t h : model->horizons) kv += uint64_t{h} * c.n_kv_heads * c.d_head;
        if (kv > (uint64_t{1} << 22)) return;
        sage::Session session(*model, sage::SessionOptions{}, sage::kernels::active());
        const int32_t tokens[3] = {0, c.vocab_size / 2, c.vocab_size - 1};
        session.feed(tokens, 3, nullptr, false);
    } catch (const sage::Error&) {
    }
}

// The same bytes with a correct CRC-32, so the checks behind the checksum run.
void try_load_with_fixed_checksum(const uint8_t* data, size_t size) {
    if (size < 36) return;
    std::vector<uint8_t> copy(data, data + size);
    const uint32_t crc = sage::crc32(copy.data(), size - 4);
    std::memcpy(&copy[size - 4], &crc, 4);
    try_load(copy.data(), size);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try_load(data, size);
    try_load_with_fixed_checksum(data, size);
    return 0;
}

#if !defined(SAGE_EDGE_LIBFUZZER)
namespace {

int replay(const std::filesystem::path& path) {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) {
        std::fprintf(stderr, "cannot open %s\n", path.c_str());
        return 1;
    }
    std::vector<uint8_t> bytes;
    uint8_t buffer[65536];
    for (size_t n; (n = std::fread(buffer, 1, sizeof buffer, f)) > 0;)
        bytes.insert(bytes.end(), buffer, buffer + n);
    std::fclose(f);
    const std::string name = path.filename().string();
    const bool should_load = name.rfind("valid_", 0) == 0 || name.rfind("tiny_", 0) == 0;
    std::string outcome = "loads";
    try {
        sage::Model::from_bytes(bytes.data(), bytes.size());
    } catch (const sage::Error& e) {
        outcome = e.what();
    }
    const bool loaded = outcome == "loads";
    std::printf("%s %s: %s\n", loaded == should_load ? "ok  " : "FAIL", name.c_str(),
                outcome.c_str());
    LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
    for (size_t cut : {size_t{0}, size_t{31}, size_t{95}, bytes.size() / 3, bytes.size() - 5}) {
        if (cut < bytes.size()) LLVMFuzzerTestOneInput(bytes.data(), cut);
    }
    return loaded == should_load ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    int failures = 0, files = 0;
    for (int i = 1; i < argc; ++i) {
        const std::filesystem::path arg(argv[i]);
        if (std::filesystem::is_directory(arg)) {
            for (const auto& entry : std::filesystem::directory_iterator(arg)) {
                if (!entry.is_regular_file() || entry.path().extension() != ".sage") continue;
                failures += replay(entry.path());
                ++files;
            }
        } else {
            failures += replay(arg);
            ++files;
        }
    }
    std::printf("%d files replayed, %d failed\n", files, failures);
    return failures == 0 && files > 0 ? 0 : 1;
}
#endif
