// The forward pass, read top to bottom like docs/design.md: embedding → per layer (rmsnorm → q,
// k, v → ring memory → ALiBi attention over the window → W_o → residual → rmsnorm → SwiGLU →
// residual) → final rmsnorm → logits.
#include "session.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "math.h"

namespace sage {
namespace {

using kernels::BlockQ4;
using kernels::BlockQ8_0;
using kernels::blocks_per_row;

// Start of row r of a matrix, whatever its storage.
const void* row_pointer(const Matrix& m, int64_t r) {
    switch (m.dtype) {
        case DType::Q8_0:
            return static_cast<const BlockQ8_0*>(m.data) + r * blocks_per_row(m.cols);
        case DType::Q4:
            return static_cast<const BlockQ4*>(m.data) + r * blocks_per_row(m.cols);
        default:
            return static_cast<const float*>(m.data) + r * m.cols;
    }
}

// One matrix-vector product handed to the thread pool: thread i of n does a contiguous slice
// of the rows. Each row is computed exactly as on one thread, so the result is bit-identical.
struct MatvecTask {
    const kernels::KernelTable* kernels;
    const Matrix* w;
    int64_t first_row, rows;
    const float* x;
    const BlockQ8_0* xq;
    float* y;
    int n_threads;

    static void run(void* context, int index) {
        const auto& t = *static_cast<const MatvecTask*>(context);
        const int64_t begin = t.rows * index / t.n_threads,
                      end = t.rows * (index + 1) / t.n_threads;
        if (begin == end) return;
        const void* w = row_pointer(*t.w, t.first_row + begin);
        float* y = t.y + begin;
        switch (t.w->dtype) {
            case DType::Q8_0:
                t.kernels->matvec_q8_0(static_cast<const BlockQ8_0*>(w), t.xq, y, end - begin,
                                       t.w->cols);
                break;
            case DType::Q4:
                t.kernels->matvec_q4(static_cast<const BlockQ4*>(w), t.xq, y, end - begin,
                                     t.w->cols);
                break;
            default:
                t.kernels->matvec_f32(static_cast<const float*>(w), t.x, y, end - begin, t.w->cols);
                break;
        }
    }
};

// q · k in a fixed order: eight lanes, lane l summing the products of elements c ≡ l (mod 8) in
// increasing c, then halved pairwise (l + 4, l + 2, l + 1). The lanes are independent, so the
// compiler vectorizes the loop without changing a single rounding on any machine.
float dot(const float* a, const float* b, int n) {
    float lane[8] = {};
    int c = 0;
    for (; c + 8 <= n; c += 8)
        for (int l = 0; l < 8; ++l) lane[l] = lane[l] + a[c + l] * b[c + l];
    for (int l = 0; c < n; ++c, ++l) lane[l] = lane[l] + a[c] * b[c];
    for (int l = 0; l < 4; ++l) lane[l] = lane[l] + lane[l + 4];
    for (int l = 0; l < 2; ++l) lane[l] = lane[l] + lane[l + 2];
    return lane[0] + lane[1];
}

// Below this many weights a product is not worth waking other threads for.
constexpr int64_t kMinParallelWeights = 1 << 15;

}  // namespace

Session::Session(const Model& model, const SessionOptions& options,
                 const kernels::KernelTable& kernels)
    : model_(model),
      config_(model.config),
      kernels_(kernels),
      options_(options),
      sampler_(model.config.vocab_size, options.seed),
      grammar_(model.vocab.data(), model.config.vocab_size, model.config.ticks_per_quarter),
      detokenizer_(model.vocab.data(), model.config.vocab_size, model.config.ticks_per_quarter),
      pool_(std::max(1, options.threads)) {
    const Config& c = config_;
    const int64_t qd = int64_t{c.n_heads} * c.d_head, kvd = int64_t{c.n_kv_heads} * c.d_head;
    const int64_t widest_input = std::max<int64_t>({c.d_model, qd, c.d_ff});
    const uint32_t longest = *std::max_element(model.horizons.begin(), model.horizons.end());
    state_.x.resize(size_t{kPrefillChunk} * c.d_model);
    state_.u.resize(c.d_model);
    state_.quantized.resize(blocks_per_row(widest_input));
    state_.q.resize(qd);
    state_.scores.resize(longest);
    state_.attended.resize(qd);
    state_.gate.resize(c.d_ff);
    state_.up.resize(c.d_ff);
    state_.delta.resize(c.d_model);
    state_.logits.resize(c.vocab_size);
    state_.allowed.resize(c.vocab_size);
    memory_.resize(c.n_layers);
    for (int l = 0; l < c.n_layers; ++l) {
        RingMemory& m = memory_[l];
        m.horizon = model.horizons[l];
        m.width = kvd;
        m.keys.assign(size_t(m.horizon * kvd), 0.0f);
        m.values.assign(size_t(m.horizon * kvd), 0.0f);
    }
    events_.resize(kEventCapacity);
    for (int32_t id = 0; id < c.vocab_size && bos_token_ < 0; ++id)
        if (model.vocab[id].kind == Kind::Bos) bos_token_ = id;
}

void Session::reset() {
    // The ring memories need no clearing: attention only reads positions fed since the reset.
    position_ = 0;
    has_logits_ = false;
    sampler_.reseed(options_.seed);
    grammar_.reset();
    detokenizer_.reset();
    events_head_ = events_count_ = 0;
    dropped_events_ = 0;
}

void Session::set_programs(const int32_t* programs, size_t n) {
    if (n > 0 && programs == nullptr) throw Error(Status::Argument, "programs is null");
    if (n > programs_.size()) throw Error(Status::Argument, "more than 129 programs");
    for (size_t i = 0; i < n; ++i)
        if (programs[i] < -1 || programs[i] > 127)
            throw Error(Status::Argument,
                        "program " + std::to_string(programs[i]) + " outside -1..127 (-1 = drums)");
    grammar_.set_allowed_programs(programs, n);
    if (!grammar_.any_program_allowed()) {
        // Keep the previous list: with this one no note could ever be generated.
        grammar_.set_allowed_programs(programs_.data(), programs_count_);
        throw Error(Status::Argument,
                    "none of these programs has a Program token in the vocabulary");
    }
    std::copy(programs, programs + n, programs_.begin());
    programs_count_ = n;
}

// ---- the forward pass ----------------------------------------------------------------------

void Session::feed(const int32_t* tokens, size_t n, float* logits, bool all_logits) {
    if (n > 0 && tokens == nullptr) throw Error(Status::Argument, "tokens is null");
    for (size_t i = 0; i < n; ++i)
        if (tokens[i] < 0 || tokens[i] >= config_.vocab_size)
            throw Error(Status::Argument, "token " + std::to_string(tokens[i]) + " at index " +
                                              std::to_string(i) + " outside 0.." +
                                              std::to_string(config_.vocab_size - 1));
    const int64_t d = config_.d_model, V = config_.vocab_size;
    for (size_t start = 0; start < n; start += kPrefillChunk) {
        const size_t count = std::min<size_t>(kPrefillChunk, n - start);
        const int32_t* chunk = tokens + start;
        for (size_t t = 0; t < count; ++t) embed(chunk[t], &state_.x[t * d]);
        // Layer by layer over the chunk: each token still sees exactly the window of design.md,
        // because it writes its own key and value before attending and reads only older ones.
        for (int l = 0; l < config_.n_layers; ++l) {
            for (size_t t = 0; t < count; ++t) {
                const int family = config_.attention == Attention::Askv
                                       ? static_cast<int>(model_.vocab[chunk[t]].family)
                                       : 0;
                forward_layer(l, &state_.x[t * d], family, position_ + t);
            }
        }
        for (size_t t = 0; t < count; ++t) {
            const bool last = start + t == n - 1;
            if (logits != nullptr && all_logits) {
                float* row = logits + (start + t) * V;
                output_logits(&state_.x[t * d], row);
                if (last) std::memcpy(state_.logits.data(), row, V * sizeof(float));
            } else if (last) {
                output_logits(&state_.x[t * d], state_.logits.data());
                if (logits != nullptr) std::memcpy(logits, state_.logits.data(), V * sizeof(float));
            }
            accept(chunk[t]);
        }
        position_ += count;
    }
    if (n > 0) {
        has_logits_ = true;
    } else if (logits != nullptr && !all_logits) {
        // Feeding nothing changes nothing: the logits are still those after the last token.
        if (!has_logits_)
            throw Error(Status::State,
                        "nothing has been fed yet, so there are no logits: feed at least one "
                        "token (sampling from a new session starts a piece from BOS)");
        std::memcpy(logits, state_.logits.data(), V * sizeof(float));
    }
}

void Session::start_piece() {
    if (bos_token_ < 0)
        throw Error(Status::State,
                    "nothing to sample from: this vocabulary has no BOS token, so feed at least "
                    "one token first");
    feed(&bos_token_, 1, nullptr, false);
}

void Session::embed(int32_t token, float* x) {
    const Matrix& e = model_.weights.tok_embedding;
    const void* row = row_pointer(e, token);
    const int64_t d = e.cols;
    switch (e.dtype) {
        case DType::Q8_0: {
            const auto* blocks = static_cast<const BlockQ8_0*>(row);
            for (int64_t i = 0; i < d; ++i)
                x[i] =
                    blocks[i / kernels::kBlockSize].scale *
                    static_cast<float>(blocks[i / kernels::kBlockSize].q[i % kernels::kBlockSize]);
            break;
        }
        case DType::Q4: {
            const auto* blocks = static_cast<const BlockQ4*>(row);
            for (int64_t i = 0; i < d; ++i) {
                const BlockQ4& b = blocks[i / kernels::kBlockSize];
                const int j = static_cast<int>(i % kernels::kBlockSize);
                const int nibble = j % 2 == 0 ? (b.q[j / 2] & 0x0F) : (b.q[j / 2] >> 4);
                x[i] = b.scale * static_cast<float>(nibble - 8);
            }
            break;
        }
        default:
            std::memcpy(x, row, d * sizeof(float));
            break;
    }
}

void Session::forward_layer(int layer, float* x, int family, uint64_t position) {
    const LayerWeights& w = model_.weights.layers[layer];
    RingMemory& memory = memory_[layer];
    const int64_t kvd = memory.width, qd = int64_t{config_.n_heads} * config_.d_head;

    // Attention: q, and this token's key and value straight into the ring memory.
    rmsnorm(x, w.attn_norm, state_.u.data());
    prepare(state_.u.data(), config_.d_model);
    matvec(w.wq, 0, qd, state_.u.data(), state_.q.data());
    matvec(w.wk, family * kvd, kvd, state_.u.data(), memory.key(position));  // W_k[a(t)]
    matvec(w.wv, family * kvd, kvd, state_.u.data(), memory.value(position));
    attend(layer, position);
    prepare(state_.attended.data(), qd);
    matvec(w.wo, 0, config_.d_model, state_.attended.data(), state_.delta.data());
    for (int i = 0; i < config_.d_model; ++i) x[i] = x[i] + state_.delta[i];

    // SwiGLU feed-forward.
    rmsnorm(x, w.ffn_norm, state_.u.data());
    prepare(state_.u.data(), config_.d_model);
    matvec(w.w1, 0, config_.d_ff, state_.u.data(), state_.gate.data());
    matvec(w.w3, 0, config_.d_ff, state_.u.data(), state_.up.data());
    for (int i = 0; i < config_.d_ff; ++i) state_.gate[i] = silu_f32(state_.gate[i]) * state_.up[i];
    prepare(state_.gate.data(), config_.d_ff);
    matvec(w.w2, 0, config_.d_model, state_.gate.data(), state_.delta.data());
    for (int i = 0; i < config_.d_model; ++i) x[i] = x[i] + state_.delta[i];
}

void Session::attend(int layer, uint64_t position) {
    RingMemory& memory = memory_[layer];
    const int H = config_.n_heads, dh = config_.d_head;
    const int heads_per_group = config_.n_heads / config_.n_kv_heads;
    const float inv_sqrt_dh = 1.0f / std::sqrt(static_cast<float>(dh));
    // The window (p − h, p], clipped at the start of the session, oldest key first. Its keys
    // sit in consecutive ring slots from first mod h, wrapping once.
    const int64_t window = static_cast<int64_t>(std::min<uint64_t>(position + 1, memory.horizon));
    const uint64_t first = position + 1 - window;
    const int64_t first_slot = static_cast<int64_t>(first % memory.horizon);
    float* scores = state_.scores.data();
    for (int i = 0; i < H; ++i) {
        const int64_t g = i / heads_per_group;  // the key/value head query head i shares
        const float* q = &state_.q[size_t(i) * dh];
        const float slope = model_.weights.alibi_slopes[i];
        float max_score = -INFINITY;
        int64_t slot = first_slot;
        for (int64_t j = 0; j < window; ++j) {
            const float* k = &memory.keys[slot * memory.width + g * dh];
            const float distance = static_cast<float>(window - 1 - j);  // p − (first + j)
            const float s = dot(q, k, dh) * inv_sqrt_dh - slope * distance;
            scores[j] = s;
            max_score = std::max(max_score, s);
            if (++slot == memory.horizon) slot = 0;
        }
        float total = 0.0f;
        for (int64_t j = 0; j < window; ++j) {
            scores[j] = exp_f32(scores[j] - max_score);
            total = total + scores[j];
        }
        const float inv_total = 1.0f / total;
        float* o = &state_.attended[size_t(i) * dh];
        std::fill(o, o + dh, 0.0f);
        slot = first_slot;
        for (int64_t j = 0; j < window; ++j) {
            const float* v = &memory.values[slot * memory.width + g * dh];
            const float weight = scores[j] * inv_total;
            for (int c = 0; c < dh; ++c) o[c] = o[c] + weight * v[c];
            if (++slot == memory.horizon) slot = 0;
        }
    }
}

void Session::output_logits(const float* x, float* logits) {
    rmsnorm(x, model_.weights.final_norm, state_.u.data());
    prepare(state_.u.data(), config_.d_model);
    matvec(model_.weights.output, 0, config_.vocab_size, state_.u.data(), logits);
}

void Session::rmsnorm(const float* x, const float* gain, float* out) const {
    const int d = config_.d_model;
    float sum_squares = 0.0f;
    for (int i = 0; i < d; ++i) sum_squares = sum_squares + x[i] * x[i];
    const float inv_rms = 1.0f / std::sqrt(sum_squares / static_cast<float>(d) + config_.norm_eps);
    for (int i = 0; i < d; ++i) out[i] = (x[i] * inv_rms) * gain[i];
}

void Session::prepare(const float* x, int64_t n) {
    if (model_.weights.output.dtype != DType::F32)  // every matrix shares the file's dtype
        kernels_.quantize_row_q8_0(x, state_.quantized.data(), n);
}

void Session::matvec(const Matrix& w, int64_t first_row, int64_t rows, const float* x, float* y) {
    MatvecTask task{&kernels_, &w, first_row, rows, x, state_.quantized.data(), y, 1};
    if (pool_.size() > 1 && rows * w.cols >= kMinParallelWeights) {
        task.n_threads = pool_.size();
        pool_.run(&MatvecTask::run, &task);
    } else {
        MatvecTask::run(&task, 0);
    }
}

// ---- sampling and events -------------------------------------------------------------------

void Session::check_sampling(const SamplingParams& p) {
    if (!(p.temperature >= 0.0f) || !std::isfinite(p.temperature))
        throw Error(Status::Argument, "temperature must be a finite value >= 0 (0 = greedy)");
    if (p.top_k < 0) throw Error(Status::Argument, "top_k must be >= 0 (0 = off)");
    if (!(p.top_p > 0.0f && p.top_p <= 1.0f))
        throw Error(Status::Argument, "top_p must be in (0, 1] (1 = off)");
    if (!(p.min_p >= 0.0f && p.min_p < 1.0f))
        throw Error(Status::Argument, "min_p must be in [0, 1) (0 = off)");
}

int32_t Session::sample(const SamplingParams& params) {
    check_sampling(params);
    if (!has_logits_) start_piece();
    grammar_.allowed(state_.allowed.data());
    bool any = false;
    for (uint8_t a : state_.allowed) any = any || a != 0;
    if (!any) throw Error(Status::State, "the grammar allows no token here (allowed programs?)");
    return sampler_.sample(state_.logits.data(), state_.allowed.data(), params);
}

void Session::generate(const SamplingParams& params, int32_t* tokens, size_t n) {
    check_sampling(params);
    for (size_t i = 0; i < n; ++i) {
        const int32_t token = sample(params);
        feed(&token, 1, nullptr, false);
        if (tokens != nullptr) tokens[i] = token;
    }
}

void Session::accept(int32_t token) {
    grammar_.accept(token);
    NoteEvent note;
    if (!detokenizer_.push(token, &note)) return;
    if (events_count_ == kEventCapacity) {  // full: drop the oldest
        events_head_ = (events_head_ + 1) % kEventCapacity;
        --events_count_;
        ++dropped_events_;
    }
    events_[(events_head_ + events_count_) % kEventCapacity] = note;
    ++events_count_;
}

size_t Session::pop_events(NoteEvent* out, size_t capacity) {
    const size_t n = std::min(capacity, events_count_);
    for (size_t i = 0; i < n; ++i) out[i] = events_[(events_head_ + i) % kEventCapacity];
    events_head_ = (events_head_ + n) % kEventCapacity;
    events_count_ -= n;
    return n;
}

MemoryReport Session::memory() const {
    auto bytes = [](const auto& v) { return uint64_t(v.size() * sizeof(v[0])); };
    MemoryReport r{};
    r.weights_bytes = model_.file_bytes;
    r.activation_bytes = bytes(state_.x) + bytes(state_.u) + bytes(state_.quantized) +
                         bytes(state_.q) + bytes(state_.scores) + bytes(state_.attended) +
                         bytes(state_.gate) + bytes(state_.up) + bytes(state_.delta) +
                         bytes(state_.logits) + bytes(state_.allowed) +
                         uint64_t(sampler_.vocab_size()) * (sizeof(int32_t) + sizeof(float));
    for (const RingMemory& m : memory_) r.kv_bytes += bytes(m.keys) + bytes(m.values);
    r.total_bytes = r.activation_bytes + r.kv_bytes + bytes(events_) + sizeof(Session);
    return r;
}

}  // namespace sage
