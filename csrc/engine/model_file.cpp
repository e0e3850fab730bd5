// Loading a .sage file: every rule of docs/format.md is checked here, in the order the document
// gives them, before a single pointer into the file is handed out.
#include "model_file.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <set>

#include "../kernels/kernels.h"
#include "metadata.h"

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define SAGE_HAVE_MMAP 1
#endif

namespace sage {
namespace {

constexpr uint8_t kMagic[8] = {'S', 'A', 'G', 'E', 'M', 'D', 'L', 0};
constexpr uint32_t kVersion = 1;
// A version above kVersion and below this was written by a newer sage-edge; 0 or anything from
// here on is a corrupt field (docs/format.md, "Preamble").
constexpr uint32_t kFirstImplausibleVersion = 100;
// The largest ticks per quarter note a MIDI file header can state (15 bits); it also keeps
// 4 · ticks_per_quarter inside 32 bits and numerator · 4 · ticks_per_quarter inside 64.
constexpr uint32_t kMaxTicksPerQuarter = 32767;
constexpr size_t kPreambleBytes = 32;
constexpr size_t kHyperparameterBytes = 64;
constexpr uint64_t kAlignment = 64;
constexpr uint32_t kMaxMetadataBytes = 16u << 20;
constexpr uint64_t kMaxDim = uint64_t{1} << 32;

[[noreturn]] void fail(const std::string& message) {
    throw Error(Status::Format, message);
}

uint64_t align64(uint64_t n) {
    return (n + kAlignment - 1) / kAlignment * kAlignment;
}

// Reads little-endian fields from [begin, end), failing (not crashing) at the end.
class Reader {
  public:
    Reader(const uint8_t* data, size_t begin, size_t end, const char* section)
        : data_(data), pos_(begin), end_(end), section_(section) {}

    template <typename T>
    T read() {
        need(sizeof(T));
        T value;
        std::memcpy(&value, data_ + pos_, sizeof(T));  // the host is little-endian (checked below)
        pos_ += sizeof(T);
        return value;
    }
    const uint8_t* bytes(size_t n) {
        need(n);
        const uint8_t* p = data_ + pos_;
        pos_ += n;
        return p;
    }
    size_t pos() const { return pos_; }

