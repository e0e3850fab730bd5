// The forward pass, read top to bottom like docs/design.md: embedding → per layer (rmsnorm → q,
// k, v → ring memory → ALiBi attention over the window → W_o → residual → rmsnorm → SwiGLU →
// residual) → final rmsnorm → logits.
#include "session.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

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

}  // namespace

RunState::Sizes RunState::sizes(const Model& model) {
    const Config& c = model.config;
    const int64_t qd = int64_t{c.n_heads} * c.d_head, kvd = int64_t{c.n_kv_heads} * c.d_head;
    const int64_t widest_input = std::max<int64_t>({c.d_model, qd, c.d_ff});
    const uint32_t longest = *std::max_element(model.horizons.begin(), model.horizons.end());
    const int64_t chunk = Session::kPrefillChunk;
    Sizes n;
    n.stream = chunk * c.d_model;
    n.quantized = chunk * blocks_per_row(widest_input);
    n.gathered = chunk * blocks_per_row(c.d_model);
    n.queries = chunk * qd;
    n.keys = chunk * kvd;
    n.tokens = chunk;
    n.scores = int64_t{c.n_heads / c.n_kv_heads} * longest;
    n.weights = kernels::attention_weights_bytes(c.n_heads / c.n_kv_heads, longest);
    n.window = int64_t{longest} - 1 + chunk;
    n.hidden = chunk * c.d_ff;
    n.vocab = c.vocab_size;
    return n;
}

uint64_t RunState::bytes(const Sizes& n) {
    return uint64_t(n.stream) * 3 * sizeof(float) +  // x, u, delta
           uint64_t(n.quantized + n.gathered) * sizeof(kernels::BlockQ8_0) +
           uint64_t(n.queries) * 2 * sizeof(float) +  // q, attended
           uint64_t(n.keys) * 2 * sizeof(float) +     // k, v
           uint64_t(n.tokens) * sizeof(int32_t) + uint64_t(n.scores) * sizeof(float) +
           uint64_t(n.weights) +                                       // int8 memory's weights
           uint64_t(n.hidden) * 2 * sizeof(float) +                    // gate, up
           uint64_t(n.vocab) * (2 * sizeof(float) + sizeof(uint8_t));  // logits, biased, allowed
}

void RingMemory::allocate(int64_t horizon_, int64_t heads_, int64_t d_head_, KvMemory kind) {
    horizon = horizon_;
    heads = heads_;
    d_head = d_head_;
    width = heads * d_head;
    const size_t elements = size_t(horizon * width), scales = size_t(horizon * heads);
    if (kind == KvMemory::F32) {
        keys.assign(elements, 0.0f);
        values.assign(elements, 0.0f);
    } else {
        keys_q8.assign(size_t(heads * kernels::key_quads(d_head) * horizon * 4), 0);
        values_q8.assign(size_t((horizon + 3) / 4 * 4 * width), 0);  // whole quads of slots
        key_scales.assign(scales, 0.0f);
        value_scales.assign(scales, 0.0f);
    }
}

