// sage-edge-bench-kernels [--json] [--bw-mb N] [--seconds S]
//
// For every kernel path this CPU runs: matrix-vector GMAC/s (rows x cols multiply-adds per call)
// for q8_0, q4 and f32 weights over the engine's typical shapes, matrix-matrix GMAC/s of q8_0
// and q4 weights against a block of 64 tokens (q8x64, q4x64: a prefill), then the memory read
// bandwidth (sum over a buffer much larger than the last-level cache, best of several passes).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels.h"

namespace k = sage::kernels;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
    return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Calls fn repeatedly for about `budget` seconds; returns the best per-call time of 5 batches.
template <typename Fn>
double time_call(Fn&& fn, double budget) {
    fn();  // warm up
    int reps = 1;
    for (;;) {  // find a batch size that takes ~budget / 5
        const auto t0 = Clock::now();
        for (int i = 0; i < reps; ++i) fn();
        const double t = seconds_since(t0);
        if (t > budget / 5 || reps > (1 << 24)) break;
        reps *= 2;
    }
    double best = 1e30;
    for (int batch = 0; batch < 5; ++batch) {
        const auto t0 = Clock::now();
        for (int i = 0; i < reps; ++i) fn();
        const double t = seconds_since(t0) / reps;
        if (t < best) best = t;
    }
    return best;
}

constexpr int64_t kGemmTokens = 64;  // tokens of the matmul_q8_0 and matmul_q4 rows ("q8x64")

struct Shape {
    int64_t rows, cols;
};

volatile float g_sink;  // keeps results alive

