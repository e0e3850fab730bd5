// sage-edge-bench-decode MODEL [--positions 128,1024,4096] [--steps N] [--block N] [--split-at N]
//                        [--kv-memory f32|int8]
//
// The forward pass of one model on the active kernel path (SAGE_EDGE_KERNEL forces one), on one
// thread (the engine has no other):
//   - decode: median microseconds of feeding one token (logits included, sampling not) after
//     `position` tokens, for each position, and its ratio to the first position's (a step should
//     cost the same at every position past the longest horizon);
//   - prefill: median tokens per second of feeding a block of --block tokens to a fresh session,
//     and its ratio to decode tokens per second at the first position (with the median CPU time
//     of the process, which other jobs on a shared host do not inflate);
//   - the split of a decode step at --split-at past tokens: the matrix products (quantizing their
//     inputs included), the attention, and the rest (norms, SwiGLU, residuals, embedding), the
//     first two timed alone over the model's own matrices and windows, the rest by difference.
// A program that prints numbers, not a test.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "engine/model_file.h"
#include "engine/session.h"

namespace k = sage::kernels;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
    return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    return v[v.size() / 2];
}

std::vector<int32_t> random_tokens(size_t n, int vocab, uint64_t seed) {
    std::vector<int32_t> t(n);
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (auto& id : t) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        id = static_cast<int32_t>(s % static_cast<uint64_t>(vocab));
    }
    return t;
}

std::vector<int64_t> parse_list(const char* s) {
    std::vector<int64_t> out;
    for (const char* p = s; *p;) {
        char* end = nullptr;
        out.push_back(std::strtoll(p, &end, 10));
        p = *end == ',' ? end + 1 : end;
        if (end == p && *p) break;
    }
    return out;
}

// Median seconds of fn over `reps` calls.
template <typename Fn>
double median_time(Fn&& fn, int reps) {
    std::vector<double> t;
    fn();  // warm up
    for (int i = 0; i < reps; ++i) {
        const auto t0 = Clock::now();
        fn();
        t.push_back(seconds_since(t0));
    }
    return median(t);
}

// The matrix products of one decode step, as the session runs them: per layer q, k, v (family 0's
// rows), o, w1, w3, w2, then the output; each input quantized first; from the packed rows where
// the path packs them (a session of the model exists by then).
struct StepProducts {
    const sage::Model& model;
    const k::KernelTable& kernels;
    std::vector<float> x, y;
    std::vector<k::BlockQ8_0> xq;

    StepProducts(const sage::Model& m, const k::KernelTable& t) : model(m), kernels(t) {
        const auto& c = m.config;
        const size_t widest = std::max({c.d_model, c.d_ff, c.n_heads * c.d_head, c.vocab_size});
        x.assign(widest, 0.5f);
        y.assign(widest, 0.0f);
        xq.resize(k::blocks_per_row(static_cast<int64_t>(widest)));
    }

    void product(const sage::Matrix& w, int64_t rows, bool quantize) {
        if (quantize) kernels.quantize_row_q8_0(x.data(), xq.data(), w.cols);
        if (kernels.matmul_q8_0_panels != nullptr && w.panels != nullptr) {  // packed, as run
            kernels.matmul_q8_0_panels(w.panels, xq.data(), y.data(), rows, w.cols, 1, rows);
            return;
        }
        if (kernels.matmul_q4_panels != nullptr && w.panels_q4 != nullptr) {
            kernels.matmul_q4_panels(w.panels_q4, xq.data(), y.data(), rows, w.cols, 1, rows);
            return;
        }
        switch (w.dtype) {
            case sage::DType::Q8_0:
                kernels.matvec_q8_0(static_cast<const k::BlockQ8_0*>(w.data), xq.data(), y.data(),
                                    rows, w.cols);
                break;
            case sage::DType::Q4:
                kernels.matvec_q4(static_cast<const k::BlockQ4*>(w.data), xq.data(), y.data(), rows,
                                  w.cols);
                break;
            default:
                kernels.matvec_f32(static_cast<const float*>(w.data), x.data(), y.data(), rows,
                                   w.cols);
                break;
        }
    }

