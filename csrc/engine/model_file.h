// A .sage model file (docs/format.md), memory-mapped and validated before anything trusts it.
//
// `Model::load` maps the file, checks the CRC-32, every limit, size, offset, overlap, name and
// shape, and lays out pointers into the map (`Weights`), the way llama2.c's memory_map_weights
// does. A broken file gives a `sage::Error` with a status and a message, never a crash.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "../kernels/kernels.h"
#include "metadata.h"
#include "vocab.h"

namespace sage {

// The status codes of the C API (sage_status), for errors raised inside the engine.
enum class Status : int {
    Ok = 0,
    Io = 1,
    Format = 2,
    Argument = 3,
    Memory = 4,
    Kernel = 5,
    State = 6
};

// Every error the engine raises; the C API turns it into a status code and a message.
class Error : public std::runtime_error {
  public:
    Error(Status status, const std::string& message)
        : std::runtime_error(message), status_(status) {}
    Status status() const { return status_; }

  private:
    Status status_;
};

// Tensor dtypes by their code in the file. Code 1 was f16, which was only widened to f32 at load
// (more memory than q8_0, nothing saved); the reader refuses it by name (kRetiredF16).
enum class DType : uint8_t { F32 = 0, Q8_0 = 2, Q4 = 3 };
constexpr uint8_t kRetiredF16 = 1;
enum class Attention : uint32_t { Mha = 0, Gqa = 1, Askv = 2 };

// The hyperparameters of docs/design.md.
struct Config {
    int vocab_size;  // V
    int n_layers;    // L
    int d_model;     // d
    int n_heads;     // H, query heads
    int n_kv_heads;  // G, key/value heads
    int d_head;      // d_h
    int d_ff;
    int n_families;  // F: 6 for askv, 1 otherwise
    Attention attention;
    float norm_eps;
    int ticks_per_quarter;
};

// A [rows, cols] weight matrix in the map. Rows are stored one after another; a quantized row is
// blocks_per_row(cols) blocks.
struct Matrix {
    DType dtype = DType::F32;
    const void* data = nullptr;
    int64_t rows = 0;
    int64_t cols = 0;
    // The same rows packed for matmul_q8_0_panels (a Q8_0 matrix) or matmul_q4_panels (Q4)
    // (Model::pack_panels), or null. Written once, under the model's once_flag, before any
    // session that reads them exists.
    mutable const kernels::PanelBlockQ8* panels = nullptr;
    mutable const kernels::PanelBlockQ4* panels_q4 = nullptr;
};

struct LayerWeights {
    const float* attn_norm;  // [d]
    Matrix wq;               // [H·d_h, d]
    Matrix wk, wv;           // [F·G·d_h, d]: the rows of family f start at f·G·d_h
    Matrix wo;               // [d, H·d_h]
    const float* ffn_norm;   // [d]
    Matrix w1, w3;           // [d_ff, d]
    Matrix w2;               // [d, d_ff]
};

struct Weights {
    Matrix tok_embedding;       // [V, d]
    const float* alibi_slopes;  // [H]
    std::vector<LayerWeights> layers;
    const float* final_norm;  // [d]
    Matrix output;            // [V, d]
};

class Model {
  public:
    // Maps and validates the file at `path`. Throws sage::Error (Io or Format).
    static std::unique_ptr<Model> load(const std::string& path);
    // Validates a copy of an in-memory file (used by the fuzzer). Throws sage::Error (Format).
    static std::unique_ptr<Model> from_bytes(const uint8_t* data, size_t size);
    ~Model();
    Model(const Model&) = delete;
    Model& operator=(const Model&) = delete;

    Config config{};
    std::vector<uint32_t> horizons;  // h_l, tokens of memory per layer
    std::vector<TokenInfo> vocab;    // [V]
    Weights weights{};
    DType quant = DType::F32;  // the dtype the file stores its matrices in
    uint64_t parameters = 0;   // number of values in every tensor
    uint64_t file_bytes = 0;
    // The programs of the training data with their note counts, ascending (docs/format.md,
    // "learned_programs"); empty when the file does not record them.
    std::vector<LearnedProgram> learned_programs;
    // The metadata JSON as the file holds it (validated): the tokenizer configuration for
    // front ends that rebuild the tokenizer.
    std::string metadata_json;

    // Packs the Q8_0 and Q4 matrices the forward pass multiplies by (every layer's and the
    // output's, not the embedding, which is only looked up) for matmul_q8_0_panels and
    // matmul_q4_panels, each dtype only where `table` has its kernel (the NEON dot-product path
    // has q8_0's alone), once per model however many sessions ask (thread-safe: the first
    // session's path decides; a path that finds its dtype unpacked reads the file's layout). The
    // map's pages of those matrices are then given back to the kernel, so the weights stay in
    // memory once, packed, and not twice.
    void pack_panels(const kernels::KernelTable& table) const;
    uint64_t packed_bytes() const {
        return panel_count_ * sizeof(kernels::PanelBlockQ8) +
               panel_q4_count_ * sizeof(kernels::PanelBlockQ4);
    }

  private:
    Model() = default;
    void parse();  // validates bytes_ and lays out config, vocab and weights

    const uint8_t* bytes_ = nullptr;  // the whole file
    size_t size_ = 0;
    void* mapping_ = nullptr;    // mmap'ed region, if mapped
    std::vector<uint8_t> copy_;  // the file's bytes, if not mapped
    mutable std::once_flag panels_once_;
    // Not value-initialised: a page is touched only when its matrix is packed, so the packed copy
    // and the map's pages it replaces are not both resident at once (the runner's peak memory).
    mutable std::unique_ptr<kernels::PanelBlockQ8[]> panels_;
    mutable std::unique_ptr<kernels::PanelBlockQ4[]> panels_q4_;
    mutable size_t panel_count_ = 0, panel_q4_count_ = 0;
};

// CRC-32 (IEEE 802.3, as zlib.crc32) of `size` bytes.
uint32_t crc32(const uint8_t* data, size_t size);

}  // namespace sage