namespace {

// Key/value head `group` of positions first .. first + count - 1 of `ring` and slots slot,
// slot + 1, ... of the one-head memory `one`, copied from the ring into `one` (FromRing) or back:
// the group's d_head elements of each key and value, and its scales (an int8 memory's bytes as they
// are, so a row is quantized once).
template <bool FromRing, typename Ring, typename One>
void copy_group(Ring& ring, One& one, int64_t group, uint64_t first, int64_t slot, int64_t count) {
    const int64_t H = ring.horizon, first_element = group * one.d_head;
    auto copy = [](auto* ring_at, auto* one_at, int64_t n) {
        if constexpr (FromRing)
            std::copy_n(ring_at, n, one_at);
        else
            std::copy_n(one_at, n, ring_at);
    };
    // n slots of the ring from slot `from` and slots to, to + 1, ... of `one`.
    auto copy_run = [&](int64_t from, int64_t to, int64_t n) {
        if (!one.is_int8()) {
            for (int64_t e = 0; e < one.d_head; ++e)
                copy(&ring.keys[(first_element + e) * H + from], &one.keys[e * one.horizon + to],
                     n);
            for (int64_t j = 0; j < n; ++j)
                copy(&ring.values[(from + j) * ring.width + first_element],
                     &one.values[(to + j) * one.width], one.d_head);
            return;
        }
        auto* ring_keys = ring.group_keys_q8(group);
        for (int64_t i = 0; i < kernels::key_quads(one.d_head); ++i)
            copy(&ring_keys[(i * H + from) * 4], &one.keys_q8[(i * one.horizon + to) * 4], n * 4);
        for (int64_t j = 0; j < n; ++j) {  // a slot's elements lie 4 bytes apart (value_q8_index)
            auto* ring_value =
                &ring.values_q8[kernels::value_q8_index(first_element, from + j, ring.width)];
            auto* one_value = &one.values_q8[kernels::value_q8_index(0, to + j, one.width)];
            for (int64_t c = 0; c < one.d_head; ++c) copy(ring_value + 4 * c, one_value + 4 * c, 1);
        }
        copy(&ring.key_scales[group * H + from], &one.key_scales[to], n);
        copy(&ring.value_scales[group * H + from], &one.value_scales[to], n);
    };
    // Two runs of ring slots at most: up to the ring's end, then from slot 0.
    const int64_t start = static_cast<int64_t>(first % H);
    const int64_t to_end = std::min(count, H - start);
    copy_run(start, slot, to_end);
    copy_run(0, slot + to_end, count - to_end);
}

}  // namespace

void RingMemory::copy_from(const RingMemory& ring, int64_t group, uint64_t first, int64_t count) {
    copy_group<true>(ring, *this, group, first, 0, count);
}

void RingMemory::copy_into(RingMemory& ring, int64_t group, int64_t slot, uint64_t first,
                           int64_t count) const {
    copy_group<false>(ring, *this, group, first, slot, count);
}

uint64_t RingMemory::bytes(int64_t horizon, int64_t heads, int64_t d_head, KvMemory kind) {
    const uint64_t rows = uint64_t(horizon) * heads;  // a key and a value per head and slot
    if (kind == KvMemory::F32) return rows * 2 * d_head * sizeof(float);
    // The keys' d_head and the values' slots rounded up to a multiple of 4 (kernels.h).
    const uint64_t key_bytes = uint64_t(kernels::key_quads(d_head)) * 4;
    const uint64_t value_bytes = uint64_t(horizon + 3) / 4 * 4 * heads * d_head;
    return rows * (key_bytes + 2 * sizeof(float)) + value_bytes;
}

void Session::check_options(const SessionOptions& options) {
    if (options.kv_memory != KvMemory::F32 && options.kv_memory != KvMemory::Int8)
        throw Error(Status::Argument, "kv_memory must be 0 (f32) or 1 (int8), not " +
                                          std::to_string(static_cast<uint32_t>(options.kv_memory)));
}