double read_bandwidth_gbs(size_t megabytes) {
    const size_t n = megabytes * (size_t{1} << 20) / sizeof(uint64_t);
    std::vector<uint64_t> buf(n);
    for (size_t i = 0; i < n; ++i) buf[i] = i;  // touch every page
    double best = 1e30;
    uint64_t total = 0;
    for (int pass = 0; pass < 5; ++pass) {
        const auto t0 = Clock::now();
        uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (size_t i = 0; i + 4 <= n; i += 4) {
            s0 += buf[i], s1 += buf[i + 1], s2 += buf[i + 2], s3 += buf[i + 3];
        }
        const double t = seconds_since(t0);
        total += s0 + s1 + s2 + s3;
        if (t < best) best = t;
    }
    g_sink = static_cast<float>(total);
    return static_cast<double>(n * sizeof(uint64_t)) / best / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
    bool json = false;
    size_t bw_mb = 256;
    double budget = 0.1;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (std::strcmp(argv[i], "--bw-mb") == 0 && i + 1 < argc) {
            bw_mb = std::strtoull(argv[++i], nullptr, 10);
        } else if (std::strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
            budget = std::strtod(argv[++i], nullptr);
        } else {
            std::fprintf(stderr, "usage: %s [--json] [--bw-mb N] [--seconds S]\n", argv[0]);
            return 2;
        }
    }

    const Shape shapes[] = {{256, 256}, {1024, 256}, {256, 1024}, {512, 256}};
    const k::KernelTable* paths[16];
    const int n_paths = k::available(paths, 16);

    struct Row {
        std::string path, kernel;
        Shape shape;
        double gmacs;
    };
    std::vector<Row> results;
    for (int p = 0; p < n_paths; ++p) {
        const k::KernelTable& t = *paths[p];
        for (const Shape& s : shapes) {
            const int64_t nb = k::blocks_per_row(s.cols);
            std::vector<float> wf(static_cast<size_t>(s.rows * s.cols)), xf(s.cols), y(s.rows);
            for (size_t i = 0; i < wf.size(); ++i)
                wf[i] = static_cast<float>((i * 7919) % 255) - 127;
            for (size_t i = 0; i < xf.size(); ++i) xf[i] = static_cast<float>((i * 31) % 17) - 8;
            std::vector<k::BlockQ8_0> w8(static_cast<size_t>(s.rows * nb)), x8(nb);
            std::vector<k::BlockQ4> w4(static_cast<size_t>(s.rows * nb));
            for (int64_t r = 0; r < s.rows; ++r)
                t.quantize_row_q8_0(wf.data() + r * s.cols, w8.data() + r * nb, s.cols);
            t.quantize_row_q8_0(xf.data(), x8.data(), s.cols);
            for (size_t i = 0; i < w4.size(); ++i) {
                w4[i].scale = 0.01f;
                for (int j = 0; j < k::kBlockSize / 2; ++j)
                    w4[i].q[j] = static_cast<uint8_t>((i * 13 + j * 5) & 0xFF);
            }
            const double macs = static_cast<double>(s.rows * s.cols);
            const double t8 = time_call(
                [&] { t.matvec_q8_0(w8.data(), x8.data(), y.data(), s.rows, s.cols); }, budget);
            const double t4 = time_call(
                [&] { t.matvec_q4(w4.data(), x8.data(), y.data(), s.rows, s.cols); }, budget);
            const double tf = time_call(
                [&] { t.matvec_f32(wf.data(), xf.data(), y.data(), s.rows, s.cols); }, budget);
            // matmul_q8_0 and matmul_q4 over a prefill block of kGemmTokens tokens.
            std::vector<k::BlockQ8_0> xs(static_cast<size_t>(kGemmTokens * nb));
            for (int64_t i = 0; i < kGemmTokens; ++i) std::copy_n(x8.data(), nb, &xs[i * nb]);
            std::vector<float> ys(static_cast<size_t>(kGemmTokens * s.rows));
            const double tm = time_call(
                [&] {
                    t.matmul_q8_0(w8.data(), xs.data(), ys.data(), s.rows, s.cols, kGemmTokens,
                                  s.rows);
                },
                budget);
            const double tm4 = time_call(
                [&] {
                    t.matmul_q4(w4.data(), xs.data(), ys.data(), s.rows, s.cols, kGemmTokens,
                                s.rows);
                },
                budget);
            g_sink = y[0] + ys[0];
            results.push_back({t.name, "q8_0", s, macs / t8 / 1e9});
            results.push_back({t.name, "q8x64", s, macs * kGemmTokens / tm / 1e9});
            results.push_back({t.name, "q4", s, macs / t4 / 1e9});
            results.push_back({t.name, "q4x64", s, macs * kGemmTokens / tm4 / 1e9});
            results.push_back({t.name, "f32", s, macs / tf / 1e9});
        }
    }
    const double bw = bw_mb > 0 ? read_bandwidth_gbs(bw_mb) : 0.0;

    if (json) {
        std::printf("{\"cpu_features\": \"%s\", \"read_bandwidth_gbs\": %.3f, \"results\": [",
                    k::cpu_features(), bw);
        for (size_t i = 0; i < results.size(); ++i) {
            const Row& r = results[i];
            std::printf(
                "%s\n  {\"path\": \"%s\", \"kernel\": \"%s\", \"rows\": %lld, \"cols\": %lld, "
                "\"gmac_per_s\": %.4f}",
                i ? "," : "", r.path.c_str(), r.kernel.c_str(), (long long)r.shape.rows,
                (long long)r.shape.cols, r.gmacs);
        }
        std::printf("\n]}\n");
        return 0;
    }
    std::printf("cpu features: %s\n", k::cpu_features());
    std::printf("matvec GMAC/s (rows x cols)\n");
    std::printf("%-11s %-5s", "path", "dtype");
    for (const Shape& s : shapes) {
        char label[32];
        std::snprintf(label, sizeof(label), "%lldx%lld", (long long)s.rows, (long long)s.cols);
        std::printf(" %10s", label);
    }
    std::printf("\n");
    const size_t n_shapes = sizeof(shapes) / sizeof(shapes[0]);
    for (int p = 0; p < n_paths; ++p) {
        for (const char* kernel : {"q8_0", "q8x64", "q4", "q4x64", "f32"}) {
            std::printf("%-11s %-5s", paths[p]->name, kernel);
            for (size_t s = 0; s < n_shapes; ++s) {
                for (const Row& r : results) {
                    if (r.path == paths[p]->name && r.kernel == kernel &&
                        r.shape.rows == shapes[s].rows && r.shape.cols == shapes[s].cols)
                        std::printf(" %10.2f", r.gmacs);
                }
            }
            std::printf("\n");
        }
    }
    if (bw_mb > 0)
        std::printf("memory read bandwidth: %.2f GB/s (%zu MB buffer, best of 5)\n", bw, bw_mb);
    return 0;
}
