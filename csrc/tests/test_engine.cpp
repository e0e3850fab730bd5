// The engine end to end on the fixture models (tests/data/tiny_*.sage): the forward pass, the ring
// memories, prefill, sampling, events, argument checks, broken files and kernel paths.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/model_file.h"
#include "engine/session.h"
#include "engine_fixtures.h"
#include "kernels.h"
#include "sage_edge/sage_edge.h"
#include "testing.h"

namespace {

using sage::testing::fixture_models;
using sage::testing::load_or_die;
using sage::testing::read_file;

struct ModelInfo {
    sage_model_info info;
    std::vector<uint32_t> horizons;
    uint32_t longest, receptive_field;  // receptive field: how far back any logit can look
};

ModelInfo info_of(const sage_model* model) {
    ModelInfo m{};
    CHECK_EQ(sage_model_get_info(model, &m.info), SAGE_OK);
    m.horizons.resize(m.info.n_layers);
    CHECK_EQ(sage_model_get_horizons(model, m.horizons.data(), m.horizons.size()), SAGE_OK);
    m.longest = *std::max_element(m.horizons.begin(), m.horizons.end());
    for (uint32_t h : m.horizons) m.receptive_field += h;
    return m;
}

std::vector<int32_t> random_tokens(size_t n, uint32_t vocab_size, uint32_t seed) {
    std::mt19937 rng(seed);
    std::vector<int32_t> tokens(n);
    for (auto& t : tokens) t = static_cast<int32_t>(rng() % vocab_size);
    return tokens;
}

uint64_t position_of(const sage_session* session) {
    uint64_t position = 0;
    CHECK_EQ(sage_session_get_position(session, &position), SAGE_OK);
    return position;
}

double tempo_of(const sage_session* session) {
    double bpm = 0;
    CHECK_EQ(sage_session_get_tempo(session, &bpm), SAGE_OK);
    return bpm;
}

int32_t find_kind(const sage_model* model, uint32_t kind) {
    int32_t id = -2;
    CHECK_EQ(sage_model_find_kind(model, kind, &id), SAGE_OK);
    return id;
}

sage_session* new_session(const sage_model* model, uint64_t seed = 0,
                          uint32_t kv_memory = sage_session_options_default().kv_memory) {
    sage_session_options options = sage_session_options_default();
    options.seed = seed;
    options.kv_memory = kv_memory;
    sage_session* session = nullptr;
    CHECK_EQ(sage_session_create(model, &options, &session), SAGE_OK);
    return session;
}

// The id of the first token of a kind in the model's vocabulary.
int32_t first_of_kind(const std::string& path, sage::Kind kind) {
    auto model = sage::Model::load(path);
    for (size_t t = 0; t < model->vocab.size(); ++t)
        if (model->vocab[t].kind == kind) return static_cast<int32_t>(t);
    return -1;
}

TEST(fixtures_load_with_consistent_info) {
    for (const auto& path : fixture_models()) {
        sage_model* model = load_or_die(path);
        const ModelInfo m = info_of(model);
        CHECK(m.info.vocab_size > 0 && m.info.n_layers > 0);
        CHECK_EQ(m.info.n_heads % m.info.n_kv_heads, 0u);
        CHECK_EQ(m.info.budget, uint64_t{m.receptive_field});
        CHECK_EQ(m.info.file_bytes, uint64_t(read_file(path).size()));
        // Per slot and key/value head, a key and a value: d_head floats each, or d_head int8
        // and one float scale each.
        for (uint32_t kv : {SAGE_KV_F32, SAGE_KV_INT8}) {
            sage_session* session = new_session(model, 0, kv);
            sage_memory memory{};
            CHECK_EQ(sage_session_get_memory(session, &memory), SAGE_OK);
            const uint64_t row_bytes = kv == SAGE_KV_F32 ? m.info.d_head * 4 : m.info.d_head + 4;
            CHECK_EQ(memory.kv_bytes,
                     uint64_t{m.receptive_field} * m.info.n_kv_heads * row_bytes * 2);
            CHECK_EQ(memory.weights_bytes, m.info.file_bytes);
            CHECK(memory.total_bytes > memory.kv_bytes + memory.activation_bytes);
            sage_session_free(session);
        }
        sage_model_free(model);
    }
}

// Decoding far past every horizon keeps the logits finite, and a prefill over a block gives
// bit-identical logits to feeding the same tokens one at a time (f32 and int8 memory).
TEST(prefill_equals_token_by_token_past_every_horizon) {
    for (const auto& path : fixture_models())
        for (uint32_t kv : {SAGE_KV_F32, SAGE_KV_INT8}) {
            sage_model* model = load_or_die(path);
            const ModelInfo m = info_of(model);
            const size_t V = m.info.vocab_size;
            const size_t n = 3 * m.longest + 2 * sage::Session::kPrefillChunk + 7;
            const auto tokens = random_tokens(n, m.info.vocab_size, 1);

            sage_session* block = new_session(model, 0, kv);
            std::vector<float> all(n * V);
            CHECK_EQ(sage_session_feed(block, tokens.data(), n, all.data(), 1), SAGE_OK);
            CHECK_EQ(position_of(block), uint64_t(n));

            sage_session* single = new_session(model, 0, kv);
            std::vector<float> logits(V);
            size_t mismatched = 0;
            bool finite = true;
            for (size_t i = 0; i < n; ++i) {
                CHECK_EQ(sage_session_feed(single, &tokens[i], 1, logits.data(), 0), SAGE_OK);
                if (std::memcmp(logits.data(), &all[i * V], V * sizeof(float)) != 0) ++mismatched;
                for (float v : logits) finite = finite && std::isfinite(v);
            }
            CHECK_EQ(mismatched, size_t{0});
            CHECK(finite);

            // Last-token-only logits of a block equal the last row of all_logits.
            sage_session_reset(block);
            CHECK_EQ(sage_session_feed(block, tokens.data(), n, logits.data(), 0), SAGE_OK);
            CHECK(std::memcmp(logits.data(), &all[(n - 1) * V], V * sizeof(float)) == 0);
            sage_session_free(single);
            sage_session_free(block);
            sage_model_free(model);
        }
}

// The int8 memory's value sums are exact int32 sums of up to a horizon of products of 255 * 127:
// a session refuses it for a layer of a longer horizon (the f32 memory takes it).
TEST(int8_memory_refuses_horizons_past_its_exact_sums) {
    auto model = sage::Model::load(fixture_models().front());
    model->horizons.back() = sage::kernels::kMaxInt8Horizon + 1;
    sage::SessionOptions options;
    options.kv_memory = sage::KvMemory::Int8;
    std::string message;
    try {
        sage::Session session(*model, options, sage::kernels::active());
    } catch (const sage::Error& e) {
        CHECK(e.status() == sage::Status::Argument);
        message = e.what();
    }
    const std::string want = "kv_memory int8 needs horizons of at most 65536 (layer " +
                             std::to_string(model->horizons.size() - 1) +
                             " has 65537): use the f32 memory";
    CHECK(message == want);
    model->horizons.back() = sage::kernels::kMaxInt8Horizon;
    sage::Session longest(*model, options, sage::kernels::active());
    CHECK_EQ(longest.position(), uint64_t{0});
}

// A snapshot takes a session back: after restore, the same tokens give bit for bit the logits
// they gave the first time, past every horizon (the rings were overwritten meanwhile), and the
// grammar and detokenizer are back where they were.
TEST(restoring_a_snapshot_replays_exactly) {
    for (const auto& path : fixture_models())
        for (auto kv : {sage::KvMemory::F32, sage::KvMemory::Int8}) {
            auto model = sage::Model::load(path);
            sage::SessionOptions options;
            options.kv_memory = kv;
            sage::Session session(*model, options, sage::kernels::active());
            const int64_t longest =
                *std::max_element(model->horizons.begin(), model->horizons.end());
            const auto prompt = random_tokens(40, model->config.vocab_size, 2);
            const auto later = random_tokens(2 * longest + 9, model->config.vocab_size, 3);
            session.feed(prompt.data(), prompt.size(), nullptr, false);
            auto snapshot = session.make_snapshot();
            const uint64_t bars = session.bars();
            const size_t V = model->config.vocab_size;
            std::vector<float> first(later.size() * V), again(later.size() * V);
            session.feed(later.data(), later.size(), first.data(), true);
            session.restore(*snapshot);
            CHECK_EQ(session.position(), uint64_t{prompt.size()});
            CHECK_EQ(session.bars(), bars);
            session.feed(later.data(), later.size(), again.data(), true);
            CHECK(std::memcmp(first.data(), again.data(), first.size() * sizeof(float)) == 0);
            // save() overwrites the snapshot: restoring goes back to the later point.
            session.save(*snapshot);
            session.feed(prompt.data(), 5, nullptr, false);
            session.restore(*snapshot);
            CHECK_EQ(session.position(), uint64_t{prompt.size() + later.size()});
        }
}

// The int8 memory stays close to the f32 one: over a sequence past every horizon, the softmax of
// its logits is within a small KL divergence of f32's at every position (the quality gate on the
// real model and corpus is benchmarks/kv_quality.py), and it is not the f32 memory by accident.
TEST(int8_memory_logits_stay_close_to_f32) {
    for (const auto& path : fixture_models()) {
        sage_model* model = load_or_die(path);
        const ModelInfo m = info_of(model);
        const size_t V = m.info.vocab_size, n = 2 * m.longest + 50;
        const auto tokens = random_tokens(n, m.info.vocab_size, 3);
        std::vector<float> f32(n * V), int8(n * V);
        sage_session* a = new_session(model, 0, SAGE_KV_F32);
        sage_session* b = new_session(model, 0, SAGE_KV_INT8);
        CHECK_EQ(sage_session_feed(a, tokens.data(), n, f32.data(), 1), SAGE_OK);
        CHECK_EQ(sage_session_feed(b, tokens.data(), n, int8.data(), 1), SAGE_OK);
        double worst_kl = 0.0;
        for (size_t i = 0; i < n; ++i) {
            const float* p = &f32[i * V];
            const float* q = &int8[i * V];
            const double top_p = *std::max_element(p, p + V), top_q = *std::max_element(q, q + V);
            double zp = 0.0, zq = 0.0;
            for (size_t v = 0; v < V; ++v)
                zp += std::exp(p[v] - top_p), zq += std::exp(q[v] - top_q);
            double kl = 0.0;
            for (size_t v = 0; v < V; ++v) {
                const double lp = p[v] - top_p - std::log(zp), lq = q[v] - top_q - std::log(zq);
                kl += std::exp(lp) * (lp - lq);
            }
            worst_kl = std::max(worst_kl, kl);
        }
        CHECK(worst_kl < 0.05);
        CHECK(std::memcmp(f32.data(), int8.data(), f32.size() * sizeof(float)) != 0);
        sage_memory fm, im;
        CHECK_EQ(sage_session_get_memory(a, &fm), SAGE_OK);
        CHECK_EQ(sage_session_get_memory(b, &im), SAGE_OK);
        CHECK_EQ(im.kv_bytes * 4 * m.info.d_head, fm.kv_bytes * (m.info.d_head + 4));
        sage_session_free(a);
        sage_session_free(b);
        sage_model_free(model);
    }
}

// Nothing depends on the absolute position: after the same `receptive_field` tokens, two
// sessions with different histories (and different ring slots) give bit-identical logits.
TEST(logits_depend_on_the_window_only) {
    for (const auto& path : fixture_models()) {
        sage_model* model = load_or_die(path);
        const ModelInfo m = info_of(model);
        const size_t V = m.info.vocab_size;
        const auto shared = random_tokens(m.receptive_field + 5, m.info.vocab_size, 7);
        std::vector<float> a(V), b(V);

        sage_session* short_history = new_session(model);
        const auto prefix_a = random_tokens(3, m.info.vocab_size, 8);
        sage_session_feed(short_history, prefix_a.data(), prefix_a.size(), nullptr, 0);
        sage_session_feed(short_history, shared.data(), shared.size(), a.data(), 0);

        sage_session* long_history = new_session(model);
        const auto prefix_b = random_tokens(5 * m.longest + 11, m.info.vocab_size, 9);
        sage_session_feed(long_history, prefix_b.data(), prefix_b.size(), nullptr, 0);
        sage_session_feed(long_history, shared.data(), shared.size(), b.data(), 0);

        CHECK(std::memcmp(a.data(), b.data(), V * sizeof(float)) == 0);
        sage_session_free(short_history);
        sage_session_free(long_history);
        sage_model_free(model);
    }
}

// The work of the kernels, counted by a table that forwards every call to the active path.
struct KernelWork {
    uint64_t calls = 0;
    uint64_t weights = 0;      // weight elements multiplied (rows × cols × tokens)
    uint64_t scored_keys = 0;  // keys scored by a query head
    uint64_t elementwise = 0;  // elements quantized or through SwiGLU
    bool operator==(const KernelWork& o) const {
        return calls == o.calls && weights == o.weights && scored_keys == o.scored_keys &&
               elementwise == o.elementwise;
    }
};

namespace counted {
namespace k = sage::kernels;
KernelWork work;
const k::KernelTable* inner = nullptr;

void quantize_row_q8_0(const float* x, k::BlockQ8_0* y, int64_t n) {
    work.calls++, work.elementwise += uint64_t(n);
    inner->quantize_row_q8_0(x, y, n);
}
void matvec_q8_0(const k::BlockQ8_0* w, const k::BlockQ8_0* x, float* y, int64_t rows,
                 int64_t cols) {
    work.calls++, work.weights += uint64_t(rows * cols);
    inner->matvec_q8_0(w, x, y, rows, cols);
}
void matvec_q4(const k::BlockQ4* w, const k::BlockQ8_0* x, float* y, int64_t rows, int64_t cols) {
    work.calls++, work.weights += uint64_t(rows * cols);
    inner->matvec_q4(w, x, y, rows, cols);
}
void matvec_f32(const float* w, const float* x, float* y, int64_t rows, int64_t cols) {
    work.calls++, work.weights += uint64_t(rows * cols);
    inner->matvec_f32(w, x, y, rows, cols);
}
void matmul_q8_0(const k::BlockQ8_0* w, const k::BlockQ8_0* x, float* y, int64_t rows, int64_t cols,
                 int64_t tokens, int64_t y_stride) {
    work.calls++, work.weights += uint64_t(rows * cols * tokens);
    inner->matmul_q8_0(w, x, y, rows, cols, tokens, y_stride);
}
void matmul_q4(const k::BlockQ4* w, const k::BlockQ8_0* x, float* y, int64_t rows, int64_t cols,
               int64_t tokens, int64_t y_stride) {
    work.calls++, work.weights += uint64_t(rows * cols * tokens);
    inner->matmul_q4(w, x, y, rows, cols, tokens, y_stride);
}
void matmul_q8_0_panels(const k::PanelBlockQ8* w, const k::BlockQ8_0* x, float* y, int64_t rows,
                        int64_t cols, int64_t tokens, int64_t y_stride) {
    work.calls++, work.weights += uint64_t(rows * cols * tokens);
    inner->matmul_q8_0_panels(w, x, y, rows, cols, tokens, y_stride);
}
void matmul_q4_panels(const k::PanelBlockQ4* w, const k::BlockQ8_0* x, float* y, int64_t rows,
                      int64_t cols, int64_t tokens, int64_t y_stride) {
    work.calls++, work.weights += uint64_t(rows * cols * tokens);
    inner->matmul_q4_panels(w, x, y, rows, cols, tokens, y_stride);
}
void swiglu(float* gate, const float* up, int64_t n) {
    work.calls++, work.elementwise += uint64_t(n);
    inner->swiglu(gate, up, n);
}
void rmsnorm(const float* x, const float* gain, float* out, int64_t n, int64_t rows, float eps) {
    work.calls++, work.elementwise += uint64_t(n * rows);
    inner->rmsnorm(x, gain, out, n, rows, eps);
}
void attend_group(const k::AttentionGroup& a) {
    work.calls++, work.scored_keys += uint64_t(a.window * a.heads);
    inner->attend_group(a);
}
void attend_group_q8(const k::AttentionGroup& a) {
    work.calls++, work.scored_keys += uint64_t(a.window * a.heads);
    inner->attend_group_q8(a);
}

const k::KernelTable& table() {
    inner = &k::active();
    static const k::KernelTable counting = [] {
        k::KernelTable t = *inner;
        t.name = "counted";
        t.quantize_row_q8_0 = quantize_row_q8_0;
        t.matvec_q8_0 = matvec_q8_0;
        t.matvec_q4 = matvec_q4;
        t.matvec_f32 = matvec_f32;
        t.matmul_q8_0 = matmul_q8_0;
        t.matmul_q4 = matmul_q4;
        if (inner->matmul_q8_0_panels != nullptr) t.matmul_q8_0_panels = matmul_q8_0_panels;
        if (inner->matmul_q4_panels != nullptr) t.matmul_q4_panels = matmul_q4_panels;
        t.swiglu = swiglu;
        t.rmsnorm = rmsnorm;
        t.attend_group = attend_group;
        t.attend_group_q8 = attend_group_q8;
        return t;
    }();
    return counting;
}
}  // namespace counted

// A decode step does the same work at every position past the longest horizon: one token after
// 2 × the longest horizon and one after 20 000 tokens make the same kernel calls over the same
// number of weights, keys and elements, and every query head scores exactly its layer's horizon of
// keys. Counted, not timed, so it is exact under ASan and qemu too; sage-edge-bench-decode prints
// the time of a step at several positions and its ratio to the first.
TEST(decode_work_does_not_grow_with_position) {
    for (const auto& path : fixture_models()) {
        auto model = sage::Model::load(path);
        const auto& c = model->config;
        uint64_t longest = 0, horizons = 0;
        for (int l = 0; l < c.n_layers; ++l) {
            longest = std::max<uint64_t>(longest, model->horizons[l]);
            horizons += model->horizons[l];
        }
        const auto next = random_tokens(1, c.vocab_size, 3);
        auto step_after = [&](size_t position, sage::KvMemory memory) {
            sage::Session session(*model, sage::SessionOptions{0, memory}, counted::table());
            const auto history = random_tokens(position, c.vocab_size, 5);
            session.feed(history.data(), history.size(), nullptr, false);
            counted::work = KernelWork{};
            std::vector<float> logits(c.vocab_size);
            session.feed(next.data(), 1, logits.data(), false);
            return counted::work;
        };
        for (sage::KvMemory memory : {sage::KvMemory::F32, sage::KvMemory::Int8}) {
            const KernelWork early = step_after(2 * longest, memory),
                             late = step_after(20000, memory);
            std::printf(
                "  %s: a decode step makes %llu kernel calls over %llu weights, %llu keys\n",
                path.c_str(), (unsigned long long)early.calls, (unsigned long long)early.weights,
                (unsigned long long)early.scored_keys);
            CHECK(early == late);
            CHECK_EQ(early.scored_keys, uint64_t(c.n_heads) * horizons);
            CHECK(early.weights > 0);
        }
    }
}

// Generation through every kernel path this CPU runs gives the tokens of the scalar path.
TEST(every_kernel_path_generates_the_same_tokens) {
    for (const auto& path : fixture_models()) {
        auto model = sage::Model::load(path);
        const int32_t bos = first_of_kind(path, sage::Kind::Bos);
        const int32_t start = bos >= 0 ? bos : first_of_kind(path, sage::Kind::Bar);
        sage::SamplingParams params;
        params.temperature = 1.0f;
        params.top_p = 0.95f;
        auto generate = [&](const sage::kernels::KernelTable& kernels, sage::KvMemory kv) {
            sage::SessionOptions options;
            options.seed = 1234;
            options.kv_memory = kv;
            sage::Session session(*model, options, kernels);
            session.feed(&start, 1, nullptr, false);
            std::vector<int32_t> tokens(300);
            session.generate(params, tokens.data(), tokens.size());
            return tokens;
        };
        for (auto kv : {sage::KvMemory::F32, sage::KvMemory::Int8}) {
            const auto reference = generate(*sage::kernels::find("scalar"), kv);
            const sage::kernels::KernelTable* paths[8];
            const int n_paths = sage::kernels::available(paths, 8);
            CHECK(n_paths >= 1);
            for (int i = 0; i < n_paths; ++i) {
                const bool same = generate(*paths[i], kv) == reference;
                if (!same)
                    std::fprintf(stderr, "  path %s differs from scalar on %s (kv memory %d)\n",
                                 paths[i]->name, path.c_str(), int(kv));
                CHECK(same);
            }
        }
    }
}

// A path with the packed kernels packs a q8_0 or q4 model's matrices once and gives their mapped
// pages back (Model::pack_panels); a session on a path that reads the file's layout afterwards, on
// the same model, reads them again from the file: its logits are those of a model never packed.
// Each packing path (AVX2, AVX-512 VNNI) gets a model of its own to pack. (The shipped model, q8_0,
// whose matrices span pages; and the tiny q4 fixture, whose matrices are smaller than a page, so
// nothing is given back.)
TEST(a_packed_model_still_serves_the_file_layout) {
    for (const std::string& path : {std::string(SAGE_SHIPPED_MODEL), fixture_models()[1]}) {
        const auto fresh = sage::Model::load(path);
        const auto tokens = random_tokens(100, uint32_t(fresh->config.vocab_size), 9);
        auto logits_after = [&](const sage::Model& model, const sage::kernels::KernelTable& k) {
            sage::Session session(model, sage::SessionOptions{}, k);
            std::vector<float> logits(model.config.vocab_size);
            session.feed(tokens.data(), tokens.size(), nullptr, false);
            session.feed(tokens.data(), 1, logits.data(), false);
            return logits;
        };
        const auto want = logits_after(*fresh, *sage::kernels::find("scalar"));
        const sage::kernels::KernelTable* paths[8];
        int packing = 0;
        for (int i = 0, n = sage::kernels::available(paths, 8); i < n; ++i) {
            const bool q4 = fresh->quant == sage::DType::Q4;
            if (q4 ? paths[i]->matmul_q4_panels == nullptr
                   : paths[i]->matmul_q8_0_panels == nullptr)
                continue;
            ++packing;
            const auto model = sage::Model::load(path);
            const auto packed = logits_after(*model, *paths[i]);
            CHECK(model->packed_bytes() > 0);
            CHECK(q4 ? model->weights.output.panels_q4 != nullptr
                     : model->weights.output.panels != nullptr);
            CHECK(packed == want);  // the packed products: the same bits
            CHECK(logits_after(*model, *sage::kernels::find("scalar")) == want);
            for (int j = 0; j < n; ++j)  // and every other path on the model this one packed
                CHECK(logits_after(*model, *paths[j]) == want);
        }
        std::printf("  %d paths here pack %s\n", packing, path.c_str());
    }
}

// A session packs only what its path multiplies by: the q8_0 or q4 panels where the path has the
// kernel for the model's dtype, nothing otherwise (NEON with the dot product has q8_0's alone, so
// a q4 model keeps its mapped rows), and the path reads its packed rows or the file's.
TEST(a_session_packs_only_the_panels_its_path_reads) {
    for (const std::string& path : {std::string(SAGE_SHIPPED_MODEL), fixture_models()[1]}) {
        const sage::kernels::KernelTable* paths[8];
        for (int i = 0, n = sage::kernels::available(paths, 8); i < n; ++i) {
            const auto model = sage::Model::load(path);
            const sage::Session session(*model, sage::SessionOptions{}, *paths[i]);
            const bool q4 = model->quant == sage::DType::Q4;
            const bool reads = q4 ? paths[i]->matmul_q4_panels != nullptr
                                  : paths[i]->matmul_q8_0_panels != nullptr;
            CHECK_EQ(model->packed_bytes() > 0, reads);
            CHECK_EQ(model->weights.output.panels != nullptr, reads && !q4);
            CHECK_EQ(model->weights.output.panels_q4 != nullptr, reads && q4);
        }
    }
}

// Generated tokens follow the grammar, decode into notes, and a reset replays the same seed.
TEST(generate_produces_notes_and_reset_replays_the_seed) {
    const std::string path = fixture_models().back();
    const int32_t bos = first_of_kind(path, sage::Kind::Bos);
    sage_model* model = load_or_die(path);
    sage_session* session = new_session(model, 42);
    const sage_sampling sampling = sage_sampling_default();
    std::vector<int32_t> first(400), second(400);
    CHECK_EQ(sage_session_feed(session, &bos, 1, nullptr, 0), SAGE_OK);
    CHECK_EQ(sage_session_generate(session, &sampling, first.data(), first.size()), SAGE_OK);
    CHECK_EQ(position_of(session), uint64_t(401));
    sage_bar bar;
    CHECK_EQ(sage_session_get_bar(session, &bar), SAGE_OK);
    CHECK(bar.index >= 1);

    std::vector<sage_note_event> events(4096);
    size_t count = 0;
    CHECK_EQ(sage_session_pop_events(session, events.data(), events.size(), &count), SAGE_OK);
    CHECK(count > 0);
    double last_time = 0;
    for (size_t i = 0; i < count; ++i) {
        CHECK(events[i].pitch >= 0 && events[i].pitch <= 127);
        CHECK(events[i].velocity >= 1 && events[i].velocity <= 127);
        CHECK(events[i].duration > 0);
        CHECK(events[i].time >= 0);
        last_time = std::max(last_time, events[i].time);
    }
    CHECK(last_time > 0);
    size_t again = 1;
    CHECK_EQ(sage_session_pop_events(session, events.data(), events.size(), &again), SAGE_OK);
    CHECK_EQ(again, size_t{0});  // popped events are gone

    CHECK_EQ(sage_session_reset(session), SAGE_OK);
    CHECK_EQ(position_of(session), uint64_t{0});
    CHECK_EQ(sage_session_feed(session, &bos, 1, nullptr, 0), SAGE_OK);
    CHECK_EQ(sage_session_generate(session, &sampling, second.data(), second.size()), SAGE_OK);
    CHECK(first == second);

    // Restricting programs: every generated Program token is an allowed one.
    auto cpp_model = sage::Model::load(path);
    const int32_t only = 0;
    CHECK_EQ(sage_session_reset(session), SAGE_OK);
    CHECK_EQ(sage_session_set_programs(session, &only, 1), SAGE_OK);
    CHECK_EQ(sage_session_feed(session, &bos, 1, nullptr, 0), SAGE_OK);
    CHECK_EQ(sage_session_generate(session, &sampling, second.data(), second.size()), SAGE_OK);
    for (int32_t t : second)
        if (cpp_model->vocab[t].kind == sage::Kind::Program) CHECK_EQ(cpp_model->vocab[t].a, 0);
    sage_session_free(session);
    sage_model_free(model);
}

TEST(vocabulary_queries_match_the_loaded_table) {
    for (const auto& path : fixture_models()) {
        auto table = sage::Model::load(path);
        sage_model* model = load_or_die(path);
        for (size_t id = 0; id < table->vocab.size(); ++id) {
            uint32_t family = 99, kind = 99;
            int32_t a = -7, b = -7;
            CHECK_EQ(sage_model_get_token(model, static_cast<int32_t>(id), &family, &kind, &a, &b),
                     SAGE_OK);
            CHECK_EQ(family, static_cast<uint32_t>(table->vocab[id].family));
            CHECK_EQ(kind, static_cast<uint32_t>(table->vocab[id].kind));
            CHECK_EQ(a, table->vocab[id].a);
            CHECK_EQ(b, table->vocab[id].b);
        }
        const int32_t vocab_size = static_cast<int32_t>(table->vocab.size());
        CHECK_EQ(sage_model_get_token(model, vocab_size, nullptr, nullptr, nullptr, nullptr),
                 SAGE_ERR_ARGUMENT);
        CHECK_EQ(sage_model_get_token(model, -1, nullptr, nullptr, nullptr, nullptr),
                 SAGE_ERR_ARGUMENT);
        CHECK_EQ(find_kind(model, SAGE_KIND_BOS), first_of_kind(path, sage::Kind::Bos));
        CHECK_EQ(find_kind(model, 200), -1);

        // The session reports the tempo of the last Tempo token it was fed.
        sage_session* session = new_session(model);
        CHECK_EQ(tempo_of(session), 120.0);
        const int32_t tempo = first_of_kind(path, sage::Kind::Tempo);
        CHECK_EQ(sage_session_feed(session, &tempo, 1, nullptr, 0), SAGE_OK);
        CHECK_EQ(tempo_of(session), table->vocab[static_cast<size_t>(tempo)].a / 1000.0);
        sage_session_free(session);
        sage_model_free(model);
    }
}

TEST(bad_arguments_give_argument_errors) {
    const std::string path = fixture_models().front();
    sage_model* model = load_or_die(path);
    const ModelInfo m = info_of(model);
    sage_session* session = new_session(model);
    int32_t token = 0;
    sage_sampling sampling = sage_sampling_default();

    // A kv_memory that is no sage_kv_memory: no session, no memory report.
    sage_session_options bad = sage_session_options_default();
    bad.kv_memory = 2;
    sage_session* none = nullptr;
    sage_memory report;
    CHECK_EQ(sage_session_create(model, &bad, &none), SAGE_ERR_ARGUMENT);
    CHECK(std::strstr(sage_last_error(), "kv_memory must be 0 (f32) or 1 (int8), not 2") !=
          nullptr);
    CHECK(none == nullptr);
    CHECK_EQ(sage_model_get_session_memory(model, &bad, &report), SAGE_ERR_ARGUMENT);

    // Nothing fed: feeding nothing has no logits to return; sampling starts a piece from BOS.
    float no_logits[1];
    CHECK_EQ(sage_session_feed(session, &token, 0, no_logits, 0), SAGE_ERR_STATE);
    CHECK_EQ(sage_session_sample(session, &sampling, &token), SAGE_OK);
    CHECK_EQ(position_of(session), uint64_t{1});
    CHECK_EQ(sage_session_reset(session), SAGE_OK);
    const int32_t bad_tokens[] = {-1, static_cast<int32_t>(m.info.vocab_size)};
    for (int32_t bad : bad_tokens) {
        const int32_t tokens[] = {0, bad};
        CHECK_EQ(sage_session_feed(session, tokens, 2, nullptr, 0), SAGE_ERR_ARGUMENT);
        CHECK(std::strstr(sage_last_error(), "token") != nullptr);
    }
    CHECK_EQ(position_of(session), uint64_t{0});  // a rejected feed changes nothing
    CHECK_EQ(sage_session_feed(session, nullptr, 1, nullptr, 0), SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_session_feed(session, &token, 1, nullptr, 0), SAGE_OK);

    const sage_sampling bad_sampling[] = {
        {-1.0f, 0, 1.0f, 0.0f}, {NAN, 0, 1.0f, 0.0f},  {1.0f, -1, 1.0f, 0.0f},
        {1.0f, 0, 0.0f, 0.0f},  {1.0f, 0, 1.5f, 0.0f}, {1.0f, 0, 1.0f, 1.0f},
        {1.0f, 0, 1.0f, -0.1f},
    };
    for (const sage_sampling& s : bad_sampling) {
        CHECK_EQ(sage_session_sample(session, &s, &token), SAGE_ERR_ARGUMENT);
        CHECK_EQ(sage_session_generate(session, &s, &token, 1), SAGE_ERR_ARGUMENT);
    }
    CHECK_EQ(sage_session_sample(session, nullptr, &token), SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_session_sample(session, &sampling, nullptr), SAGE_ERR_ARGUMENT);
    sampling.temperature = 0.0f;  // greedy is allowed
    CHECK_EQ(sage_session_sample(session, &sampling, &token), SAGE_OK);

    const int32_t bad_programs[] = {128, -2};
    for (int32_t program : bad_programs) {
        CHECK_EQ(sage_session_set_programs(session, &program, 1), SAGE_ERR_ARGUMENT);
        CHECK(std::strstr(sage_last_error(), "program") != nullptr);
    }
    CHECK_EQ(sage_session_set_programs(session, nullptr, 1), SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_session_set_programs(session, nullptr, 0), SAGE_OK);

    size_t count = 0;
    CHECK_EQ(sage_session_pop_events(session, nullptr, 4, &count), SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_session_pop_events(session, nullptr, 0, &count), SAGE_OK);
    CHECK_EQ(sage_session_get_memory(session, nullptr), SAGE_ERR_ARGUMENT);
    sage_session* other = nullptr;
    CHECK_EQ(sage_session_create(nullptr, nullptr, &other), SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_model_load(nullptr, nullptr), SAGE_ERR_ARGUMENT);
    sage_session_free(session);
    sage_model_free(model);
}

// ---- broken files ----------------------------------------------------------------------

sage_status load_bytes(const std::vector<uint8_t>& bytes, std::string* message = nullptr) {
    try {
        sage::Model::from_bytes(bytes.data(), bytes.size());
        return SAGE_OK;
    } catch (const sage::Error& e) {
        if (message) *message = e.what();
        return static_cast<sage_status>(e.status());
    }
}

void fix_checksum(std::vector<uint8_t>& bytes) {
    const uint32_t crc = sage::crc32(bytes.data(), bytes.size() - 4);
    std::memcpy(&bytes[bytes.size() - 4], &crc, 4);
}

TEST(null_pointers_to_queries_are_argument_errors) {
    const std::string path = fixture_models().front();
    sage_model* model = load_or_die(path);
    sage_session* session = new_session(model);
    uint64_t count = 0;
    double bpm = 0;
    int32_t id = 0;
    sage_bar bar;
    const char* json = nullptr;
    size_t size = 0;
    CHECK_EQ(sage_session_get_position(nullptr, &count), SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_session_get_position(session, nullptr), SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_session_get_tempo(nullptr, &bpm), SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_session_get_bar(nullptr, &bar), SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_session_get_dropped_events(nullptr, &count), SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_session_get_dropped_events(session, nullptr), SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_model_find_kind(nullptr, SAGE_KIND_BOS, &id), SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_model_find_kind(model, SAGE_KIND_BOS, nullptr), SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_model_get_metadata(nullptr, &json, &size), SAGE_ERR_ARGUMENT);
    CHECK(std::strstr(sage_last_error(), "model is null") != nullptr);
    CHECK_EQ(sage_model_get_metadata(model, &json, &size), SAGE_OK);
    sage_memory planned, actual;
    CHECK_EQ(sage_model_get_session_memory(nullptr, nullptr, &planned), SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_model_get_session_memory(model, nullptr, &planned), SAGE_OK);
    CHECK_EQ(sage_session_get_memory(session, &actual), SAGE_OK);
    CHECK_EQ(planned.total_bytes, actual.total_bytes);
    CHECK_EQ(planned.kv_bytes, actual.kv_bytes);
    CHECK(size > 2 && json[0] == '{' && json[size - 1] == '}');
    const ModelInfo m = info_of(model);
    std::vector<uint8_t> mask(m.info.vocab_size);
    CHECK_EQ(sage_session_allowed_next(session, mask.data(), mask.size() - 1), SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_session_allowed_next(session, mask.data(), mask.size()), SAGE_OK);
    CHECK_EQ(mask[static_cast<size_t>(find_kind(model, SAGE_KIND_BOS))], 1);  // a piece starts
    sage_session_free(session);
    sage_model_free(model);
}

TEST(front_end_checks_name_the_value_and_its_range) {
    sage_sampling sampling = sage_sampling_default();
    CHECK_EQ(sage_sampling_check(&sampling), SAGE_OK);
    sampling.top_p = 0.0f;
    CHECK_EQ(sage_sampling_check(&sampling), SAGE_ERR_ARGUMENT);
    CHECK(std::strstr(sage_last_error(), "top_p must be in (0, 1]") != nullptr);
    CHECK_EQ(sage_sampling_check(nullptr), SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_tempo_check(SAGE_TEMPO_MIN_BPM), SAGE_OK);
    CHECK_EQ(sage_tempo_check(SAGE_TEMPO_MAX_BPM), SAGE_OK);
    CHECK_EQ(sage_tempo_check(3.5), SAGE_ERR_ARGUMENT);
    CHECK(std::strstr(sage_last_error(), "3.57628..1000") != nullptr);
    CHECK_EQ(sage_tempo_check(NAN), SAGE_ERR_ARGUMENT);
    CHECK(std::strcmp(sage_status_string(SAGE_ERR_INTERNAL), "internal error") == 0);
    CHECK(std::strcmp(sage_quant_name(SAGE_QUANT_Q8_0), "q8_0") == 0);
    CHECK(std::strcmp(sage_attention_name(SAGE_ATTENTION_ASKV), "askv") == 0);
    CHECK(std::strcmp(sage_quant_name(1), "unknown") == 0);  // 1 was f16
    uint32_t kv = 7;
    CHECK_EQ(sage_kv_memory_parse("int8", &kv), SAGE_OK);
    CHECK_EQ(kv, uint32_t{SAGE_KV_INT8});
    CHECK(std::strcmp(sage_kv_memory_name(kv), "int8") == 0);
    CHECK_EQ(sage_kv_memory_parse("f16", &kv), SAGE_ERR_ARGUMENT);
    CHECK(std::strstr(sage_last_error(), "kv memory must be f32 or int8, not 'f16'") != nullptr);
    CHECK_EQ(kv, uint32_t{SAGE_KV_INT8});  // unchanged
    CHECK_EQ(sage_kv_memory_parse(nullptr, &kv), SAGE_ERR_ARGUMENT);
}

TEST(broken_files_give_format_errors) {
    const auto good = read_file(fixture_models().back());
    std::string message;
    CHECK_EQ(load_bytes(good), SAGE_OK);

    sage_model* model = nullptr;
    CHECK_EQ(sage_model_load("/nonexistent/model.sage", &model), SAGE_ERR_IO);
    CHECK(model == nullptr);

    auto bad = good;
    bad[0] = 'X';
    CHECK_EQ(load_bytes(bad, &message), SAGE_ERR_FORMAT);
    CHECK(message.find("magic") != std::string::npos);

    bad = good;
    bad[8] = 2;  // version 2
    fix_checksum(bad);
    CHECK_EQ(load_bytes(bad, &message), SAGE_ERR_FORMAT);
    CHECK(message.find("newer") != std::string::npos);

    bad = good;
    bad[good.size() / 2] ^= 0x10;  // a flipped bit in the tensor data
    CHECK_EQ(load_bytes(bad, &message), SAGE_ERR_FORMAT);
    CHECK(message.find("checksum") != std::string::npos);

    // Every truncation is refused.
    for (size_t n = 0; n < good.size(); n += 1 + n / 8) {
        const std::vector<uint8_t> cut(good.begin(), good.begin() + n);
        CHECK_EQ(load_bytes(cut), SAGE_ERR_FORMAT);
    }

    // Header bytes changed (checksum fixed, so the field checks run) are refused or, where the
    // change is harmless (metadata text, a spare vocabulary value), accepted: never a crash.
    // Every byte of the fixed fields and the tensor table, every 29th of vocabulary and metadata;
    // the low bit of even bytes, the high bit of odd ones.
    uint32_t header_size, n_layers, vocab_size, metadata_bytes;
    std::memcpy(&header_size, &good[12], 4);
    std::memcpy(&vocab_size, &good[32], 4);
    std::memcpy(&n_layers, &good[36], 4);
    const size_t vocabulary = 96 + 4 * size_t{n_layers};
    const size_t metadata = vocabulary + 12 * size_t{vocab_size};
    std::memcpy(&metadata_bytes, &good[metadata], 4);
    const size_t table = metadata + 4 + metadata_bytes;
    size_t refused = 0;
    for (size_t i = 8; i < header_size; i += (i >= vocabulary + 24 && i < table) ? 29 : 1) {
        bad = good;
        bad[i] ^= i % 2 == 0 ? 0x01 : 0x80;
        fix_checksum(bad);
        const sage_status status = load_bytes(bad);
        CHECK(status == SAGE_OK || status == SAGE_ERR_FORMAT);
        refused += status == SAGE_ERR_FORMAT;
    }
    CHECK(refused > 0);
}

// ---- bar-counted generation (sage_session_generate_bars) ------------------------------------

struct TokenMeaning {
    uint32_t kind;
    int32_t a, b;
};

TokenMeaning meaning(const sage_model* model, int32_t token) {
    TokenMeaning m{};
    CHECK_EQ(sage_model_get_token(model, token, nullptr, &m.kind, &m.a, &m.b), SAGE_OK);
    return m;
}

// A session fed BOS, seeded.
sage_session* started_session(const sage_model* model, uint64_t seed) {
    sage_session* session = new_session(model, seed);
    const int32_t bos = find_kind(model, SAGE_KIND_BOS);
    CHECK_EQ(sage_session_feed(session, &bos, 1, nullptr, 0), SAGE_OK);
    return session;
}

struct BarsRun {
    std::vector<int32_t> tokens;
    std::vector<sage_stop_reason> reasons;  // one per call
    sage_bar_stop stop;
    int32_t pending;  // the token sampled after the last call
};

// Generates `stop` from BOS in calls of at most `capacity` tokens until a reason other than
// SAGE_STOP_BAR_LINE or SAGE_STOP_CAPACITY.
BarsRun generate_bars(const sage_model* model, uint64_t seed, sage_bar_stop stop, size_t capacity) {
    sage_session* session = started_session(model, seed);
    const sage_sampling sampling = sage_sampling_default();
    BarsRun run{{}, {}, stop, -1};
    std::vector<int32_t> buffer(capacity);
    for (;;) {
        size_t count = 0;
        sage_stop_reason reason = SAGE_STOP_CAPACITY;
        CHECK_EQ(sage_session_generate_bars(session, &sampling, &run.stop, buffer.data(), capacity,
                                            &count, &reason),
                 SAGE_OK);
        run.tokens.insert(run.tokens.end(), buffer.begin(), buffer.begin() + count);
        run.reasons.push_back(reason);
        if (reason != SAGE_STOP_BAR_LINE && reason != SAGE_STOP_CAPACITY) break;
    }
    CHECK_EQ(sage_session_sample(session, &sampling, &run.pending), SAGE_OK);
    CHECK_EQ(position_of(session), uint64_t(1 + run.tokens.size()));  // the pending one not fed
    sage_session_free(session);
    return run;
}

sage_bar_stop bar_stop(uint64_t bars) {
    sage_bar_stop stop{};
    stop.bars = bars;
    return stop;
}

// The bar loop samples exactly what plain generation samples, stops before the Bar that opens
// bar N + 1 (left pending), and gives the same tokens in one call, a bar per call or a few tokens
// per call.
TEST(generate_bars_stops_before_the_next_bar_whatever_the_calls) {
    for (const auto& path : fixture_models()) {
        sage_model* model = load_or_die(path);
        for (uint64_t seed : {1u, 7u}) {
            for (uint64_t bars : {1u, 3u}) {
                const BarsRun one = generate_bars(model, seed, bar_stop(bars), 1 << 16);
                CHECK(one.reasons == std::vector<sage_stop_reason>{SAGE_STOP_BARS});
                CHECK_EQ(one.stop.opened, bars);
                CHECK_EQ(one.stop.generated, uint64_t(one.tokens.size()));
                CHECK_EQ(meaning(model, one.pending).kind, uint32_t{SAGE_KIND_BAR});
                uint64_t signatures = 0, bar_tokens = 0;
                for (int32_t t : one.tokens) {
                    signatures += meaning(model, t).kind == SAGE_KIND_TIMESIG;
                    bar_tokens += meaning(model, t).kind == SAGE_KIND_BAR;
                }
                CHECK_EQ(signatures, bars);
                CHECK_EQ(bar_tokens, bars);

                // Plain generation with the seed: these tokens, then the pending Bar.
                sage_session* plain = started_session(model, seed);
                const sage_sampling sampling = sage_sampling_default();
                std::vector<int32_t> expected(one.tokens.size() + 1);
                CHECK_EQ(sage_session_generate(plain, &sampling, expected.data(), expected.size()),
                         SAGE_OK);
                sage_session_free(plain);
                CHECK(std::equal(one.tokens.begin(), one.tokens.end(), expected.begin()));
                CHECK_EQ(expected.back(), one.pending);

                sage_bar_stop each = bar_stop(bars);
                each.each_bar = 1;
                const BarsRun per_bar = generate_bars(model, seed, each, 1 << 16);
                CHECK(per_bar.tokens == one.tokens);
                CHECK_EQ(per_bar.reasons.size(), size_t(bars));  // bars - 1 bar lines, then done
                CHECK_EQ(per_bar.reasons.back(), SAGE_STOP_BARS);
                const BarsRun few = generate_bars(model, seed, bar_stop(bars), 7);
                CHECK(few.tokens == one.tokens);
                CHECK_EQ(few.reasons.size(), one.tokens.size() / 7 + 1);
                CHECK_EQ(few.stop.end, one.stop.end);
            }
        }
        sage_model_free(model);
    }
}

// A token bar in meter_quarters/4 counts as meter_bars notated bars: asking for one of them stops
// at the first Position at or past its end (or the next Bar), asking for both at the next Bar.
TEST(generate_bars_counts_notated_bars_of_a_mapped_meter) {
    for (const auto& path : fixture_models()) {
        sage_model* model = load_or_die(path);
        sage_model_info info{};
        CHECK_EQ(sage_model_get_info(model, &info), SAGE_OK);
        size_t time_stops = 0;
        for (uint64_t seed = 1; seed <= 12; ++seed) {
            const BarsRun plain = generate_bars(model, seed, bar_stop(1), 1 << 16);
            const TokenMeaning signature = meaning(model, plain.tokens[1]);  // Bar, TimeSig, ...
            CHECK_EQ(signature.kind, uint32_t{SAGE_KIND_TIMESIG});
            if (signature.b != 4 || signature.a < 2) continue;
            sage_bar_stop half = bar_stop(1);
            half.meter_quarters = signature.a;
            half.meter_bars = 2;
            const BarsRun first = generate_bars(model, seed, half, 1 << 16);
            const double end = signature.a / 2.0;  // the bar starts at 0
            CHECK_EQ(first.stop.end, end);
            CHECK_EQ(first.stop.opened, uint64_t{1});
            CHECK(std::equal(first.tokens.begin(), first.tokens.end(), plain.tokens.begin()));
            for (int32_t t : first.tokens) {
                const TokenMeaning m = meaning(model, t);
                if (m.kind == SAGE_KIND_POSITION) CHECK(m.a < end * info.ticks_per_quarter);
            }
            const TokenMeaning next = meaning(model, first.pending);
            if (first.reasons.back() == SAGE_STOP_TIME) {
                ++time_stops;
                CHECK_EQ(next.kind, uint32_t{SAGE_KIND_POSITION});
                CHECK(next.a >= end * info.ticks_per_quarter);
                CHECK(first.tokens.size() < plain.tokens.size());
            } else {
                CHECK_EQ(first.reasons.back(), SAGE_STOP_BARS);
                CHECK(first.tokens == plain.tokens);
            }
            sage_bar_stop both = half;
            both.bars = 2;
            const BarsRun whole = generate_bars(model, seed, both, 1 << 16);
            CHECK(whole.tokens == plain.tokens);  // one token bar, two notated bars
            CHECK_EQ(whole.stop.opened, uint64_t{2});
            CHECK_EQ(whole.stop.end, double(signature.a));
            CHECK_EQ(whole.reasons.back(), SAGE_STOP_BARS);
        }
        CHECK(time_stops > 0);  // the rule was exercised, not only the Bar stop
        sage_model_free(model);
    }
}

// The token cap counts the tokens of the whole generation, carried in the progress fields.
TEST(generate_bars_stops_at_the_token_cap) {
    sage_model* model = load_or_die(fixture_models().back());
    sage_bar_stop stop = bar_stop(3);
    const uint64_t cap = SAGE_MAX_TOKENS_PER_BAR * (3 + 1);
    stop.generated = cap - 5;  // as if a model had looped for that long without closing a bar
    const BarsRun run = generate_bars(model, 3, stop, 1 << 16);
    CHECK(run.reasons == std::vector<sage_stop_reason>{SAGE_STOP_MAX_TOKENS});
    CHECK_EQ(run.tokens.size(), size_t{5});
    CHECK_EQ(run.stop.generated, cap);
    sage_model_free(model);
}

// Where the grammar allows EOS, the loop feeds it and stops: the piece ended.
TEST(generate_bars_stops_after_eos) {
    const std::string path = fixture_models().back();
    auto model = sage::Model::load(path);
    const int32_t bos = first_of_kind(path, sage::Kind::Bos);
    sage::SamplingParams hot;
    hot.temperature = 4.0f;  // near uniform over the allowed tokens: EOS comes soon
    hot.top_p = 1.0f;
    size_t ended = 0;
    for (uint64_t seed = 1; seed <= 5; ++seed) {
        sage::SessionOptions options;
        options.seed = seed;
        sage::Session session(*model, options, sage::kernels::active());
        session.set_allow_eos(true);
        session.feed(&bos, 1, nullptr, false);
        sage::BarStop stop;
        stop.bars = 1000;
        std::vector<int32_t> tokens(1 << 16);
        sage::StopReason reason = sage::StopReason::Capacity;
        const size_t n = session.generate_bars(hot, stop, tokens.data(), tokens.size(), &reason);
        if (reason != sage::StopReason::End) continue;
        ++ended;
        CHECK(n > 0);
        CHECK(model->vocab[tokens[n - 1]].kind == sage::Kind::Eos);
        CHECK_EQ(session.position(), uint64_t(1 + n));  // EOS was fed
        for (size_t i = 0; i + 1 < n; ++i) CHECK(model->vocab[tokens[i]].kind != sage::Kind::Eos);
    }
    CHECK(ended > 0);
}

// The next token, once sampled, stays until something is fed: sampling again returns it.
TEST(sampling_again_without_feeding_returns_the_pending_token) {
    sage_model* model = load_or_die(fixture_models().back());
    sage_session* session = started_session(model, 11);
    sage_sampling sampling = sage_sampling_default();
    std::vector<int32_t> reference(40);
    {
        sage_session* plain = started_session(model, 11);
        CHECK_EQ(sage_session_generate(plain, &sampling, reference.data(), reference.size()),
                 SAGE_OK);
        sage_session_free(plain);
    }
    for (int32_t expected : reference) {
        int32_t first = -1, again = -1;
        CHECK_EQ(sage_session_sample(session, &sampling, &first), SAGE_OK);
        sampling.temperature = sampling.temperature == 1.0f ? 0.0f : 1.0f;  // values don't matter
        CHECK_EQ(sage_session_sample(session, &sampling, &again), SAGE_OK);
        sampling = sage_sampling_default();
        CHECK_EQ(first, expected);
        CHECK_EQ(again, expected);
        CHECK_EQ(sage_session_feed(session, &first, 1, nullptr, 0), SAGE_OK);
    }
    sage_session_free(session);
    sage_model_free(model);
}

// Every argument is checked before anything is generated; a refused call changes nothing.
TEST(generate_bars_checks_its_arguments) {
    sage_model* model = load_or_die(fixture_models().back());
    sage_session* session = started_session(model, 1);
    const sage_sampling sampling = sage_sampling_default();
    int32_t tokens[8];
    size_t count = 99;
    sage_stop_reason reason = SAGE_STOP_CAPACITY;
    auto refused = [&](sage_bar_stop stop, const char* words) {
        const sage_bar_stop before = stop;
        CHECK_EQ(sage_session_generate_bars(session, &sampling, &stop, tokens, 8, &count, &reason),
                 SAGE_ERR_ARGUMENT);
        CHECK(std::strstr(sage_last_error(), words) != nullptr);
        CHECK_EQ(stop.generated, before.generated);
    };
    refused(bar_stop(0), "bars must be in 1..4294967295, not 0");
    refused(bar_stop(uint64_t{1} << 32), "bars must be in 1..");
    sage_bar_stop stop = bar_stop(2);
    stop.meter_bars = -1;
    refused(stop, "meter_bars must be >= 0");
    stop.meter_bars = 2;
    refused(stop, "meter_quarters must be >= 1");
    stop = bar_stop(2);
    stop.opened = 3;
    refused(stop, "opened (3) must be <= bars (2)");
    stop = bar_stop(2);
    stop.end = std::nan("");
    refused(stop, "end must be a finite number >= 0");
    stop = bar_stop(2);
    sage_sampling hot = sampling;
    hot.top_p = 0.0f;
    CHECK_EQ(sage_session_generate_bars(session, &hot, &stop, tokens, 8, &count, &reason),
             SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_session_generate_bars(session, &sampling, &stop, nullptr, 8, &count, &reason),
             SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_session_generate_bars(nullptr, &sampling, &stop, tokens, 8, &count, &reason),
             SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_session_generate_bars(session, nullptr, &stop, tokens, 8, &count, &reason),
             SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_session_generate_bars(session, &sampling, nullptr, tokens, 8, &count, &reason),
             SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_session_generate_bars(session, &sampling, &stop, tokens, 8, nullptr, &reason),
             SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_session_generate_bars(session, &sampling, &stop, tokens, 8, &count, nullptr),
             SAGE_ERR_ARGUMENT);
    CHECK_EQ(count, size_t{99});
    CHECK_EQ(position_of(session), uint64_t{1});  // nothing was generated
    sage_session_free(session);
    sage_model_free(model);
}

}  // namespace

SAGE_TEST_MAIN()