Session::Session(const Model& model, const SessionOptions& options,
                 const kernels::KernelTable& kernels)
    : model_(model),
      config_(model.config),
      kernels_(kernels),
      options_(options),
      sampler_(model.config.vocab_size, options.seed),
      grammar_(model.vocab.data(), model.config.vocab_size, model.config.ticks_per_quarter),
      detokenizer_(model.vocab.data(), model.config.vocab_size, model.config.ticks_per_quarter),
      controls_(model.vocab.data(), model.config.vocab_size, model.config.ticks_per_quarter) {
    const Config& c = config_;
    const RunState::Sizes n = RunState::sizes(model);
    state_.x.resize(n.stream);
    state_.u.resize(n.stream);
    state_.quantized.resize(n.quantized);
    state_.gathered.resize(n.gathered);
    state_.q.resize(n.queries);
    state_.k.resize(n.keys);
    state_.v.resize(n.keys);
    state_.kv_row.resize(n.tokens);
    state_.scores.resize(n.scores);
    state_.weights.resize(n.weights);
    state_.attended.resize(n.queries);
    state_.gate.resize(n.hidden);
    state_.up.resize(n.hidden);
    state_.delta.resize(n.stream);
    state_.logits.resize(n.vocab);
    state_.allowed.resize(n.vocab);
    state_.biased.resize(n.vocab);
    check_options(options);
    for (int l = 0; l < c.n_layers && options.kv_memory == KvMemory::Int8; ++l)
        if (model.horizons[l] > kernels::kMaxInt8Horizon)
            throw Error(Status::Argument, "kv_memory int8 needs horizons of at most " +
                                              std::to_string(kernels::kMaxInt8Horizon) +
                                              " (layer " + std::to_string(l) + " has " +
                                              std::to_string(model.horizons[l]) +
                                              "): use the f32 memory");
    if (kernels::reads_panels(kernels)) model.pack_panels(kernels);
    memory_.resize(c.n_layers);
    for (int l = 0; l < c.n_layers; ++l)
        memory_[l].allocate(model.horizons[l], c.n_kv_heads, c.d_head, options.kv_memory);
    window_.allocate(n.window, 1, c.d_head, options.kv_memory);
    events_.resize(kEventCapacity);
    for (int32_t id = 0; id < c.vocab_size && bos_token_ < 0; ++id)
        if (model.vocab[id].kind == Kind::Bos) bos_token_ = id;
    for (const TokenInfo& token : model.vocab)
        has_time_signatures_ = has_time_signatures_ || token.kind == Kind::TimeSig;
}

void Session::reset() {
    // The ring memories need no clearing: attention only reads positions fed since the reset.
    position_ = 0;
    has_logits_ = false;
    pending_ = -1;
    sampler_.reseed(options_.seed);
    grammar_.reset();
    detokenizer_.reset();
    controls_.forget();
    events_head_ = events_count_ = 0;
    dropped_events_ = 0;
}

SessionSnapshot::SessionSnapshot(const Session& session)
    : memory_(session.memory_),
      logits_(session.state_.logits),
      grammar_(session.grammar_),
      detokenizer_(session.detokenizer_),
      controls_(session.controls_),
      position_(session.position_),
      has_logits_(session.has_logits_),
      pending_(session.pending_) {}

std::unique_ptr<SessionSnapshot> Session::make_snapshot() const {
    return std::unique_ptr<SessionSnapshot>(new SessionSnapshot(*this));
}

// Copy assignment into vectors of the same size reuses their storage: nothing is allocated.
void Session::save(SessionSnapshot& snapshot) const {
    snapshot.memory_ = memory_;
    snapshot.logits_ = state_.logits;
    snapshot.grammar_ = grammar_;
    snapshot.detokenizer_ = detokenizer_;
    snapshot.controls_ = controls_;
    snapshot.position_ = position_;
    snapshot.has_logits_ = has_logits_;
    snapshot.pending_ = pending_;
}

void Session::restore(const SessionSnapshot& snapshot) {
    memory_ = snapshot.memory_;
    state_.logits = snapshot.logits_;
    // The settings stay the current ones: the grammar's (programs, meter, EOS switch) and the
    // controls'.
    grammar_.copy_state(snapshot.grammar_);
    detokenizer_ = snapshot.detokenizer_;
    const sage_controls settings = controls_.settings();
    controls_ = snapshot.controls_;
    controls_.set(settings);
    grammar_.set_allow_eos(allow_eos_ || controls_.ending_here());
    position_ = snapshot.position_;
    has_logits_ = snapshot.has_logits_;
    pending_ = snapshot.pending_;
    events_head_ = events_count_ = 0;
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
    pending_ = -1;  // drawn under the old mask
}

void Session::set_controls(const sage_controls& controls) {
    controls_.set(controls);
    grammar_.set_allow_eos(allow_eos_ || controls_.ending_here());
    pending_ = -1;  // drawn under the old controls
}

