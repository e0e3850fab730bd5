// The engine against the PyTorch reference model (training/model.py), without Python: the logits
// stored in data/reference_logits.h (make_reference_logits.py) for the fixture models, on every
// kernel path this CPU runs (and, in the aarch64 build, under qemu). The other engine tests compare
// the engine with itself; this one catches a forward pass that is consistently wrong.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "data/reference_logits.h"
#include "engine/model_file.h"
#include "engine/session.h"
#include "engine_fixtures.h"
#include "kernels.h"
#include "testing.h"

namespace {

struct Reference {
    const char* fixture;
    const float* logits;       // [kTokens][kCheckedIdCount]
    const float* log_sum_exp;  // [kTokens]
    // The largest difference allowed in a logit and in log p (tests/test_engine.py's parity
    // bound for f32). A q8_0 file's reference holds its dequantized weights, but the engine also
    // quantizes activations to q8_0: there the bound is on log p, well above the 0.06 measured
    // and far below what a wrong forward pass gives (tenths to units).
    double logit_tolerance;
    double log_p_tolerance;
};

const Reference kReferences[] = {
    {"tiny_f32", reference::k_tiny_f32_logits, reference::k_tiny_f32_log_sum_exp, 1e-4, 1e-4},
    {"tiny_q8_0", reference::k_tiny_q8_0_logits, reference::k_tiny_q8_0_log_sum_exp, INFINITY, 0.1},
};

double log_sum_exp(const float* logits, int n) {
    const double top = *std::max_element(logits, logits + n);
    double total = 0;
    for (int i = 0; i < n; ++i) total += std::exp(logits[i] - top);
    return top + std::log(total);
}

TEST(logits_match_the_pytorch_reference_on_every_kernel_path) {
    const sage::kernels::KernelTable* paths[8];
    const int n_paths = sage::kernels::available(paths, 8);
    CHECK(n_paths >= 1);
    for (const Reference& ref : kReferences) {
        auto model = sage::Model::load(sage::testing::data_dir() + "/" + ref.fixture + ".sage");
        const int V = model->config.vocab_size;
        const uint32_t longest = *std::max_element(model->horizons.begin(), model->horizons.end());
        CHECK(reference::kTokens > 2 * static_cast<int>(longest));  // every ring wraps
        for (int p = 0; p < n_paths; ++p) {
            // The reference holds its keys and values in f32, as this session does.
            sage::Session session(*model, sage::SessionOptions{0, sage::KvMemory::F32}, *paths[p]);
            std::vector<float> logits(size_t(reference::kTokens) * V);
            session.feed(reference::kTokenIds, reference::kTokens, logits.data(), true);
            double worst_logit = 0, worst_log_p = 0;
            int worst_position = -1;
            for (int t = 0; t < reference::kTokens; ++t) {
                const float* row = &logits[size_t(t) * V];
                const double lse = log_sum_exp(row, V), ref_lse = ref.log_sum_exp[t];
                for (int c = 0; c < reference::kCheckedIdCount; ++c) {
                    const double got = row[reference::kCheckedIds[c]];
                    const double want = ref.logits[t * reference::kCheckedIdCount + c];
                    const double log_p_error = std::fabs((got - lse) - (want - ref_lse));
                    worst_logit = std::max(worst_logit, std::fabs(got - want));
                    if (log_p_error > worst_log_p) worst_position = t;
                    worst_log_p = std::max(worst_log_p, log_p_error);
                }
                worst_logit = std::max(worst_logit, std::fabs(lse - ref_lse));
            }
            std::printf("  %s on %s: largest logit error %.3g, log p error %.3g (position %d)\n",
                        ref.fixture, paths[p]->name, worst_logit, worst_log_p, worst_position);
            CHECK(worst_logit <= ref.logit_tolerance);
            CHECK(worst_log_p <= ref.log_p_tolerance);
        }
    }
}

}  // namespace

SAGE_TEST_MAIN()