  private:
    void need(size_t n) {
        if (n > end_ - pos_) fail(std::string("truncated ") + section_ + " (header too short)");
    }
    const uint8_t* data_;
    size_t pos_, end_;
    const char* section_;
};

struct TensorEntry {
    std::string name;
    DType dtype;
    std::vector<uint64_t> shape;
    uint64_t offset, nbytes;
};

const char* dtype_name(DType t) {
    switch (t) {
        case DType::F32:
            return "f32";
        case DType::Q8_0:
            return "q8_0";
        case DType::Q4:
            return "q4";
    }
    return "?";
}

// nbytes the dtype and shape give (docs/format.md, "Dtypes"); shapes are already within 1..2^32
// and at most 4-dimensional, and the caller has checked them against the expected shapes, so
// nothing here overflows 64 bits for any shape the limits allow.
uint64_t expected_nbytes(DType dtype, const std::vector<uint64_t>& shape) {
    uint64_t rows = 1;
    for (size_t i = 0; i + 1 < shape.size(); ++i) rows *= shape[i];
    const uint64_t n = shape.back();
    const uint64_t blocks = (n + 31) / 32;
    switch (dtype) {
        case DType::F32:
            return 4 * rows * n;
        case DType::Q8_0:
            return 36 * rows * blocks;
        case DType::Q4:
            return 20 * rows * blocks;
    }
    return 0;
}

std::string shape_string(const std::vector<uint64_t>& shape) {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
}

bool valid_name(const uint8_t* name, size_t n) {
    for (size_t i = 0; i < n; ++i) {
        const uint8_t c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.'))
            return false;
    }
    return true;
}

void check_values(const uint8_t* p, const TensorEntry& e) {
    uint64_t rows = 1;
    for (size_t i = 0; i + 1 < e.shape.size(); ++i) rows *= e.shape[i];
    const uint64_t n = e.shape.back(), blocks = (n + 31) / 32;
    auto finite_at = [&](uint64_t offset) {
        float f;
        std::memcpy(&f, p + offset, 4);
        return std::isfinite(f);
    };
    bool ok = true;
    switch (e.dtype) {
        case DType::F32:
            for (uint64_t i = 0; i < rows * n && ok; ++i) ok = finite_at(4 * i);
            break;
        case DType::Q8_0:
            for (uint64_t b = 0; b < rows * blocks && ok; ++b) {
                ok = finite_at(36 * b);
                for (int i = 0; i < 32 && ok; ++i) ok = p[36 * b + 4 + i] != 0x80;  // q = -128
            }
            break;
        case DType::Q4:
            for (uint64_t b = 0; b < rows * blocks && ok; ++b) ok = finite_at(20 * b);
            break;
    }
    if (!ok) fail("tensor '" + e.name + "' holds a non-finite value or a q8_0 value of -128");
}

}  // namespace

uint32_t crc32(const uint8_t* data, size_t size) {
    // Slicing-by-8: table[k][b] is the CRC of byte b followed by k zero bytes, so eight bytes are
    // folded in per step (about 8x the byte-at-a-time speed; the map is checked at every load).
    static const auto table = [] {
        std::vector<std::array<uint32_t, 256>> t(8);
        for (uint32_t i = 0; i < 256; ++i) {
            uint32_t c = i;
            for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            t[0][i] = c;
        }
        for (uint32_t i = 0; i < 256; ++i)
            for (int k = 1; k < 8; ++k) t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xFF];
        return t;
    }();
    uint32_t crc = 0xFFFFFFFFu;
    size_t i = 0;
    for (; i + 8 <= size; i += 8) {
        uint32_t lo, hi;
        std::memcpy(&lo, data + i, 4);  // little-endian host (the loader checks)
        std::memcpy(&hi, data + i + 4, 4);
        lo ^= crc;
        crc = table[7][lo & 0xFF] ^ table[6][(lo >> 8) & 0xFF] ^ table[5][(lo >> 16) & 0xFF] ^
              table[4][lo >> 24] ^ table[3][hi & 0xFF] ^ table[2][(hi >> 8) & 0xFF] ^
              table[1][(hi >> 16) & 0xFF] ^ table[0][hi >> 24];
    }
    for (; i < size; ++i) crc = table[0][(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
    return crc ^ 0xFFFFFFFFu;
}

std::unique_ptr<Model> Model::load(const std::string& path) {
    std::unique_ptr<Model> model(new Model());
#if defined(SAGE_HAVE_MMAP)
    const int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0)
        throw Error(Status::Io, "cannot open model file '" + path + "': " + std::strerror(errno));
    struct stat st{};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        throw Error(Status::Io, "'" + path + "' is " +
                                    (S_ISDIR(st.st_mode) ? "a directory" : "not a regular file") +
                                    ", not a model file");
    }
    model->size_ = static_cast<size_t>(st.st_size);
    if (model->size_ > 0) {
        void* map = ::mmap(nullptr, model->size_, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            ::close(fd);
            throw Error(Status::Io,
                        "cannot map model file '" + path + "': " + std::strerror(errno));
        }
        model->mapping_ = map;
        model->bytes_ = static_cast<const uint8_t*>(map);
    }
    ::close(fd);
#else
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(Status::Io, "cannot open model file '" + path + "'");
    model->copy_.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    model->bytes_ = model->copy_.data();
    model->size_ = model->copy_.size();
#endif
    try {
        model->parse();
    } catch (const Error& e) {
        throw Error(e.status(), "'" + path + "': " + e.what());
    }
    return model;
}

std::unique_ptr<Model> Model::from_bytes(const uint8_t* data, size_t size) {
    std::unique_ptr<Model> model(new Model());
    model->copy_.assign(data, data + size);
    // A copy keeps the tensors' alignment to the allocation (not to 64, which only the map
    // guarantees); every kernel reads f32 and blocks with 4-byte alignment, which new[] gives.
    model->bytes_ = model->copy_.data();
    model->size_ = size;
    model->parse();
    return model;
}