void Session::set_meter(int32_t numerator, int32_t denominator) {
    if (numerator != 0) {
        bool found = false;
        for (const TokenInfo& t : model_.vocab)
            found |= t.kind == Kind::TimeSig && t.a == numerator && t.b == denominator;
        if (!found)
            throw Error(Status::Argument, "the model has no time signature " +
                                              std::to_string(numerator) + "/" +
                                              std::to_string(denominator));
    }
    grammar_.set_meter(numerator, denominator);
    pending_ = -1;  // drawn under the old mask
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
        for (int l = 0; l < config_.n_layers; ++l)
            forward_layer(l, chunk, static_cast<int64_t>(count), position_);
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
        pending_ = -1;
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
            for (int64_t b = 0; b < blocks_per_row(d); ++b) {  // block by block: vectorized
                const int64_t n =
                    std::min<int64_t>(kernels::kBlockSize, d - b * kernels::kBlockSize);
                float* xb = x + b * kernels::kBlockSize;
                for (int64_t j = 0; j < n; ++j)
                    xb[j] = blocks[b].scale * static_cast<float>(blocks[b].q[j]);
            }
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

// One layer over the block's `count` tokens at positions position, position + 1, ...: each matrix
// product runs over the whole block, and each token writes its own key and value into the ring
// just before it attends, so it sees exactly the window of design.md (and overwrites only a
// position that neither it nor any later token of the block can see).
void Session::forward_layer(int layer, const int32_t* tokens, int64_t count, uint64_t position) {
    const LayerWeights& w = model_.weights.layers[layer];
    RingMemory& memory = memory_[layer];
    const int64_t d = config_.d_model, d_ff = config_.d_ff;
    const int64_t qd = int64_t{config_.n_heads} * config_.d_head;
    float* x = state_.x.data();
    float* u = state_.u.data();
    BlockQ8_0* xq = state_.quantized.data();

    // Attention: q, k, v, then each token's key and value into the ring memory, and attention.
    rmsnorm(x, w.attn_norm, u, count);
    prepare(u, d, count, xq);
    matmul(w.wq, 0, qd, u, xq, count, state_.q.data(), qd);
    project_keys_values(layer, tokens, count);
    if (count == 1) {
        memory.write(position, state_.k.data(), state_.v.data(), kernels_);
        attend(layer, position, state_.q.data(), state_.attended.data());
    } else {
        attend_block(layer, count, position);
    }
    prepare(state_.attended.data(), qd, count, xq);
    matmul(w.wo, 0, d, state_.attended.data(), xq, count, state_.delta.data(), d);
    for (int64_t i = 0; i < count * d; ++i) x[i] = x[i] + state_.delta[i];

    // SwiGLU feed-forward.
    rmsnorm(x, w.ffn_norm, u, count);
    prepare(u, d, count, xq);
    matmul(w.w1, 0, d_ff, u, xq, count, state_.gate.data(), d_ff);
    matmul(w.w3, 0, d_ff, u, xq, count, state_.up.data(), d_ff);
    float* gate = state_.gate.data();
    kernels_.swiglu(gate, state_.up.data(), count * d_ff);
    prepare(gate, d_ff, count, xq);
    matmul(w.w2, 0, d, gate, xq, count, state_.delta.data(), d);
    for (int64_t i = 0; i < count * d; ++i) x[i] = x[i] + state_.delta[i];
}

// k_t = W_k[a(t)] u_t and v_t = W_v[a(t)] u_t (AS-KVHS: one projection per attribute family) for
// the block's tokens, from the inputs `prepare` left in state_.quantized (or state_.u for f32).
// The tokens of each family go through their family's rows together, so state_.k and state_.v
// fill family by family; state_.kv_row[t] says where token t's key and value landed.
void Session::project_keys_values(int layer, const int32_t* tokens, int64_t count) {
    const LayerWeights& w = model_.weights.layers[layer];
    const int64_t d = config_.d_model, kvd = memory_[layer].width, nb = blocks_per_row(d);
    const bool per_family = config_.attention == Attention::Askv;
    const int families = per_family ? config_.n_families : 1;
    // A block of Q8_0 inputs goes through one matrix product per family, its inputs gathered.
    const bool gather = model_.weights.output.dtype == DType::Q8_0 && count > 1;
    int64_t row = 0;
    for (int family = 0; family < families; ++family) {
        const int64_t first = row;
        for (int64_t t = 0; t < count; ++t) {
            if (per_family && static_cast<int>(model_.vocab[tokens[t]].family) != family) continue;
            state_.kv_row[t] = static_cast<int32_t>(row);
            if (gather) {
                std::copy_n(&state_.quantized[t * nb], nb, &state_.gathered[(row - first) * nb]);
            } else {
                const float* u = &state_.u[t * d];
                const BlockQ8_0* xq = &state_.quantized[t * nb];
                matmul(w.wk, family * kvd, kvd, u, xq, 1, &state_.k[row * kvd], kvd);
                matmul(w.wv, family * kvd, kvd, u, xq, 1, &state_.v[row * kvd], kvd);
            }
            ++row;
        }
        if (!gather || row == first) continue;
        const BlockQ8_0* xq = state_.gathered.data();
        matmul(w.wk, family * kvd, kvd, nullptr, xq, row - first, &state_.k[first * kvd], kvd);
        matmul(w.wv, family * kvd, kvd, nullptr, xq, row - first, &state_.v[first * kvd], kvd);
    }
}

kernels::AttentionGroup Session::group_memory(const RingMemory& memory, int g) {
    const int dh = config_.d_head, heads_per_group = config_.n_heads / config_.n_kv_heads;
    const int64_t horizon = memory.horizon;
    kernels::AttentionGroup a{};
    a.value_stride = memory.width;
    a.horizon = horizon;
    a.scale = 1.0f / std::sqrt(static_cast<float>(dh));
    a.heads = heads_per_group;
    a.d_head = dh;
    a.slopes = model_.weights.alibi_slopes + int64_t{g} * heads_per_group;
    a.scores = state_.scores.data();
    a.weights = state_.weights.data();
    if (memory.is_int8()) {
        a.keys_q8 = memory.group_keys_q8(g);
        a.values_q8 = memory.values_q8.data() + g * dh * 4;
        a.key_scales = memory.key_scales.data() + g * horizon;
        a.value_scales = memory.value_scales.data() + g * horizon;
    } else {
        a.keys = memory.keys.data() + g * dh * horizon;
        a.values = memory.values.data() + g * dh;
    }
    return a;
}

// Each key/value group's query heads attend together (the kernel reads each key and value once
// for all of them) over the window (p − h, p], clipped at the start of the session.
void Session::attend(int layer, uint64_t position, const float* q, float* out) {
    const RingMemory& memory = memory_[layer];
    const int64_t window = static_cast<int64_t>(std::min<uint64_t>(position + 1, memory.horizon));
    const int64_t group_width = int64_t{config_.n_heads / config_.n_kv_heads} * config_.d_head;
    for (int g = 0; g < config_.n_kv_heads; ++g) {
        kernels::AttentionGroup a = group_memory(memory, g);
        a.first_slot = static_cast<int64_t>((position + 1 - window) % memory.horizon);
        a.window = window;
        a.q = q + g * group_width;
        a.out = out + g * group_width;
        memory.is_int8() ? kernels_.attend_group_q8(a) : kernels_.attend_group(a);
    }
}

// Per key/value group: the block's window in window_ (the group's h - 1 positions before the
// block from the ring, then the block's own keys and values, stored as the ring stores them), the
// block's keys and values from there into the ring (only the last h of them stay), and the group's
// queries of the whole block at once.
void Session::attend_block(int layer, int64_t count, uint64_t position) {
    RingMemory& memory = memory_[layer];
    const int64_t horizon = memory.horizon, kvd = memory.width, dh = config_.d_head;
    const int64_t qd = int64_t{config_.n_heads} * dh;
    const int heads_per_group = config_.n_heads / config_.n_kv_heads;
    const int64_t past = static_cast<int64_t>(std::min<uint64_t>(position, horizon - 1));
    for (int g = 0; g < config_.n_kv_heads; ++g) {
        window_.copy_from(memory, g, position - past, past);
        for (int64_t t = 0; t < count; ++t) {
            const int64_t row = state_.kv_row[t] * kvd + g * dh;
            window_.write(past + t, &state_.k[row], &state_.v[row], kernels_);
        }
        // The block's keys and values into the ring as the window holds them (an int8 row is
        // quantized once): only the last h stay. The queries read the window alone.
        const int64_t kept = std::min(count, horizon);
        window_.copy_into(memory, g, past + count - kept, position + count - kept, kept);
        kernels::AttentionBlock b{};
        b.first = group_memory(window_, 0);
        b.first.slopes = model_.weights.alibi_slopes + int64_t{g} * heads_per_group;
        b.first.window = std::min<int64_t>(past + 1, horizon);
        b.first.first_slot = past + 1 - b.first.window;
        b.first.q = state_.q.data() + g * heads_per_group * dh;
        b.first.out = state_.attended.data() + g * heads_per_group * dh;
        b.tokens = count;
        b.q_stride = b.out_stride = qd;
        b.max_window = horizon;
        memory.is_int8() ? kernels_.attend_block_q8(b) : kernels_.attend_block(b);
    }
}

void Session::output_logits(const float* x, float* logits) {
    const int64_t d = config_.d_model;
    rmsnorm(x, model_.weights.final_norm, state_.u.data(), 1);
    prepare(state_.u.data(), d, 1, state_.quantized.data());
    matmul(model_.weights.output, 0, config_.vocab_size, state_.u.data(), state_.quantized.data(),
           1, logits, config_.vocab_size);
}

void Session::rmsnorm(const float* x, const float* gain, float* out, int64_t count) const {
    kernels_.rmsnorm(x, gain, out, config_.d_model, count, config_.norm_eps);
}

void Session::prepare(const float* x, int64_t n, int64_t count, BlockQ8_0* xq) {
    if (model_.weights.output.dtype == DType::F32) return;  // every matrix shares the file's dtype
    const int64_t nb = blocks_per_row(n);
    for (int64_t t = 0; t < count; ++t) kernels_.quantize_row_q8_0(x + t * n, xq + t * nb, n);
}

void Session::matmul(const Matrix& w, int64_t first_row, int64_t rows, const float* x,
                     const BlockQ8_0* xq, int64_t count, float* y, int64_t y_stride) {
    const int64_t cols = w.cols, nb = blocks_per_row(cols);
    // The kernel first: a session on a path without it never reads `panels`, which another
    // session's first construction may be writing (Model::pack_panels).
    const int64_t first_panel = first_row / kernels::kPanelRows;
    if (first_row % kernels::kPanelRows == 0) {
        // Packed rows (Model::pack_panels): the same products, read without a horizontal sum.
        if (kernels_.matmul_q8_0_panels != nullptr && w.panels != nullptr) {
            kernels_.matmul_q8_0_panels(w.panels + first_panel * nb, xq, y, rows, cols, count,
                                        y_stride);
            return;
        }
        if (kernels_.matmul_q4_panels != nullptr && w.panels_q4 != nullptr) {
            kernels_.matmul_q4_panels(w.panels_q4 + first_panel * nb, xq, y, rows, cols, count,
                                      y_stride);
            return;
        }
    }
    const void* rows_start = row_pointer(w, first_row);
    if (w.dtype == DType::Q8_0 && count > 1) {
        // A block of tokens: each weight row is read once for all of them.
        kernels_.matmul_q8_0(static_cast<const BlockQ8_0*>(rows_start), xq, y, rows, cols, count,
                             y_stride);
        return;
    }
    if (w.dtype == DType::Q4 && count > 1) {
        kernels_.matmul_q4(static_cast<const BlockQ4*>(rows_start), xq, y, rows, cols, count,
                           y_stride);
        return;
    }
    for (int64_t t = 0; t < count; ++t) {
        float* y_t = y + t * y_stride;
        switch (w.dtype) {
            case DType::Q8_0:
                kernels_.matvec_q8_0(static_cast<const BlockQ8_0*>(rows_start), xq + t * nb, y_t,
                                     rows, cols);
                break;
            case DType::Q4:
                kernels_.matvec_q4(static_cast<const BlockQ4*>(rows_start), xq + t * nb, y_t, rows,
                                   cols);
                break;
            default:
                kernels_.matvec_f32(static_cast<const float*>(rows_start), x + t * cols, y_t, rows,
                                    cols);
                break;
        }
    }
}

// ---- sampling and events -------------------------------------------------------------------

void Session::check_sampling(const SamplingParams& p) {
    auto refuse = [](const char* rule, float value) {
        throw Error(Status::Argument, std::string(rule) + ", not " + std::to_string(value));
    };
    if (!(p.temperature >= 0.0f) || !std::isfinite(p.temperature))
        refuse("temperature must be a finite number >= 0 (0 = greedy)", p.temperature);
    if (p.top_k < 0)
        throw Error(Status::Argument,
                    "top_k must be >= 0 (0 = off), not " + std::to_string(p.top_k));
    if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) refuse("top_p must be in (0, 1] (1 = off)", p.top_p);
    if (!(p.min_p >= 0.0f && p.min_p < 1.0f)) refuse("min_p must be in [0, 1) (0 = off)", p.min_p);
}