    void run() {
        const auto& c = model.config;
        const bool q = model.quant != sage::DType::F32;
        const int64_t kvd = int64_t{c.n_kv_heads} * c.d_head;
        for (const auto& l : model.weights.layers) {
            product(l.wq, l.wq.rows, q);
            product(l.wk, kvd, false);
            product(l.wv, kvd, false);
            product(l.wo, l.wo.rows, q);
            product(l.w1, l.w1.rows, q);
            product(l.w3, l.w3.rows, false);
            product(l.w2, l.w2.rows, q);
        }
        product(model.weights.output, model.weights.output.rows, q);
    }
};

// The attention of one decode step at `past` tokens: every layer's window, every group.
struct StepAttention {
    const sage::Model& model;
    const k::KernelTable& kernels;
    std::vector<std::vector<float>> keys, values, scales;
    std::vector<std::vector<int8_t>> keys_q8, values_q8;
    std::vector<float> q, scores, out;
    std::vector<uint8_t> weights;
    int64_t past;
    bool int8;

    StepAttention(const sage::Model& m, const k::KernelTable& t, int64_t past_, bool int8_)
        : model(m), kernels(t), past(past_), int8(int8_) {
        const auto& c = m.config;
        const int64_t kvd = int64_t{c.n_kv_heads} * c.d_head;
        for (uint32_t h : m.horizons) {
            keys.emplace_back(size_t(h * kvd), 0.01f);
            values.emplace_back(size_t(h * kvd), 0.02f);
            keys_q8.emplace_back(size_t(h * kvd), int8_t{3});
            values_q8.emplace_back(size_t((h + 3) / 4 * 4 * kvd), int8_t{5});
            scales.emplace_back(size_t(h * c.n_kv_heads), 0.004f);
        }
        q.assign(size_t(c.n_heads) * c.d_head, 0.1f);
        out.assign(q.size(), 0.0f);
        const uint32_t longest = *std::max_element(m.horizons.begin(), m.horizons.end());
        scores.assign(size_t(c.n_heads / c.n_kv_heads) * longest, 0.0f);
        weights.assign(size_t(k::attention_weights_bytes(c.n_heads / c.n_kv_heads, longest)), 0);
    }