namespace {

// The whole pages of a matrix's `bytes` in the map, given back to the kernel once it is packed:
// read again from the file if ever touched.
void give_back_pages(const void* data, uint64_t bytes) {
#if defined(SAGE_HAVE_MMAP)
    const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
    const uintptr_t start = reinterpret_cast<uintptr_t>(data), end = start + bytes;
    const uintptr_t first = (start + page - 1) / page * page, last = end / page * page;
    if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
#else
    (void)data, (void)bytes;
#endif
}

// Packs each of `matrices` stored as `dtype` into one allocation of Panel (not value-initialised:
// a page is touched only when its matrix is packed, so the packed copy and the map's pages it
// replaces are not both resident at once, the runner's peak memory); place(matrix, its panels).
template <typename Block, typename Panel, typename Pack, typename Place>
size_t pack_matrices(const std::vector<const Matrix*>& matrices, DType dtype, bool mapped,
                     std::unique_ptr<Panel[]>& storage, Pack pack, Place place) {
    auto panel_blocks = [dtype](const Matrix& m) {
        return m.dtype == dtype
                   ? size_t(kernels::panels_of(m.rows) * kernels::blocks_per_row(m.cols))
                   : 0;
    };
    size_t count = 0;
    for (const Matrix* m : matrices) count += panel_blocks(*m);
    if (count == 0) return 0;
    storage.reset(new Panel[count]);
    size_t at = 0;
    for (const Matrix* m : matrices) {
        if (panel_blocks(*m) == 0) continue;
        pack(static_cast<const Block*>(m->data), m->rows, m->cols, &storage[at]);
        place(*m, &storage[at]);
        at += panel_blocks(*m);
        if (mapped)
            give_back_pages(m->data,
                            uint64_t(m->rows) * kernels::blocks_per_row(m->cols) * sizeof(Block));
    }
    return count;
}

}  // namespace

void Model::pack_panels(const kernels::KernelTable& table) const {
    std::call_once(panels_once_, [this, &table] {
        std::vector<const Matrix*> matrices;
        for (const LayerWeights& l : weights.layers)
            for (const Matrix* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w1, &l.w3, &l.w2})
                matrices.push_back(m);
        matrices.push_back(&weights.output);
        const bool mapped = mapping_ != nullptr;
        if (table.matmul_q8_0_panels != nullptr)
            panel_count_ = pack_matrices<kernels::BlockQ8_0>(
                matrices, DType::Q8_0, mapped, panels_, kernels::pack_q8_0_panels,
                [](const Matrix& m, const kernels::PanelBlockQ8* p) { m.panels = p; });
        if (table.matmul_q4_panels != nullptr)
            panel_q4_count_ = pack_matrices<kernels::BlockQ4>(
                matrices, DType::Q4, mapped, panels_q4_, kernels::pack_q4_panels,
                [](const Matrix& m, const kernels::PanelBlockQ4* p) { m.panels_q4 = p; });
    });
}

Model::~Model() {
#if defined(SAGE_HAVE_MMAP)
    if (mapping_) ::munmap(mapping_, size_);
#endif
}