int32_t Session::sample(const SamplingParams& params) {
    check_sampling(params);
    if (pending_ >= 0) return pending_;
    if (!has_logits_) start_piece();
    const bool biases = controls_.active() && controls_.biases();
    mask_next(state_.allowed.data(), state_.biased.data());
    const float* logits = biases ? state_.biased.data() : state_.logits.data();
    bool any = false;
    for (uint8_t a : state_.allowed) any = any || a != 0;
    if (!any) throw Error(Status::State, "the grammar allows no token here (allowed programs?)");
    pending_ = sampler_.sample(logits, state_.allowed.data(), params);
    return pending_;
}

void Session::mask_next(uint8_t* allowed, float* biased) const {
    grammar_.allowed(allowed);
    if (!controls_.active()) return;
    if (biased != nullptr && controls_.biases())
        std::copy(state_.logits.begin(), state_.logits.end(), biased);
    controls_.apply(grammar_, detokenizer_, allowed, controls_.biases() ? biased : nullptr);
}

void Session::allowed_next(uint8_t* allowed) const {
    mask_next(allowed, nullptr);
}

void Session::generate(const SamplingParams& params, int32_t* tokens, size_t n) {
    check_sampling(params);
    for (size_t i = 0; i < n; ++i) {
        const int32_t token = sample(params);
        feed(&token, 1, nullptr, false);
        if (tokens != nullptr) tokens[i] = token;
    }
}