    void run() {
        const auto& c = model.config;
        const int hpg = c.n_heads / c.n_kv_heads;
        const int64_t kvd = int64_t{c.n_kv_heads} * c.d_head;
        for (size_t l = 0; l < model.horizons.size(); ++l) {
            const int64_t h = model.horizons[l];
            const int64_t window = std::min<int64_t>(past + 1, h);
            for (int g = 0; g < c.n_kv_heads; ++g) {
                k::AttentionGroup a{};
                a.q = q.data() + g * hpg * c.d_head;
                a.keys = keys[l].data() + g * c.d_head * h;
                a.values = values[l].data() + g * c.d_head;
                a.keys_q8 = keys_q8[l].data() + g * k::key_quads(c.d_head) * 4 * h;
                a.values_q8 = values_q8[l].data() + g * c.d_head * 4;
                a.key_scales = a.value_scales = scales[l].data() + g * h;
                a.value_stride = kvd;
                a.horizon = h;
                a.first_slot = (past + 1 - window) % h;
                a.window = window;
                a.slopes = model.weights.alibi_slopes + g * hpg;
                a.scale = 1.0f / std::sqrt(float(c.d_head));
                a.heads = hpg;
                a.d_head = c.d_head;
                a.scores = scores.data();
                a.weights = weights.data();
                a.out = out.data() + g * hpg * c.d_head;
                if (int8)
                    kernels.attend_group_q8(a);
                else
                    kernels.attend_group(a);
            }
        }
    }
};

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2 || argv[1][0] == '-') {
        std::fprintf(stderr,
                     "usage: sage-edge-bench-decode MODEL [--positions 128,1024,4096] [--steps N] "
                     "[--block N] [--split-at N] [--kv-memory f32|int8]\n");
        return 2;
    }
    std::vector<int64_t> positions = {128, 1024, 4096};
    int steps = 200;
    int64_t block = 256, split_at = 1024;
    sage::SessionOptions options;
    for (int i = 2; i + 1 < argc; i += 2) {
        const std::string flag = argv[i];
        if (flag == "--positions")
            positions = parse_list(argv[i + 1]);
        else if (flag == "--steps")
            steps = std::atoi(argv[i + 1]);
        else if (flag == "--block")
            block = std::atoll(argv[i + 1]);
        else if (flag == "--split-at")
            split_at = std::atoll(argv[i + 1]);
        else if (flag == "--kv-memory" && std::strcmp(argv[i + 1], "f32") == 0)
            options.kv_memory = sage::KvMemory::F32;
        else if (flag == "--kv-memory" && std::strcmp(argv[i + 1], "int8") == 0)
            options.kv_memory = sage::KvMemory::Int8;
        else {
            std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
            return 2;
        }
    }
    if (k::select_error() != nullptr) {
        std::fprintf(stderr, "%s\n", k::select_error());
        return 2;
    }
    const k::KernelTable& kernels = k::active();
    auto model = sage::Model::load(argv[1]);
    const auto& c = model->config;
    std::printf("model %s: d %d, layers %d, heads %d/%d x %d, d_ff %d, vocab %d\n", argv[1],
                c.d_model, c.n_layers, c.n_heads, c.n_kv_heads, c.d_head, c.d_ff, c.vocab_size);
    std::printf("kernel %s (cpu: %s)\n", kernels.name, k::cpu_features());

    const bool int8 = options.kv_memory == sage::KvMemory::Int8;
    std::printf("kv memory %s: %.3f MB per session, %.3f MB of it the rings\n",
                int8 ? "int8" : "f32",
                sage::Session::planned_memory(*model, options).total_bytes / 1e6,
                sage::Session::planned_memory(*model, options).kv_bytes / 1e6);
    sage::Session session(*model, options, kernels);
    if (model->packed_bytes() > 0)
        std::printf("weights packed for the panel products: %.3f MB (the model's, once)\n",
                    model->packed_bytes() / 1e6);
    std::vector<float> logits(c.vocab_size);
    const int64_t longest = *std::max_element(positions.begin(), positions.end());
    const auto filler =
        random_tokens(size_t(std::max({longest, block, split_at})) + 1, c.vocab_size, 1);
    const auto next = random_tokens(size_t(steps) + 1, c.vocab_size, 2);

    auto decode_us = [&](int64_t position) {
        session.reset();
        session.feed(filler.data(), size_t(position), nullptr, false);
        std::vector<double> t;
        for (int i = 0; i < steps; ++i) {
            const auto t0 = Clock::now();
            session.feed(&next[i], 1, logits.data(), false);
            t.push_back(seconds_since(t0));
        }
        return median(t) * 1e6;
    };
    double first_decode_us = 0.0;
    for (int64_t p : positions) {
        const double us = decode_us(p);
        if (first_decode_us == 0.0) first_decode_us = us;
        std::printf("decode at %6lld past tokens: %8.1f us/token (%7.0f tokens/s), %.2fx at %lld\n",
                    (long long)p, us, 1e6 / us, us / first_decode_us, (long long)positions.front());
    }

    // The prefill's CPU time too: on a shared host the wall time counts other jobs' turns.
    std::vector<double> prefill_cpu;
    const double prefill_s = median_time(
        [&] {
            session.reset();
            const std::clock_t c0 = std::clock();
            session.feed(filler.data(), size_t(block), logits.data(), false);
            prefill_cpu.push_back(double(std::clock() - c0) / CLOCKS_PER_SEC);
        },
        std::max(5, steps / 20));
    const double prefill_tps = double(block) / prefill_s;
    std::printf(
        "prefill of %lld tokens: %.2f ms (CPU time %.2f ms), %.0f tokens/s = %.1fx decode "
        "at %lld\n",
        (long long)block, prefill_s * 1e3, median(prefill_cpu) * 1e3, prefill_tps,
        prefill_tps * first_decode_us / 1e6, (long long)positions.front());

    StepProducts products(*model, kernels);
    StepAttention attention(*model, kernels, split_at, int8);
    const double step_us = decode_us(split_at);
    const double products_us = median_time([&] { products.run(); }, steps) * 1e6;
    const double attention_us = median_time([&] { attention.run(); }, steps) * 1e6;
    const double rest_us = step_us - products_us - attention_us;
    std::printf(
        "decode step at %lld past tokens: %.1f us = matrix products %.1f (%.0f%%) + attention "
        "%.1f (%.0f%%) + the rest %.1f (%.0f%%)\n",
        (long long)split_at, step_us, products_us, 100 * products_us / step_us, attention_us,
        100 * attention_us / step_us, rest_us, 100 * rest_us / step_us);
    return 0;
}