void Model::parse() {
    {
        const uint32_t one = 1;
        uint8_t first;
        std::memcpy(&first, &one, 1);
        if (first != 1) fail("this engine reads .sage files on little-endian hosts only");
    }
    const uint8_t* data = bytes_;
    const size_t size = size_;
    file_bytes = size;

    // Preamble.
    if (size < kPreambleBytes)
        fail("file too short to be a .sage model (" + std::to_string(size) + " bytes)");
    if (std::memcmp(data, kMagic, sizeof kMagic) != 0) fail("not a .sage model file (bad magic)");
    Reader pre(data, 8, kPreambleBytes, "preamble");
    const uint32_t version = pre.read<uint32_t>();
    const uint32_t header_size = pre.read<uint32_t>();
    const uint64_t data_offset = pre.read<uint64_t>();
    const uint64_t file_size = pre.read<uint64_t>();
    if (version == 0 || version >= kFirstImplausibleVersion)
        fail("corrupt file: format version field is " + std::to_string(version) +
             ", which no sage-edge writes (this one reads version " + std::to_string(kVersion) +
             ")");
    if (version > kVersion)
        fail("the file is format version " + std::to_string(version) +
             ", written by a newer sage-edge (this one reads version " + std::to_string(kVersion) +
             "); update sage-edge to load it");
    if (file_size != size)
        fail("file size is " + std::to_string(size) + " bytes but the header says " +
             std::to_string(file_size) + " (truncated or padded file)");
    if (header_size < kPreambleBytes + kHyperparameterBytes || header_size > size - 4)
        fail("header_size " + std::to_string(header_size) + " out of range");
    if (data_offset != align64(header_size))
        fail("data_offset " + std::to_string(data_offset) + " is not align64(header_size)");
    if (data_offset + 4 > size) fail("no room for tensor data and checksum");

    // Checksum, before trusting anything past the preamble.
    uint32_t stored_crc;
    std::memcpy(&stored_crc, data + size - 4, 4);
    if (crc32(data, size - 4) != stored_crc) fail("checksum mismatch: the file is corrupted");

    // Hyperparameters.
    Reader r(data, kPreambleBytes, header_size, "hyperparameters");
    const uint32_t V = r.read<uint32_t>(), L = r.read<uint32_t>(), d = r.read<uint32_t>();
    const uint32_t H = r.read<uint32_t>(), G = r.read<uint32_t>(), dh = r.read<uint32_t>();
    const uint32_t dff = r.read<uint32_t>(), F = r.read<uint32_t>(), attention = r.read<uint32_t>();
    const uint32_t position = r.read<uint32_t>(), norm = r.read<uint32_t>(),
                   ffn = r.read<uint32_t>();
    const float eps = r.read<float>();
    const uint32_t tpq = r.read<uint32_t>(), n_tensors = r.read<uint32_t>();
    const uint32_t reserved = r.read<uint32_t>();
    auto check = [](bool ok, const std::string& what) {
        if (!ok) fail(what);
    };
    check(V >= 1 && V <= 65536, "vocab_size " + std::to_string(V) + " outside 1..65536");
    check(L >= 1 && L <= 256, "n_layers " + std::to_string(L) + " outside 1..256");
    check(d >= 1 && d <= 65536, "d_model " + std::to_string(d) + " outside 1..65536");
    check(dff >= 1 && dff <= 65536, "d_ff " + std::to_string(dff) + " outside 1..65536");
    check(dh >= 1 && dh <= kernels::kMaxHeadWidth,
          "d_head " + std::to_string(dh) + " outside 1.." + std::to_string(kernels::kMaxHeadWidth));
    check(G >= 1 && G <= H && H <= 256 && H % G == 0,
          "heads H=" + std::to_string(H) + ", G=" + std::to_string(G) +
              " must satisfy 1 <= G <= H <= 256 and G | H");
    check(attention <= 2, "unknown attention mode " + std::to_string(attention));
    check(F == (attention == 2 ? 6u : 1u),
          "n_families " + std::to_string(F) + " does not match the attention mode");
    check(attention != 0 || G == H, "mha attention needs n_kv_heads == n_heads");
    check(position == 0, "unknown position scheme " + std::to_string(position));
    check(norm == 0, "unknown norm " + std::to_string(norm));
    check(ffn == 0, "unknown feed-forward kind " + std::to_string(ffn));
    check(std::isfinite(eps) && eps > 0, "norm_eps must be finite and > 0");
    check(tpq >= 1 && tpq <= kMaxTicksPerQuarter, "ticks_per_quarter " + std::to_string(tpq) +
                                                      " outside 1.." +
                                                      std::to_string(kMaxTicksPerQuarter));
    check(n_tensors <= 4096, "n_tensors " + std::to_string(n_tensors) + " above 4096");
    check(reserved == 0, "reserved hyperparameter field is not 0");
    config = Config{static_cast<int>(V),
                    static_cast<int>(L),
                    static_cast<int>(d),
                    static_cast<int>(H),
                    static_cast<int>(G),
                    static_cast<int>(dh),
                    static_cast<int>(dff),
                    static_cast<int>(F),
                    static_cast<Attention>(attention),
                    eps,
                    static_cast<int>(tpq)};

    // Horizons.
    Reader hr(data, r.pos(), header_size, "horizons");
    horizons.resize(L);
    for (uint32_t l = 0; l < L; ++l) {
        horizons[l] = hr.read<uint32_t>();
        check(horizons[l] >= 1 && horizons[l] <= 1048576,
              "horizon of layer " + std::to_string(l) + " outside 1..1048576");
    }

    // Vocabulary.
    Reader vr(data, hr.pos(), header_size, "vocabulary");
    vocab.resize(V);
    for (uint32_t t = 0; t < V; ++t) {
        const uint8_t family = vr.read<uint8_t>(), kind = vr.read<uint8_t>();
        const uint16_t pad = vr.read<uint16_t>();
        const int32_t a = vr.read<int32_t>(), b = vr.read<int32_t>();
        check(family < kNumFamilies && kind < kNumKinds && pad == 0,
              "vocabulary entry " + std::to_string(t) + " has a bad family, kind or padding");
        check(family_of_kind(static_cast<Kind>(kind)) == static_cast<Family>(family),
              "vocabulary entry " + std::to_string(t) + ": kind and family disagree");
        vocab[t] = TokenInfo{static_cast<Family>(family), static_cast<Kind>(kind), a, b};
    }

    // Metadata JSON: strict JSON with the two objects; the engine keeps the learned programs.
    Reader mr(data, vr.pos(), header_size, "metadata");
    const uint32_t meta_bytes = mr.read<uint32_t>();
    check(meta_bytes <= kMaxMetadataBytes, "metadata longer than 16 MiB");
    const uint8_t* meta_text = mr.bytes(meta_bytes);
    learned_programs = read_metadata(meta_text, meta_bytes);
    metadata_json.assign(reinterpret_cast<const char*>(meta_text), meta_bytes);

    // Tensor table.
    Reader tr(data, mr.pos(), header_size, "tensor table");
    std::vector<TensorEntry> entries(n_tensors);
    for (auto& e : entries) {
        const uint16_t name_length = tr.read<uint16_t>();
        check(name_length >= 1 && name_length <= 255, "tensor name length outside 1..255");
        const uint8_t* name = tr.bytes(name_length);
        check(valid_name(name, name_length), "tensor name has characters outside [a-z0-9_.]");
        e.name.assign(reinterpret_cast<const char*>(name), name_length);
        const uint8_t dtype = tr.read<uint8_t>(), ndim = tr.read<uint8_t>();
        check(dtype != kRetiredF16, "tensor '" + e.name +
                                        "' has dtype 1 (f16), which sage-edge no longer reads; "
                                        "export the model again as one of f32, q8_0, q4");
        check(dtype == uint8_t(DType::F32) || dtype == uint8_t(DType::Q8_0) ||
                  dtype == uint8_t(DType::Q4),
              "tensor '" + e.name + "' has unknown dtype " + std::to_string(dtype));
        check(ndim >= 1 && ndim <= 4, "tensor '" + e.name + "' has ndim outside 1..4");
        e.dtype = static_cast<DType>(dtype);
        e.shape.resize(ndim);
        for (auto& s : e.shape) {
            s = tr.read<uint64_t>();
            check(s >= 1 && s <= kMaxDim,
                  "tensor '" + e.name + "' has a dimension outside 1..2^32");
        }
        e.offset = tr.read<uint64_t>();
        e.nbytes = tr.read<uint64_t>();
    }
    check(tr.pos() == header_size, "header_size does not end at the end of the tensor table");

    // The expected tensors (docs/format.md, "Tensors").
    struct Expected {
        std::vector<uint64_t> shape;
        bool matrix;
    };
    std::map<std::string, Expected> expected;
    const uint64_t qd = uint64_t{H} * dh, kvd = uint64_t{G} * dh;
    expected["tok_embedding"] = {{V, d}, true};
    expected["alibi_slopes"] = {{H}, false};
    expected["final_norm"] = {{d}, false};
    expected["output"] = {{V, d}, true};
    for (uint32_t l = 0; l < L; ++l) {
        const std::string p = "layers." + std::to_string(l) + ".";
        expected[p + "attn_norm"] = {{d}, false};
        expected[p + "wq"] = {{qd, d}, true};
        expected[p + "wk"] = {{F, kvd, d}, true};
        expected[p + "wv"] = {{F, kvd, d}, true};
        expected[p + "wo"] = {{d, qd}, true};
        expected[p + "ffn_norm"] = {{d}, false};
        expected[p + "w1"] = {{dff, d}, true};
        expected[p + "w3"] = {{dff, d}, true};
        expected[p + "w2"] = {{d, dff}, true};
    }
    check(n_tensors == expected.size(), "the file holds " + std::to_string(n_tensors) +
                                            " tensors, the model needs " +
                                            std::to_string(expected.size()));

    std::map<std::string, const TensorEntry*> by_name;
    bool have_matrix_dtype = false;
    for (const auto& e : entries) {
        const auto it = expected.find(e.name);
        check(it != expected.end(), "unexpected tensor '" + e.name + "'");
        check(by_name.emplace(e.name, &e).second, "tensor '" + e.name + "' appears twice");
        check(e.shape == it->second.shape, "tensor '" + e.name + "' has shape " +
                                               shape_string(e.shape) + ", expected " +
                                               shape_string(it->second.shape));
        if (it->second.matrix) {
            if (!have_matrix_dtype) quant = e.dtype;
            have_matrix_dtype = true;
            check(e.dtype == quant, "matrices of one file must share one dtype ('" + e.name +
                                        "' is " + dtype_name(e.dtype) + ", others " +
                                        dtype_name(quant) + ")");
        } else {
            check(e.dtype == DType::F32, "vector '" + e.name + "' must be f32");
        }
        check(e.nbytes == expected_nbytes(e.dtype, e.shape),
              "tensor '" + e.name + "' has nbytes " + std::to_string(e.nbytes) +
                  ", its shape needs " + std::to_string(expected_nbytes(e.dtype, e.shape)));
        check(e.offset % kAlignment == 0 && e.offset >= data_offset,
              "tensor '" + e.name + "' offset is not a multiple of 64 at or after data_offset");
        check(e.offset <= size - 4 && e.nbytes <= size - 4 - e.offset,
              "tensor '" + e.name + "' runs past the end of the tensor data");
        uint64_t count = 1;
        for (uint64_t s : e.shape) count *= s;
        parameters += count;
    }
    std::vector<const TensorEntry*> sorted;
    for (const auto& e : entries) sorted.push_back(&e);
    std::sort(sorted.begin(), sorted.end(),
              [](const TensorEntry* a, const TensorEntry* b) { return a->offset < b->offset; });
    for (size_t i = 1; i < sorted.size(); ++i)
        check(sorted[i - 1]->offset + sorted[i - 1]->nbytes <= sorted[i]->offset,
              "tensors '" + sorted[i - 1]->name + "' and '" + sorted[i]->name + "' overlap");

    // Lay out the weights: pointers into the map.
    auto vector_at = [&](const std::string& name) {
        return reinterpret_cast<const float*>(data + by_name.at(name)->offset);
    };
    auto matrix_at = [&](const std::string& name) {
        const TensorEntry& e = *by_name.at(name);
        Matrix m;
        m.cols = static_cast<int64_t>(e.shape.back());
        m.rows = 1;
        for (size_t i = 0; i + 1 < e.shape.size(); ++i) m.rows *= static_cast<int64_t>(e.shape[i]);
        m.dtype = e.dtype;
        m.data = data + e.offset;
        return m;
    };
    // Every value must be finite (and a q8_0 value in [-127, 127], as the kernels require): a NaN
    // weight would otherwise surface as NaN logits far from its cause.
    for (const auto& e : entries) check_values(data + e.offset, e);
    weights.tok_embedding = matrix_at("tok_embedding");
    weights.alibi_slopes = vector_at("alibi_slopes");
    for (uint32_t h = 0; h < H; ++h)
        check(std::isfinite(weights.alibi_slopes[h]), "alibi_slopes holds a non-finite value");
    weights.final_norm = vector_at("final_norm");
    weights.output = matrix_at("output");
    weights.layers.resize(L);
    for (uint32_t l = 0; l < L; ++l) {
        const std::string p = "layers." + std::to_string(l) + ".";
        LayerWeights& lw = weights.layers[l];
        lw.attn_norm = vector_at(p + "attn_norm");
        lw.wq = matrix_at(p + "wq");
        lw.wk = matrix_at(p + "wk");
        lw.wv = matrix_at(p + "wv");
        lw.wo = matrix_at(p + "wo");
        lw.ffn_norm = vector_at(p + "ffn_norm");
        lw.w1 = matrix_at(p + "w1");
        lw.w3 = matrix_at(p + "w3");
        lw.w2 = matrix_at(p + "w2");
    }
}

}  // namespace sage