void Session::check_bar_stop(const BarStop& stop) {
    if (stop.bars < 1 || stop.bars > UINT32_MAX)
        throw Error(Status::Argument, "bars must be in 1.." + std::to_string(UINT32_MAX) +
                                          ", not " + std::to_string(stop.bars));
    if (stop.meter_bars < 0)
        throw Error(Status::Argument,
                    "meter_bars must be >= 0 (0 = off), not " + std::to_string(stop.meter_bars));
    if (stop.meter_bars > 0 && stop.meter_quarters < 1)
        throw Error(Status::Argument, "meter_quarters must be >= 1 with meter_bars, not " +
                                          std::to_string(stop.meter_quarters));
    if (stop.opened > stop.bars)
        throw Error(Status::Argument, "opened (" + std::to_string(stop.opened) +
                                          ") must be <= bars (" + std::to_string(stop.bars) + ")");
    if (!(stop.end >= 0.0) || !std::isfinite(stop.end))
        throw Error(Status::Argument,
                    "end must be a finite number >= 0, not " + std::to_string(stop.end));
}

size_t Session::generate_bars(const SamplingParams& params, BarStop& stop, int32_t* tokens,
                              size_t capacity, StopReason* reason) {
    check_sampling(params);
    check_bar_stop(stop);
    if (tokens == nullptr && capacity > 0) throw Error(Status::Argument, "tokens is null");
    const uint64_t max_tokens = kMaxTokensPerBar * (stop.bars + 1);
    const double ticks_per_quarter = config_.ticks_per_quarter;
    size_t count = 0;
    for (;;) {
        if (stop.generated >= max_tokens) {
            *reason = StopReason::MaxTokens;
            break;
        }
        if (count == capacity) {
            *reason = StopReason::Capacity;
            break;
        }
        const bool all_open = stop.opened >= stop.bars;
        controls_.set_piece_bar(stop.ends_piece, all_open);  // the cadence's bar
        grammar_.set_allow_eos(allow_eos_ || controls_.ending_here());
        const int32_t token = sample(params);
        const TokenInfo& info = model_.vocab[token];
        if (info.kind == Kind::Bar && (all_open || (stop.each_bar && count > 0))) {
            *reason = all_open ? StopReason::Bars : StopReason::BarLine;
            break;  // the token stays pending
        }
        // Only the last bar asked can end inside its token bar, and only at `end`.
        if (info.kind == Kind::Position && all_open &&
            detokenizer_.bar().start + info.a / ticks_per_quarter >= stop.end) {
            *reason = StopReason::Time;
            break;
        }
        feed(&token, 1, nullptr, false);
        tokens[count++] = token;
        ++stop.generated;
        if (info.kind == Kind::Eos) {
            *reason = StopReason::End;
            break;
        }
        const bool opens =
            info.kind == Kind::TimeSig || (info.kind == Kind::Bar && !has_time_signatures_);
        if (opens && !all_open) {
            const BarInfo bar = detokenizer_.bar();
            const double quarters = 4.0 * bar.numerator / bar.denominator;
            const bool mapped =
                stop.meter_bars > 0 && bar.denominator == 4 && bar.numerator == stop.meter_quarters;
            const uint64_t notated = mapped ? uint64_t(stop.meter_bars) : 1;
            const uint64_t taken = std::min(notated, stop.bars - stop.opened);
            stop.opened += taken;
            if (stop.opened == stop.bars)
                stop.end = bar.start + quarters * static_cast<double>(taken) / notated;
        }
    }
    // The cadence is this generation's: tokens drawn outside it (generate, sample) are not in a
    // last bar. A token left pending stays as drawn.
    controls_.set_piece_bar(false, false);
    grammar_.set_allow_eos(allow_eos_);
    return count;
}

void Session::accept(int32_t token) {
    grammar_.accept(token);
    NoteEvent note;
    const bool completed = detokenizer_.push(token, &note);
    controls_.accept(token, detokenizer_, completed ? &note : nullptr);
    if (!completed) return;
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

MemoryReport Session::planned_memory(const Model& model, const SessionOptions& options) {
    check_options(options);
    const Config& c = model.config;
    MemoryReport r{};
    r.weights_bytes = model.file_bytes;
    const RunState::Sizes sizes = RunState::sizes(model);
    r.activation_bytes = RunState::bytes(sizes) +
                         uint64_t(c.vocab_size) * Sampler::kScratchBytesPerToken +
                         RingMemory::bytes(sizes.window, 1, c.d_head, options.kv_memory);
    for (uint32_t h : model.horizons)
        r.kv_bytes += RingMemory::bytes(h, c.n_kv_heads, c.d_head, options.kv_memory);
    r.total_bytes = r.activation_bytes + r.kv_bytes + kEventCapacity * sizeof(NoteEvent) +
                    model.horizons.size() * sizeof(RingMemory) + sizeof(Session);
    return r;
}

}  // namespace sage
